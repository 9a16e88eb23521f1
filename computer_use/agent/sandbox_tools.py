"""The `bash` and `edit` tools: the model's shell and file edits, run inside the task's sandbox.

Both are the API's built-in tool types (`bash_20250124`, `text_editor_20250728`) served by
`BetaBuiltinFunctionTool` subclasses, so the model sees the tools it was trained on while every
call runs in the sandbox through the `Sandbox` protocol, never on the host.

The shell keeps its state across calls within a task (working directory, exported variables)
although each call is a separate `exec`: the state is saved by an EXIT trap into the sandbox's
own `/tmp` and restored at the next call. Each call has a timeout that kills the whole process
tree and the same output cap as command tasks.

Every call is first shown to `guard`, the approval gate, which returns when the call may run
and raises `ToolError` (the model then reads why) when it may not.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from anthropic.lib.tools._beta_functions import BetaBuiltinFunctionTool
from anthropic.tools import ToolError

from sandbox import DEFAULT_OUTPUT_CAP_BYTES, Sandbox

# guard(tool, member, input): returns to allow, raises ToolError to refuse.
Guard = Callable[[str, str, Mapping[str, Any]], None]
STATE_DIR = "/tmp/.dispatch-shell"
DEFAULT_BASH_TIMEOUT_S = 120.0
VIEW_MAX_CHARS = 64_000
# `view` of a folder: two levels, hidden entries left out; exit 3 says "not a folder".
LIST_FOLDER = (
    'if [ -d "$1" ]; then find "$1" -maxdepth 2 -not -name ".*" | sort | head -500; else exit 3; fi'
)
# Restores the last call's state, runs the command, and saves the state even if it exits.
SHELL = f"""S={STATE_DIR}
mkdir -p "$S"
if [ -f "$S/env" ]; then . "$S/env" 2>/dev/null; fi
if [ -f "$S/cwd" ]; then cd "$(cat "$S/cwd")" 2>/dev/null; fi
trap 'rc=$?; pwd > "$S/cwd"; export -p | grep -Ev "^declare -[a-zA-Z]*r" > "$S/env"; exit $rc' EXIT
eval "$1"
"""


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class SandboxBash(BetaBuiltinFunctionTool):
    """The model's shell, in the task's sandbox."""

    def __init__(
        self,
        box: Sandbox,
        guard: Guard,
        *,
        workdir: str | None = None,
        timeout_s: float = DEFAULT_BASH_TIMEOUT_S,
        output_cap_bytes: int = DEFAULT_OUTPUT_CAP_BYTES,
    ) -> None:
        super().__init__()
        self.box = box
        self.guard = guard
        self.workdir = workdir
        self.timeout_s = timeout_s
        self.output_cap_bytes = output_cap_bytes
        self._started = False

    def to_dict(self) -> Any:
        return {"type": "bash_20250124", "name": "bash"}

    def call(self, input: object) -> Any:
        args = input if isinstance(input, Mapping) else {}
        if args.get("restart"):
            self.guard("bash", "restart", {})
            self.box.exec(["rm", "-rf", STATE_DIR])
            self._started = False
            return "the shell was restarted"
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ToolError("bash needs a non-empty `command` string")
        self.guard("bash", "command", {"command": command})
        if not self._started and self.workdir:
            self.box.exec(
                [
                    "sh",
                    "-c",
                    f"mkdir -p {STATE_DIR} && echo {shlex.quote(self.workdir)} > {STATE_DIR}/cwd",
                ]
            )
        self._started = True
        result = self.box.exec(
            ["bash", "-c", SHELL, "bash", command],
            timeout_s=self.timeout_s,
            output_cap_bytes=self.output_cap_bytes,
        )
        parts = [_text(result.stdout).rstrip("\n"), _text(result.stderr).rstrip("\n")]
        output = "\n".join(p for p in parts if p)
        if not result.ok:
            output = f"{output}\n[{result.describe()}]".lstrip("\n")
        return output or "(no output)"


class SandboxEdit(BetaBuiltinFunctionTool):
    """View, create and edit files in the task's sandbox (the text editor tool)."""

    def __init__(self, box: Sandbox, guard: Guard) -> None:
        super().__init__()
        self.box = box
        self.guard = guard

    def to_dict(self) -> Any:
        return {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}

    def call(self, input: object) -> Any:
        args = dict(input) if isinstance(input, Mapping) else {}
        command = args.get("command")
        path_text = args.get("path")
        if not isinstance(path_text, str) or not path_text.startswith("/"):
            raise ToolError("`path` must be an absolute path inside a granted folder")
        path = Path(path_text)
        handlers = {
            "view": self._view,
            "create": self._create,
            "str_replace": self._replace,
            "insert": self._insert,
        }
        handler = handlers.get(str(command))
        if handler is None:
            raise ToolError(f"unknown command {command!r}; use one of {', '.join(handlers)}")
        self.guard("edit", str(command), {"path": str(path), **args})
        return handler(path, args)

    def _read(self, path: Path) -> str:
        try:
            return _text(self.box.read_file(path))
        except Exception as exc:
            raise ToolError(f"cannot read {path}: {exc}") from None

    def _write(self, path: Path, text: str) -> None:
        try:
            self.box.write_file(path, text.encode())
        except Exception as exc:
            raise ToolError(f"cannot write {path}: {exc}") from None

    def _view(self, path: Path, args: Mapping[str, Any]) -> str:
        listing = self.box.exec(["sh", "-c", LIST_FOLDER, "sh", str(path)])
        if listing.exit_code == 0:
            return _text(listing.stdout)
        lines = self._read(path).split("\n")
        start, end = 1, len(lines)
        view_range = args.get("view_range")
        if isinstance(view_range, list) and len(view_range) == 2:
            start = max(1, int(view_range[0]))
            end = len(lines) if int(view_range[1]) == -1 else min(len(lines), int(view_range[1]))
        numbered = "\n".join(f"{n:6}\t{lines[n - 1]}" for n in range(start, end + 1))
        if len(numbered) > VIEW_MAX_CHARS:
            numbered = numbered[:VIEW_MAX_CHARS] + "\n[... truncated; view a smaller range]"
        return numbered

    def _create(self, path: Path, args: Mapping[str, Any]) -> str:
        text = args.get("file_text")
        if not isinstance(text, str):
            raise ToolError("create needs `file_text`")
        self._write(path, text)
        return f"created {path}"

    def _replace(self, path: Path, args: Mapping[str, Any]) -> str:
        old, new = args.get("old_str"), args.get("new_str", "")
        if not isinstance(old, str) or not old:
            raise ToolError("str_replace needs a non-empty `old_str`")
        text = self._read(path)
        count = text.count(old)
        if count != 1:
            raise ToolError(
                f"`old_str` occurs {count} times in {path}; it must occur exactly once "
                "(include more surrounding lines)"
            )
        self._write(path, text.replace(old, str(new), 1))
        return f"edited {path}"

    def _insert(self, path: Path, args: Mapping[str, Any]) -> str:
        line = args.get("insert_line")
        new = args.get("insert_text", args.get("new_str"))
        if not isinstance(line, int) or not isinstance(new, str):
            raise ToolError("insert needs an integer `insert_line` and `insert_text`")
        lines = self._read(path).split("\n")
        if not 0 <= line <= len(lines):
            raise ToolError(f"insert_line {line} is outside the file (0..{len(lines)})")
        lines[line:line] = new.split("\n")
        self._write(path, "\n".join(lines))
        return f"inserted {len(new.splitlines()) or 1} line(s) into {path} after line {line}"
