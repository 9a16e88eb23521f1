"""The approval policy: data that decides `allow`, `ask` or `deny` for each tool call.

Format (the same in `config.toml` as `[policy]`, in a task's `policy`, and in headless runs)::

    {"default": "ask",
     "rules": [{"tool": "computer", "member": "left_click",
                "match": {"region": [0, 0, 640, 400]}, "decision": "allow"},
               {"tool": "bash", "match": {"command": "git status*"}, "decision": "allow"},
               {"tool": "browser", "match": {"domain": "*.example.com"}, "decision": "deny"}]}

The first rule that matches decides; no match gives `default`. `tool` is a tool name or `"*"`;
`member` and `match` are optional; every key of `match` must match.

A drag done by hand - `left_mouse_down`, then `mouse_move` and `left_mouse_up` while the button
is held - is judged as a drag: the computer toolset gives those two calls the point of the press
as `start_coordinate`, a rule for `left_click_drag` applies to them as to a drag (a `deny` on
drags is not dodged), a `region` must hold both ends, and an `allow` rule naming `mouse_move` or
`left_mouse_up` (meant for moving the pointer, or letting go) does not allow them.


- `command`: a glob (`fnmatch`, case-sensitive) on the whole shell command of a `bash` call.
- `path`: a glob on the normalised absolute `path` (or every one of `paths`, or both of a memory
  rename's `old_path` and `new_path`); `*` stays inside one folder, `**` crosses folders.
- `domain`: a glob on the host of `input["url"]` (a browser call: the URL to open, or the tab's);
  IDNA, case and a trailing dot are normalised; `*.example.com` matches any subdomain, not
  `example.com` itself; `*` alone matches every host.
- `region`: `[x0, y0, x1, y1]` in SCREEN pixels, `x0 <= x < x1`: a click's point, or BOTH ends of
  a drag, lie inside. Coordinates reach the policy already mapped to screen pixels.
- `folders`: `"read-only"` (every granted folder of the task is read-only) or `"read-write"` (at
  least one is read-write). Not in the issue's list; the issue's own default needs it to be data.
- `display`: `"sandbox"` or `"host"`: the screen a `computer` call acts on (the task's
  `display`); browser calls are always on the sandbox's. Other tools have no display.

The owner's own screen is not the sandbox's. On `display: "host"` an `allow` rule applies only
when it names `"display": "host"` in its `match`: a rule written for the sandbox's virtual
desktop (`{"tool": "computer", "member": "left_click", "decision": "allow"}`) asks there, while
`ask` and `deny` rules apply on both. `on_display(policy, display)` tells a policy which screen
its computer calls act on; without it `display` is not known.

Safety rule for inputs the policy cannot judge: matching is three-valued. A key says MATCH, NO
MATCH, or UNKNOWN — a compound shell command (`git status; rm -rf ~`: any of ``; & | < > ` $ ( )
\\`` or a newline), a drag with one end outside the region, a click without a point, a URL with
userinfo, a percent-encoded, numeric or unparsable host, a relative path, folders or the display
not given. An
UNKNOWN never makes an `allow` rule match, and always lets an `ask` or `deny` rule match (for a
compound command, when the glob matches the whole command or one of its pieces). So an allow glob
cannot be stretched across `;`, and a deny glob is not dodged by prefixing `true;` — though deny
globs stay best effort (`echo cm0gLXJm | base64 -d | sh`): the sandbox is the fence, allow rules are
exact. The model's own opinion of risk is never an input.

`combine(config, task)` evaluates both and takes the stricter (deny > ask > allow), so a task's
policy can only tighten. `headless(policy)` turns every ask into deny, default deny.
"""

from __future__ import annotations

import copy
import enum
import fnmatch
import ipaddress
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

import idna

from computer_use.errors import PolicyError

__all__ = [
    "BROWSER_EFFECT_MEMBERS",
    "BROWSER_MEMBERS",
    "BROWSER_READ_ONLY_MEMBERS",
    "COMPUTER_EFFECT_MEMBERS",
    "COMPUTER_MEMBERS",
    "COMPUTER_READ_ONLY_MEMBERS",
    "TOOLS",
    "Call",
    "CombinedPolicy",
    "Decision",
    "FolderMode",
    "Policy",
    "Verdict",
    "combine",
    "default_policy",
    "headless",
    "on_display",
]

