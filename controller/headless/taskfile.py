"""Task files for `dispatch run`: YAML or TOML, several named tasks run in order.

    tasks:
      - name: unit-tests
        kind: command
        command: ["make", "-C", "/src/app", "test"]
        folders: [{path: /src/app, mode: rw}]

Each task takes the fields of `POST /api/v1/tasks` (controller/api/schemas.py) plus a `name`;
`thread` is the run's own. Relative folder paths are resolved against the task file's folder.
`${NAME}` anywhere in a string is replaced by the environment variable NAME (`$${` writes a
literal `${`); such values are secrets, masked as `***` wherever the run writes anything.

Every mistake is a `TaskFileError` naming the file, the line (YAML always; TOML when the key
can be found) and the field, before any task runs.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from controller.api.submissions import AgentTaskCreate, AnyTaskCreate, TaskCreate

SECRET = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MASK = "***"
_TASK = TypeAdapter(AnyTaskCreate)


class TaskFileError(Exception):
    """The task file cannot be run; the message names the file, line and field."""


@dataclass(frozen=True)
class FileTask:
    """One task of the file: its name, the API body it stands for, where it starts."""

    name: str
    body: TaskCreate | AgentTaskCreate
    line: int | None


@dataclass(frozen=True)
class TaskFile:
    path: Path
    tasks: tuple[FileTask, ...]
    secrets: tuple[str, ...]

    def mask(self, text: str) -> str:
        """`text` with every secret's value replaced by `***` (longest first)."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


