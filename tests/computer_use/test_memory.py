"""The memory tool over the controller's database: what the model stores, the person can see."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from anthropic.tools import ToolError

from computer_use.agent.memory import StoredMemoryTool
from controller.store.db import Database
from controller.store.memory import MemoryStore


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[tuple[StoredMemoryTool, MemoryStore]]:
    db = Database(f"sqlite:///{tmp_path / 'dispatch.db'}")
    db.migrate()
    store = MemoryStore(db)
    yield StoredMemoryTool(store), store
    db.dispose()


def test_the_model_creates_edits_renames_and_deletes_memory_files(
    memory: tuple[StoredMemoryTool, MemoryStore],
) -> None:
    tool, store = memory
    tool.call({"command": "create", "path": "/memories/people/me.md", "file_text": "likes tea"})
    tool.call(
        {
            "command": "str_replace",
            "path": "/memories/people/me.md",
            "old_str": "tea",
            "new_str": "coffee",
        }
    )
    tool.call(
        {
            "command": "insert",
            "path": "/memories/people/me.md",
            "insert_line": 0,
            "insert_text": "# Me",
        }
    )
    assert store.read("/memories/people/me.md") == "# Me\nlikes coffee"
    listing = tool.call({"command": "view", "path": "/memories"})
    assert "/memories/people/me.md" in str(listing)
    tool.call({"command": "rename", "old_path": "/memories/people", "new_path": "/memories/folk"})
    assert store.paths() == ["/memories/folk/me.md"]
    tool.call({"command": "delete", "path": "/memories/folk"})
    assert store.paths() == []


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "/memories/../etc/passwd",
        "/memories/./x",
        "memories/x",
        "/memoriesx/y",
        "/memories/a\x00b",
    ],
)
def test_paths_outside_memories_are_refused(
    memory: tuple[StoredMemoryTool, MemoryStore], path: str
) -> None:
    tool, store = memory
    with pytest.raises(ToolError):
        tool.execute(tool_command("create", path=path, file_text="x"))
    assert store.paths() == []


def tool_command(name: str, **fields: object) -> object:
    from anthropic._models import construct_type_unchecked
    from anthropic.types.beta import BetaMemoryTool20250818Command

    return construct_type_unchecked(
        value={"command": name, **fields}, type_=BetaMemoryTool20250818Command
    )  # type: ignore[arg-type]


def test_rename_refuses_to_overwrite(memory: tuple[StoredMemoryTool, MemoryStore]) -> None:
    tool, store = memory
    tool.call({"command": "create", "path": "/memories/a.md", "file_text": "a"})
    tool.call({"command": "create", "path": "/memories/b.md", "file_text": "b"})
    with pytest.raises(ToolError, match="already exists"):
        tool.execute(tool_command("rename", old_path="/memories/a.md", new_path="/memories/b.md"))
    assert store.read("/memories/b.md") == "b"