TOOLS = ("bash", "edit", "computer", "browser", "memory")

# The members of the SDK's toolsets (`anthropic.types.beta.BetaComputerMemberName` and
# `BetaBrowserMemberName`), written out: importing the SDK's types takes a second or more, and
# `dispatch run` of command tasks (or `dispatch serve`'s settings) never needs them otherwise.
# tests/computer_use/test_policy_members.py fails when the installed SDK's lists differ.
COMPUTER_MEMBERS = frozenset(
    {
        "cursor_position",
        "double_click",
        "hold_key",
        "key",
        "left_click",
        "left_click_drag",
        "left_mouse_down",
        "left_mouse_up",
        "middle_click",
        "mouse_move",
        "right_click",
        "screenshot",
        "scroll",
        "triple_click",
        "type",
        "wait",
        "zoom",
    }
)
BROWSER_MEMBERS = frozenset(
    {
        "close_tab",
        "double_click",
        "file_upload",
        "find",
        "form_input",
        "get_page_text",
        "hold_key",
        "hover",
        "javascript_exec",
        "key",
        "left_click",
        "left_click_drag",
        "left_mouse_down",
        "left_mouse_up",
        "list_tabs",
        "middle_click",
        "mouse_move",
        "navigate",
        "new_tab",
        "read_console",
        "read_network",
        "read_page",
        "right_click",
        "screenshot",
        "scroll",
        "scroll_to",
        "switch_tab",
        "triple_click",
        "type",
        "wait",
        "zoom",
    }
)
# Member lists from the SDK's toolsets (`anthropic` 2.14). A member with an effect on the screen,
# the page or the outside world asks; reading what is already on screen does not. A member the SDK
# adds later is in neither list and falls to the default (ask) until it is classified here.
COMPUTER_READ_ONLY_MEMBERS = frozenset({"screenshot", "zoom", "cursor_position", "wait"})
COMPUTER_EFFECT_MEMBERS = COMPUTER_MEMBERS - COMPUTER_READ_ONLY_MEMBERS
BROWSER_READ_ONLY_MEMBERS = frozenset(
    {"screenshot", "zoom", "read_page", "find", "get_page_text", "list_tabs", "wait"}
)
# read_console and read_network ask: they show the model what the page does not (tokens in
# requests, logged secrets). new_tab/switch_tab/close_tab change what later actions act on.
BROWSER_EFFECT_MEMBERS = BROWSER_MEMBERS - BROWSER_READ_ONLY_MEMBERS
_KNOWN_MEMBERS: Mapping[str, frozenset[str]] = {
    "computer": COMPUTER_MEMBERS,
    "browser": BROWSER_MEMBERS,
}
# Members that act at a screen point: a region rule judges their point; for others it is silent.
_POINTER_MEMBERS = frozenset(
    {
        "left_click",
        "right_click",
        "middle_click",
        "double_click",
        "triple_click",
        "left_click_drag",
        "mouse_move",
        "left_mouse_down",
        "left_mouse_up",
        "scroll",
        "hover",
    }
)
_SHELL_META = re.compile(r"[;&|<>`$()\\\n\r\x00]")
_SHELL_SPLIT = re.compile(r"\|\||&&|\$\(|[;&|<>`()\n\r]")


class Decision(enum.StrEnum):
    ALLOW = "allow"
    ASK = "ask"
    DENY = "deny"

    @property
    def strictness(self) -> int:
        return _STRICTNESS[self]


_STRICTNESS = {Decision.ALLOW: 0, Decision.ASK: 1, Decision.DENY: 2}

FolderMode = Literal["ro", "rw"]
Display = Literal["sandbox", "host"]
DISPLAYS: tuple[Display, ...] = ("sandbox", "host")