def load(path: Path, environ: Mapping[str, str], *, thread: str = "run") -> TaskFile:
    """Read, substitute and check the task file at `path`.

    Raises:
        TaskFileError: naming the file, the line and the field, and how to fix it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(f"{path}: cannot read the task file ({exc})") from None
    lines = _Lines(path, text)
    data = _parse(path, text, lines)
    if not isinstance(data, Mapping) or not isinstance(data.get("tasks"), list):
        raise TaskFileError(
            f"{path}: the file needs a `tasks` list, e.g.\n"
            'tasks:\n  - name: build\n    command: ["make", "test"]'
        )
    unknown = sorted(set(data) - {"tasks"})
    if unknown:
        raise TaskFileError(f"{lines.at((unknown[0],))}: unknown key {unknown[0]!r}; only `tasks`")
    secrets: set[str] = set()
    tasks: list[FileTask] = []
    for index, raw in enumerate(data["tasks"]):
        where = lines.at(("tasks", index))
        if not isinstance(raw, Mapping):
            raise TaskFileError(f"{where}: task {index + 1} must be a table of fields")
        name = raw.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise TaskFileError(
                f"{lines.at(('tasks', index, 'name'))}: task {index + 1} needs a `name` of "
                "letters, digits, '.', '_' or '-' (at most 64), e.g. name: unit-tests"
            )
        if any(t.name == name for t in tasks):
            raise TaskFileError(f"{lines.at(('tasks', index, 'name'))}: a second task {name!r}")
        body = _substitute(
            dict(raw), environ, secrets, lambda key, i=index: lines.at(("tasks", i, key))
        )
        body.pop("name")
        body["thread"] = thread
        body["folders"] = _folders(body.get("folders"), path.parent)
        try:
            checked = _TASK.validate_python(body)
        except ValidationError as exc:
            raise TaskFileError(_explain(exc, name, index, lines)) from None
        tasks.append(FileTask(name, checked, lines.line_of(("tasks", index))))
    if not tasks:
        raise TaskFileError(f"{path}: `tasks` is empty; add at least one task")
    ordered = tuple(sorted((s for s in secrets if s), key=len, reverse=True))
    return TaskFile(path=path, tasks=tuple(tasks), secrets=ordered)


def _parse(path: Path, text: str, lines: _Lines) -> Any:
    if path.suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TaskFileError(f"{path}: not valid TOML: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        lines.index_yaml(node)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise TaskFileError(f"{at}: not valid YAML: {getattr(exc, 'problem', exc)}") from None


def _substitute(value: Any, environ: Mapping[str, str], secrets: set[str], where: Any) -> Any:
    """`${NAME}` replaced in every string of a task; the values remembered as secrets."""

    def walk(item: Any, key: str) -> Any:
        if isinstance(item, str):

            def one(match: re.Match[str]) -> str:
                if match.group(0) == "$${":
                    return "${"
                name = match.group(1)
                if name not in environ:
                    raise TaskFileError(
                        f"{where(key)}: field {key!r} uses ${{{name}}}, which is not set in the "
                        f"environment; export {name} (your CI system's secret) or remove it"
                    )
                secrets.add(environ[name])
                return environ[name]

            return SECRET.sub(one, item)
        if isinstance(item, list):
            return [walk(v, key) for v in item]
        if isinstance(item, Mapping):
            return {k: walk(v, key) for k, v in item.items()}
        return item

    return {key: walk(item, key) for key, item in value.items()}


def _folders(folders: Any, base: Path) -> Any:
    if not isinstance(folders, list):
        return folders if folders is not None else []
    resolved = []
    for folder in folders:
        if isinstance(folder, str):  # a bare path: read-only
            folder = {"path": folder}
        if isinstance(folder, Mapping) and isinstance(folder.get("path"), str):
            raw = folder["path"]
            if not raw.startswith(("/", "~")):
                folder = {**folder, "path": str((base / raw).resolve())}
        resolved.append(folder)
    return resolved


def _explain(exc: ValidationError, name: str, index: int, lines: _Lines) -> str:
    error = exc.errors()[0]
    loc = list(error["loc"])
    # The discriminated union puts the kind's tag first ("command" / "agent"): not a field.
    if len(loc) > 1 and loc[0] in ("command", "agent"):
        loc = loc[1:]
    field = ".".join(str(p) for p in loc) or "(the task)"
    where = lines.at(("tasks", index, *loc[:1])) if loc else lines.at(("tasks", index))
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field; the fields are those of POST /api/v1/tasks (see the README)"
    elif error["type"] == "missing":
        message = "missing; every task of this kind needs it"
    return f"{where}: task {name!r}, field {field!r}: {message}"


class _Lines:
    """Where each key of the file starts: exact for YAML, by a search for TOML."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        self.lines: dict[tuple[Any, ...], int] = {}

    def index_yaml(self, node: Any, at: tuple[Any, ...] = ()) -> None:
        if node is None:
            return
        self.lines.setdefault(at, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                self.lines[(*at, key.value)] = key.start_mark.line + 1
                self.index_yaml(value, (*at, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.index_yaml(item, (*at, i))

    def line_of(self, key: Sequence[Any]) -> int | None:
        """The line of `key` (a path of keys and indexes), else of its nearest parent."""
        if self.path.suffix == ".toml":
            return self._search_toml(tuple(key))
        at = tuple(key)
        while at:
            if at in self.lines:
                return self.lines[at]
            at = at[:-1]
        return None

    def at(self, key: Sequence[Any]) -> str:
        line = self.line_of(key)
        return f"{self.path}:{line}" if line else str(self.path)

    def _search_toml(self, key: tuple[Any, ...]) -> int | None:
        """TOML keeps no positions: the n-th `[[tasks]]` header, then the field after it."""
        headers = [
            i for i, line in enumerate(self.text.splitlines()) if line.strip() == "[[tasks]]"
        ]
        if len(key) < 2 or not isinstance(key[1], int) or key[1] >= len(headers):
            return None
        start = headers[key[1]]
        if len(key) < 3:
            return start + 1
        end = headers[key[1] + 1] if key[1] + 1 < len(headers) else None
        for offset, line in enumerate(self.text.splitlines()[start:end]):
            if re.match(rf"\s*{re.escape(str(key[2]))}\s*=", line):
                return start + offset + 1
        return start + 1
