"""The agent's memory: the SDK's memory tool, backed by whatever store the caller passes in.

The model sees the standard memory tool (`memory_20250818`: files under `/memories`). Where the
files live is the caller's choice through `MemoryBackend`: the controller keeps them in its
database, one memory per owner, shared by every thread, and lets the person read, change and
delete them. Paths are checked here once (`normalise`), so a backend never sees `..`, NULs or
anything outside `/memories`.

Memory outlives the task: a page the agent read could ask it to "remember" instructions that
every later task then starts with. So every command goes through the approval gate's `guard`
first, like the sandbox's bash and edit; the default policy allows `view` and asks for every
write (create, str_replace, insert, delete, rename), and the card shows the path and the text.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from anthropic.tools import BetaAbstractMemoryTool, ToolError
from anthropic.types.beta import (
    BetaMemoryTool20250818CreateCommand,
    BetaMemoryTool20250818DeleteCommand,
    BetaMemoryTool20250818InsertCommand,
    BetaMemoryTool20250818RenameCommand,
    BetaMemoryTool20250818StrReplaceCommand,
    BetaMemoryTool20250818ViewCommand,
)

ROOT = "/memories"
MAX_PATH_CHARS = 512
MAX_FILE_BYTES = 256 * 1024
MAX_FILES = 1000

# The approval gate's guard (`Confirmer.guard`): (tool, member, input); returns to let the call
# run, raises ToolError (which the model reads) to refuse it.
Guard = Callable[[str, str, Mapping[str, Any]], None]


class MemoryBackend(Protocol):
    """Files of text by normalised path (`/memories/...`)."""

    def paths(self) -> list[str]:
        """Every file's path, sorted."""
        ...

    def read(self, path: str) -> str | None:
        """A file's text, or None if there is no such file."""
        ...

    def write(self, path: str, text: str) -> None:
        """Create or replace a file."""
        ...

    def delete(self, paths: list[str]) -> None:
        """Remove files."""
        ...

    def rename(self, moves: dict[str, str]) -> None:
        """Move files, old path to new path, in one step."""
        ...


def normalise(path: str, *, allow_root: bool = False) -> str:
    """`path` as `/memories/...` with no `.`, `..` or doubled slashes.

    Raises:
        ToolError: outside `/memories`, too long, or with control characters.
    """
    if not isinstance(path, str) or len(path) > MAX_PATH_CHARS:
        raise ToolError(f"a memory path is a string of at most {MAX_PATH_CHARS} characters")
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in path):
        raise ToolError(f"memory path {path!r} contains control characters")
    if path != ROOT and not path.startswith(ROOT + "/"):
        raise ToolError(f"memory paths start with {ROOT}/, got {path!r}")
    parts = path.split("/")
    if ".." in parts or "." in parts:
        raise ToolError(f"memory path {path!r} may not contain '.' or '..'")
    clean = posixpath.normpath(path)
    if clean == ROOT and not allow_root:
        raise ToolError(f"name a file inside {ROOT}/, not {ROOT} itself")
    return clean


def _inside(folder: str, path: str) -> bool:
    return folder == ROOT or path.startswith(folder + "/")


def _check_size(text: str) -> None:
    if len(text.encode()) > MAX_FILE_BYTES:
        raise ToolError(f"a memory file holds at most {MAX_FILE_BYTES // 1024} KiB")


class StoredMemoryTool(BetaAbstractMemoryTool):
    """The memory tool over a `MemoryBackend`.

    Args:
        backend: where the files live.
        guard: asked before every command, with the command as the member and the model's input;
            None only where no person is to be asked (tests, the controller's own edits).
    """

    def __init__(self, backend: MemoryBackend, *, guard: Guard | None = None) -> None:
        super().__init__()
        self.backend = backend
        self._guard = guard

    def call(self, input: object) -> Any:
        if self._guard is not None:
            # The guard judges the very input the SDK then runs; an odd one asks (no command).
            args = dict(input) if isinstance(input, Mapping) else {}
            self._guard("memory", str(args.get("command", "")), args)
        return super().call(input)

    def _text(self, path: str) -> str:
        text = self.backend.read(path)
        if text is None:
            raise ToolError(f"the path {path} does not exist; `view` {ROOT} lists what does")
        return text

    def view(self, command: BetaMemoryTool20250818ViewCommand) -> str:
        path = normalise(command.path, allow_root=True)
        text = self.backend.read(path) if path != ROOT else None
        if text is None:
            found = [p for p in self.backend.paths() if _inside(path, p)]
            if not found and path != ROOT:
                raise ToolError(f"the path {path} does not exist; `view` {ROOT} lists what does")
            lines = [f"{len((self.backend.read(p) or '').encode())}\t{p}" for p in found]
            return f"Files in {path}:\n" + ("\n".join(lines) if lines else "(empty)")
        numbered = text.split("\n")
        start, end = 1, len(numbered)
        if command.view_range and len(command.view_range) == 2:
            start = max(1, command.view_range[0])
            end = len(numbered) if command.view_range[1] == -1 else command.view_range[1]
        return "\n".join(
            f"{n:6}\t{numbered[n - 1]}" for n in range(start, min(end, len(numbered)) + 1)
        )

    def create(self, command: BetaMemoryTool20250818CreateCommand) -> str:
        path = normalise(command.path)
        _check_size(command.file_text)
        if self.backend.read(path) is None and len(self.backend.paths()) >= MAX_FILES:
            raise ToolError(f"memory holds at most {MAX_FILES} files; delete some first")
        self.backend.write(path, command.file_text)
        return f"File created successfully at: {path}"

    def str_replace(self, command: BetaMemoryTool20250818StrReplaceCommand) -> str:
        path = normalise(command.path)
        text = self._text(path)
        count = text.count(command.old_str)
        if count != 1:
            raise ToolError(f"`old_str` occurs {count} times in {path}; it must occur exactly once")
        updated = text.replace(command.old_str, command.new_str, 1)
        _check_size(updated)
        self.backend.write(path, updated)
        return f"The memory file {path} has been edited."

    def insert(self, command: BetaMemoryTool20250818InsertCommand) -> str:
        path = normalise(command.path)
        lines = self._text(path).split("\n")
        if not 0 <= command.insert_line <= len(lines):
            raise ToolError(f"insert_line {command.insert_line} is outside 0..{len(lines)}")
        lines[command.insert_line : command.insert_line] = command.insert_text.split("\n")
        updated = "\n".join(lines)
        _check_size(updated)
        self.backend.write(path, updated)
        return f"The memory file {path} has been edited."

    def delete(self, command: BetaMemoryTool20250818DeleteCommand) -> str:
        path = normalise(command.path)
        doomed = [p for p in self.backend.paths() if p == path or _inside(path, p)]
        if not doomed:
            raise ToolError(f"the path {path} does not exist")
        self.backend.delete(doomed)
        return f"Successfully deleted {path}"

    def rename(self, command: BetaMemoryTool20250818RenameCommand) -> str:
        old, new = normalise(command.old_path), normalise(command.new_path)
        existing = self.backend.paths()
        moves = {p: new + p[len(old) :] for p in existing if p == old or _inside(old, p)}
        if not moves:
            raise ToolError(f"the path {old} does not exist")
        if any(target in existing and target not in moves for target in moves.values()):
            raise ToolError(f"{new} already exists; delete it first or choose another name")
        self.backend.rename(moves)
        return f"Successfully renamed {old} to {new}"