@dataclass(frozen=True)
class Call:
    """One tool call as the policy sees it.

    `input` is the tool input with coordinates already mapped to screen pixels; a browser call
    carries the URL it opens, or its tab's URL, as `input["url"]`. `folders` are the modes of the
    task's granted folders (`None` when unknown, which no `folders` allow rule accepts).
    `display` is the screen the call acts on (`None` when unknown, or off any screen).
    """

    tool: str
    member: str | None = None
    input: Mapping[str, Any] = field(default_factory=dict)
    folders: tuple[FolderMode, ...] | None = ()
    display: Display | None = None

    def __post_init__(self) -> None:
        # A deep, read-only copy: the call that was judged is the call that runs.
        object.__setattr__(self, "input", MappingProxyType(copy.deepcopy(dict(self.input))))
        if self.folders is not None and any(m not in ("ro", "rw") for m in self.folders):
            raise ValueError(f"folders: {self.folders!r}; each mode is 'ro' or 'rw'")
        if self.display is not None and self.display not in DISPLAYS:
            raise ValueError(f"display: {self.display!r}; it is 'sandbox' or 'host'")


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    rule_index: int | None
    explanation: str


class _Tri(enum.Enum):
    MATCH = "match"
    NO_MATCH = "no match"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class _Outcome:
    tri: _Tri
    reason: str = ""


_MATCH = _Outcome(_Tri.MATCH)
_NO_MATCH = _Outcome(_Tri.NO_MATCH)


@dataclass(frozen=True)
class Match:
    command: str | None = None
    path: str | None = None
    domain: str | None = None
    region: tuple[int, int, int, int] | None = None
    folders: Literal["read-only", "read-write"] | None = None
    display: Display | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in _MATCH_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if key == "region" else value
        return out

    def outcomes(self, call: Call) -> list[_Outcome]:
        checks = []
        if self.command is not None:
            checks.append(_match_command(self.command, call))
        if self.path is not None:
            checks.append(_match_path(self.path, call))
        if self.domain is not None:
            checks.append(_match_domain(self.domain, call))
        if self.region is not None:
            checks.append(_match_region(self.region, call))
        if self.folders is not None:
            checks.append(_match_folders(self.folders, call))
        if self.display is not None:
            checks.append(_match_display(self.display, call))
        return checks


_MATCH_KEYS = ("command", "path", "domain", "region", "folders", "display")


@dataclass(frozen=True)
class Rule:
    tool: str
    decision: Decision
    member: str | None = None
    match: Match | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tool": self.tool}
        if self.member is not None:
            out["member"] = self.member
        if self.match is not None:
            out["match"] = self.match.to_dict()
        out["decision"] = str(self.decision)
        return out

    def applies(self, call: Call) -> _Outcome:
        if self.tool not in ("*", call.tool):
            return _NO_MATCH
        dragging = _dragging(call)
        if self.member is not None and self.member != call.member:
            # A move or release with the button held is a drag: rules about drags judge it.
            if not (dragging and self.member == "left_click_drag"):
                return _NO_MATCH
        elif self.member is not None and dragging and self.decision is Decision.ALLOW:
            # An allow for moving the pointer, or for letting go, never allows a drag.
            return _NO_MATCH
        if (
            call.display == "host"
            and self.decision is Decision.ALLOW
            and (self.match is None or self.match.display != "host")
        ):
            # The owner's own screen: only an allow written for it applies there.
            return _NO_MATCH
        outcomes = self.match.outcomes(call) if self.match is not None else []
        if self.match is not None and _held_keys(call):
            # A click, drag or scroll with keys held down is also a key press, which no match key
            # judges: a rule about where the pointer acts cannot allow it.
            outcomes.append(_Outcome(_Tri.UNKNOWN, f"keys are held during it ({_held_keys(call)})"))
        if any(o.tri is _Tri.NO_MATCH for o in outcomes):
            return _NO_MATCH
        unknown = [o.reason for o in outcomes if o.tri is _Tri.UNKNOWN]
        if not unknown:
            return _MATCH
        # Fail safe: what cannot be judged never allows, and always lets a stricter rule speak.
        if self.decision is Decision.ALLOW:
            return _NO_MATCH
        return _Outcome(_Tri.UNKNOWN, "; ".join(unknown))

    def describe(self) -> str:
        parts = [self.tool] + ([self.member] if self.member else [])
        if self.match is not None:
            parts += [f"{k} {v!r}" for k, v in self.match.to_dict().items()]
        return ", ".join(parts)


