"""Agent task submissions: what is checked before one is accepted, and its approval policy.

A submission is refused with a 422 naming the field and the fix, before anything is stored:
a `max_steps` above the `max_agent_steps` setting, `display: "host"` with no `host_display`,
a policy that does not parse, domains that are not host names, no model API key. The schema
(controller/api/schemas.py) already refused an empty or unknown tool list and an oversized
prompt.

The policy a task runs under is the configured one (`[policy]` in config.toml, else the built-in
default) tightened by the task's own. On the host display approval is the only fence, so there
the built-in default asks for every computer action, screenshots included, and an `allow` rule
of the owner's applies there only when it names `"display": "host"` (a rule written for the
sandbox's desktop asks on the owner's own screen). Memory writes ask like any other effect: a
page the agent read must not plant standing instructions for every later task unseen. In a
headless run
(`dispatch run`) nobody can answer: every ask becomes a deny and the default is deny.
"""

from __future__ import annotations

from typing import Any

from computer_use.approval.policy import (
    AnyPolicy,
    Display,
    Policy,
    combine,
    default_policy,
    headless,
    on_display,
)
from computer_use.browser.domains import AllowedDomains, DomainRuleError
from computer_use.errors import PolicyError
from controller.api.submissions import AgentTaskCreate
from controller.errors import Unprocessable
from controller.settings import Settings


def configured_policy(settings: Settings, display: str) -> Policy:
    """The owner's policy: `[policy]` from the config file, else the built-in default."""
    if settings.policy is not None:
        return Policy.parse(settings.policy, where="[policy]")
    base = default_policy()
    rules = base.rules
    if display == "host":
        rules = tuple(r for r in rules if r.tool != "computer")
    return Policy(default=base.default, rules=rules)


def task_policy(settings: Settings, agent: dict[str, Any]) -> AnyPolicy:
    """The policy an agent task runs under: the owner's, tightened by the task's own."""
    raw = agent.get("policy")
    own = Policy.parse(raw) if raw is not None else None
    display: Display = "host" if agent.get("display") == "host" else "sandbox"
    policy = on_display(combine(configured_policy(settings, display), own), display)
    return headless(policy) if settings.headless else policy


def check_agent_task(body: AgentTaskCreate, settings: Settings) -> dict[str, Any]:
    """The agent part of a task as stored, after every check.

    Raises:
        Unprocessable: naming the field and the fix.
    """
    if not settings.anthropic_api_key:
        raise Unprocessable(
            "no model API key: set ANTHROPIC_API_KEY in the controller's environment and "
            "restart `dispatch serve` (ANTHROPIC_BASE_URL names another endpoint)",
            code="no_api_key",
        )
    if body.max_steps > settings.max_agent_steps:
        raise Unprocessable(
            f"max_steps {body.max_steps} is above the limit of {settings.max_agent_steps}; ask "
            "for fewer (the limit is the max_agent_steps setting)",
            code="max_steps_too_high",
        )
    if body.display == "host" and ("computer" in body.tools) and settings.host_display is None:
        raise Unprocessable(
            'display "host" needs the host_display setting (the X display to drive, e.g. ":0"); '
            'set it in config.toml or DISPATCH_HOST_DISPLAY, or use display "sandbox"',
            code="no_host_display",
        )
    if body.policy is not None:
        try:
            Policy.parse(body.policy)
        except PolicyError as exc:
            raise Unprocessable(str(exc), code="invalid_policy") from None
    try:
        domains = list(AllowedDomains.parse(body.allowed_domains).shown)
    except DomainRuleError as exc:
        raise Unprocessable(str(exc), code="invalid_domain") from None
    if domains and "browser" not in body.tools:
        raise Unprocessable(
            'allowed_domains is for the browser tool; add "browser" to tools or leave it out',
            code="domains_without_browser",
        )
    return {
        "prompt": body.prompt,
        "tools": list(body.tools),
        "display": body.display,
        "max_steps": body.max_steps,
        "model": body.model,
        "policy": body.policy,
        "allowed_domains": domains,
    }