@dataclass(frozen=True)
class Policy:
    """Ordered rules and a default. Build one with `Policy.parse(data)`."""

    default: Decision = Decision.ASK
    rules: tuple[Rule, ...] = ()

    @classmethod
    def parse(cls, data: object, *, where: str = "policy") -> Policy:
        """Parse the policy format.

        Raises:
            PolicyError: naming the field (`rules[2].decision`) and the fix.
        """
        if not isinstance(data, Mapping):
            raise PolicyError(where, f"expected an object like {_EXAMPLE}, got {_kind(data)}")
        _no_unknown_keys(data, ("default", "rules"), where)
        default = _decision(data.get("default", "ask"), f"{where}.default" if where else "default")
        raw_rules = data.get("rules", [])
        prefix = f"{where}." if where else ""
        if not isinstance(raw_rules, list):
            raise PolicyError(f"{prefix}rules", f"expected a list of rules, got {_kind(raw_rules)}")
        rules = tuple(_rule(raw, f"{prefix}rules[{i}]") for i, raw in enumerate(raw_rules))
        return cls(default=default, rules=rules)

    def to_dict(self) -> dict[str, Any]:
        return {"default": str(self.default), "rules": [r.to_dict() for r in self.rules]}

    def decide(self, call: Call) -> Verdict:
        for index, rule in enumerate(self.rules):
            outcome = rule.applies(call)
            if outcome.tri is _Tri.NO_MATCH:
                continue
            why = f"rules[{index}] ({rule.describe()}) matched"
            if outcome.tri is _Tri.UNKNOWN:
                why += f" because the input cannot be judged safely: {outcome.reason}"
            return Verdict(rule.decision, index, f"{why}: {rule.decision}")
        return Verdict(self.default, None, f"no rule matched: default {self.default}")


@dataclass(frozen=True)
class CombinedPolicy:
    """Several policies at once; each call gets the strictest of their verdicts."""

    layers: tuple[tuple[str, Policy], ...]
    # The screen the task's computer calls act on (see `on_display`); None: not known.
    display: Display | None = None

    def decide(self, call: Call) -> Verdict:
        call = _on(call, self.display)
        verdicts = [(name, policy.decide(call)) for name, policy in self.layers]
        # max() keeps the first of equals: the config's explanation wins a tie.
        name, verdict = max(verdicts, key=lambda item: item[1].decision.strictness)
        explanation = f"{name} policy: {verdict.explanation}"
        others = [f"{n}: {v.decision}" for n, v in verdicts if n != name]
        if others:
            explanation += f" (stricter than or equal to {', '.join(others)})"
        return Verdict(verdict.decision, verdict.rule_index, explanation)

    def to_dict(self) -> dict[str, Any]:
        return {name: policy.to_dict() for name, policy in self.layers}


AnyPolicy = Policy | CombinedPolicy


def combine(config_policy: AnyPolicy, task_policy: Policy | None) -> AnyPolicy:
    """The policy for a task: the config's, tightened (never loosened) by the task's own."""
    if task_policy is None:
        return config_policy
    if isinstance(config_policy, CombinedPolicy):
        layers, display = config_policy.layers, config_policy.display
    else:
        layers, display = (("config", config_policy),), None
    return CombinedPolicy((*layers, ("task", task_policy)), display)


def on_display(policy: AnyPolicy, display: Display) -> CombinedPolicy:
    """`policy` for a task whose computer calls act on `display` (the task's `display`).

    Raises:
        ValueError: `display` is neither "sandbox" nor "host".
    """
    if display not in DISPLAYS:
        raise ValueError(f"display: {display!r}; it is 'sandbox' or 'host'")
    layers = policy.layers if isinstance(policy, CombinedPolicy) else (("config", policy),)
    return CombinedPolicy(layers, display)


def _on(call: Call, display: Display | None) -> Call:
    """`call` with the screen it acts on filled in: the task's for the computer tool, the
    sandbox's for the browser (Chromium always runs in the task's sandbox)."""
    if call.display is not None:
        return call
    if call.tool == "computer" and display is not None:
        return replace(call, display=display)
    if call.tool == "browser":
        return replace(call, display="sandbox")
    return call


def headless(policy: AnyPolicy) -> AnyPolicy:
    """For runs without a person: every ask becomes deny, and the default is deny."""
    if isinstance(policy, CombinedPolicy):
        layers = tuple((name, _headless(p)) for name, p in policy.layers)
        return CombinedPolicy(layers, policy.display)
    return _headless(policy)


def _headless(policy: Policy) -> Policy:
    rules = tuple(
        Rule(r.tool, Decision.DENY, r.member, r.match) if r.decision is Decision.ASK else r
        for r in policy.rules
    )
    return Policy(default=Decision.DENY, rules=rules)


def default_policy() -> Policy:
    """Read-only members allow, effects ask; bash/edit allow while every folder is read-only."""
    rules = [
        *(Rule("computer", Decision.ALLOW, m) for m in sorted(COMPUTER_READ_ONLY_MEMBERS)),
        *(Rule("browser", Decision.ALLOW, m) for m in sorted(BROWSER_READ_ONLY_MEMBERS)),
        Rule("bash", Decision.ALLOW, match=Match(folders="read-only")),
        Rule("edit", Decision.ALLOW, match=Match(folders="read-only")),
        Rule("memory", Decision.ALLOW, "view"),
    ]
    return Policy(default=Decision.ASK, rules=tuple(rules))


# -- parsing ---------------------------------------------------------------------------------------

_EXAMPLE = '{"default": "ask", "rules": [{"tool": "bash", "decision": "allow"}]}'


def _kind(value: object) -> str:
    return (
        f"{type(value).__name__} {value!r}"
        if not isinstance(value, (dict, list))
        else type(value).__name__
    )


def _no_unknown_keys(data: Mapping[Any, Any], allowed: Sequence[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise PolicyError(
                f"{where}.{key}" if where else str(key),
                f"unknown key; use one of {', '.join(allowed)}",
            )


def _decision(value: object, where: str) -> Decision:
    if isinstance(value, str) and value in Decision._value2member_map_:
        return Decision(value)
    shown = f'"{value}"' if isinstance(value, str) else _kind(value)
    raise PolicyError(where, f"{shown} is not one of allow, ask, deny")


def _string(value: object, where: str, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(where, f"expected a non-empty string like {example}, got {_kind(value)}")
    return value


def _rule(raw: object, where: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise PolicyError(
            where,
            f'expected an object like {{"tool": "bash", "decision": "allow"}}, got {_kind(raw)}',
        )
    _no_unknown_keys(raw, ("tool", "member", "match", "decision"), where)
    if "tool" not in raw:
        raise PolicyError(f"{where}.tool", f'missing; name a tool ({", ".join(TOOLS)}) or "*"')
    if "decision" not in raw:
        raise PolicyError(f"{where}.decision", "missing; use allow, ask or deny")
    tool = raw["tool"]
    if tool != "*" and tool not in TOOLS:
        shown = f'"{tool}"' if isinstance(tool, str) else _kind(tool)
        raise PolicyError(f"{where}.tool", f'{shown} is not one of {", ".join(TOOLS)}, "*"')
    member = raw.get("member")
    if member is not None:
        member = _string(member, f"{where}.member", '"left_click"')
        known = _KNOWN_MEMBERS.get(tool)
        if known is not None and member not in known:
            raise PolicyError(
                f"{where}.member",
                f'"{member}" is not a {tool} member; use one of {", ".join(sorted(known))}',
            )
    match = _match(raw["match"], f"{where}.match") if "match" in raw else None
    return Rule(
        tool=tool,
        decision=_decision(raw["decision"], f"{where}.decision"),
        member=member,
        match=match,
    )


def _match(raw: object, where: str) -> Match:
    if not isinstance(raw, Mapping) or not raw:
        raise PolicyError(
            where,
            f"expected an object with one or more of {', '.join(_MATCH_KEYS)}, got {_kind(raw)}",
        )
    _no_unknown_keys(raw, _MATCH_KEYS, where)
    command = (
        _string(raw["command"], f"{where}.command", '"git status*"') if "command" in raw else None
    )
    path = None
    if "path" in raw:
        path = _string(raw["path"], f"{where}.path", '"/home/me/project/**"')
        if not path.startswith(("/", "*")):
            raise PolicyError(
                f"{where}.path",
                f'"{path}" is relative; use an absolute glob like /home/me/project/**',
            )
    domain = _domain_pattern(raw["domain"], f"{where}.domain") if "domain" in raw else None
    region = _region(raw["region"], f"{where}.region") if "region" in raw else None
    folders = raw.get("folders")
    if folders is not None and folders not in ("read-only", "read-write"):
        raise PolicyError(
            f"{where}.folders", f"{_kind(folders)} is not one of read-only, read-write"
        )
    display = raw.get("display")
    if display is not None and display not in DISPLAYS:
        raise PolicyError(
            f"{where}.display",
            f"{_kind(display)} is not one of sandbox, host (the screen a computer call acts on)",
        )
    return Match(
        command=command,
        path=path,
        domain=domain,
        region=region,
        folders=folders,
        display=display,
    )


def _region(raw: object, where: str) -> tuple[int, int, int, int]:
    if (
        not isinstance(raw, list)
        or len(raw) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
    ):
        raise PolicyError(
            where, f"expected [x0, y0, x1, y1] in screen pixels (4 integers), got {_kind(raw)}"
        )
    x0, y0, x1, y1 = raw
    if min(raw) < 0:
        raise PolicyError(where, f"{raw} has a negative coordinate; screen pixels start at 0")
    if x0 >= x1 or y0 >= y1:
        raise PolicyError(
            where, f"{raw} is empty; give the top-left corner first: x0 < x1 and y0 < y1"
        )
    return (x0, y0, x1, y1)


def _domain_pattern(raw: object, where: str) -> str:
    pattern = _string(raw, where, '"*.example.com"').strip()
    if pattern == "*":
        return pattern
    wildcard = pattern.startswith("*.")
    rest = pattern[2:] if wildcard else pattern
    if "*" in rest or "?" in rest or "[" in rest:
        raise PolicyError(
            where,
            f'"{pattern}": "*" may only be the whole pattern or its first label: *.example.com',
        )
    host = _normalise_host(rest)
    if host is None:
        raise PolicyError(
            where, f'"{pattern}" is not a host name; write it like example.com or *.example.com'
        )
    return f"*.{host}" if wildcard else host


# -- matching --------------------------------------------------------------------------------------


def _match_command(pattern: str, call: Call) -> _Outcome:
    command = call.input.get("command")
    if command is None:
        return _Outcome(_Tri.UNKNOWN, "no command") if call.tool == "bash" else _NO_MATCH
    if not isinstance(command, str):
        return _Outcome(_Tri.UNKNOWN, "the command is not text")
    command = command.strip()
    if not _SHELL_META.search(command):
        return _MATCH if fnmatch.fnmatchcase(command, pattern) else _NO_MATCH
    pieces = [command, *(p.strip() for p in _SHELL_SPLIT.split(command))]
    if any(fnmatch.fnmatchcase(p, pattern) for p in pieces if p):
        return _Outcome(_Tri.UNKNOWN, "a compound shell command (metacharacters)")
    return _NO_MATCH


def _path_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _match_path(pattern: str, call: Call) -> _Outcome:
    raw: object
    if "paths" in call.input:
        raw = call.input["paths"]
    elif "path" in call.input:
        raw = [call.input["path"]]
    elif "old_path" in call.input or "new_path" in call.input:
        # A memory rename: both the file it takes and where it puts it.
        raw = [call.input.get("old_path"), call.input.get("new_path")]
    else:
        return _Outcome(_Tri.UNKNOWN, "no path") if call.tool in ("edit", "memory") else _NO_MATCH
    if not isinstance(raw, list) or not raw:
        return _Outcome(_Tri.UNKNOWN, "the paths are not a list of text")
    regex = _path_regex(pattern)
    results = []
    for path in raw:
        if not isinstance(path, str) or "\x00" in path or not path.startswith("/"):
            return _Outcome(_Tri.UNKNOWN, f"{path!r} is not an absolute path")
        # normpath folds `..`, so /work/../etc/passwd is judged as /etc/passwd.
        normal = posixpath.normpath(path)
        if normal.startswith("//"):
            normal = "/" + normal.lstrip("/")
        results.append(regex.fullmatch(normal) is not None)
    if all(results):
        return _MATCH
    if any(results):
        return _Outcome(_Tri.UNKNOWN, "some of the paths lie outside the glob")
    return _NO_MATCH


def _normalise_host(host: str) -> str | None:
    """The host as a browser reads it: lower-case ASCII (IDNA), no trailing dot; None if odd."""
    host = host[:-1] if host.endswith(".") else host
    if _is_ipv6(host):
        return str(ipaddress.IPv6Address(host.strip("[]")))
    # Browsers decode %xx in a host and read \ as /: such a host is not what it seems here.
    if not host or any(c in host for c in "%\\@/ \t\r\n\x00[]:"):
        return None
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii").lower()
    except idna.IDNAError:
        return None
    last = ascii_host.rsplit(".", 1)[-1]
    # A numeric last label makes browsers parse the host as IPv4 (2130706433, 0x7f.1, 127.1).
    if re.fullmatch(r"(0x[0-9a-f]*|[0-9]+)", last):
        try:
            return str(ipaddress.IPv4Address(ascii_host))
        except ValueError:
            return None
    return ascii_host


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _match_domain(pattern: str, call: Call) -> _Outcome:
    url = call.input.get("url")
    if url is None:
        return _Outcome(_Tri.UNKNOWN, "no URL") if call.tool == "browser" else _NO_MATCH
    if not isinstance(url, str) or any(c in url for c in "\\\t\r\n\x00"):
        return _Outcome(_Tri.UNKNOWN, "the URL has characters browsers read differently")
    try:
        parts = urlsplit(url.strip())
        netloc = parts.netloc
    except ValueError:
        return _Outcome(_Tri.UNKNOWN, "the URL does not parse")
    if parts.scheme.lower() not in ("http", "https"):
        return _Outcome(_Tri.UNKNOWN, f"scheme {parts.scheme!r} has no host to judge")
    if "@" in netloc:
        # Which side of the @ a browser takes as the host is exactly what an attacker plays with.
        return _Outcome(_Tri.UNKNOWN, "the URL carries userinfo (user@host)")
    try:
        host_part = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port a browser would refuse
    except ValueError:
        return _Outcome(_Tri.UNKNOWN, "the URL's port does not parse")
    host = _normalise_host(host_part)
    if host is None:
        return _Outcome(_Tri.UNKNOWN, f"host {host_part!r} cannot be judged safely")
    if pattern == "*":
        return _MATCH
    if pattern.startswith("*."):
        return _MATCH if host.endswith(pattern[1:]) and host != pattern[2:] else _NO_MATCH
    return _MATCH if host == pattern else _NO_MATCH


def _held_keys(call: Call) -> str:
    """The keys a pointer call holds down (`text` for the computer, `modifiers` for the browser)."""
    if call.member not in _POINTER_MEMBERS:
        return ""
    held = call.input.get("text") or call.input.get("modifiers") or ""
    return held.strip() if isinstance(held, str) else repr(held)


def _dragging(call: Call) -> bool:
    """A `mouse_move` or `left_mouse_up` while the left button is held (it carries the press)."""
    return (
        call.tool == "computer"
        and call.member in ("mouse_move", "left_mouse_up")
        and "start_coordinate" in call.input
    )


def _point(value: object) -> tuple[int, int] | None:
    if isinstance(value, Mapping):  # a browser target: {"type": "coordinate", "x", "y"}
        if value.get("type") != "coordinate":
            return None
        value = [value.get("x"), value.get("y")]
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (value[0], value[1])
    return None


def _points(call: Call) -> list[tuple[int, int] | None]:
    keys = ("start_coordinate", "coordinate", "from", "target")
    return [_point(call.input[k]) for k in keys if k in call.input]


def _match_region(region: tuple[int, int, int, int], call: Call) -> _Outcome:
    if call.tool not in ("computer", "browser") or call.member not in _POINTER_MEMBERS:
        return _NO_MATCH
    points = _points(call)
    if not points or any(p is None for p in points):
        return _Outcome(
            _Tri.UNKNOWN, "the action has no screen point (it acts where the cursor is)"
        )
    x0, y0, x1, y1 = region
    inside = [x0 <= p[0] < x1 and y0 <= p[1] < y1 for p in points if p is not None]
    if all(inside):
        return _MATCH
    if any(inside):
        return _Outcome(_Tri.UNKNOWN, "the drag leaves the region")
    return _NO_MATCH


def _match_display(wanted: str, call: Call) -> _Outcome:
    if call.tool not in ("computer", "browser"):
        return _NO_MATCH
    if call.display is None:
        return _Outcome(_Tri.UNKNOWN, "the display the call acts on is not known")
    return _MATCH if call.display == wanted else _NO_MATCH


def _match_folders(wanted: str, call: Call) -> _Outcome:
    if call.folders is None:
        return _Outcome(_Tri.UNKNOWN, "the folders' modes are not known")
    writable = any(mode == "rw" for mode in call.folders)
    return _MATCH if writable == (wanted == "read-write") else _NO_MATCH
