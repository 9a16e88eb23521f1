"""What a client sends to submit a task: the API's request models, also the task file's.

Kept apart from the response models (controller/api/schemas.py), which are built from the
store's rows: checking a submission loads pydantic and nothing of the database, so `dispatch
run` can read its task file before SQLAlchemy is loaded.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

MAX_COMMAND_ARGS = 1000
MAX_FOLDERS = 32

# Printable: no control characters, and something besides spaces.
NAME_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=NAME_PATTERN)]


class Strict(BaseModel):
    # Unknown fields are refused, so a misspelt "timeout" is not silently ignored.
    model_config = ConfigDict(extra="forbid")


class FolderRequest(Strict):
    path: str = Field(min_length=1, max_length=4096, description="Absolute, or starting with `~`.")
    mode: Literal["ro", "rw"] = "ro"


class NetworkAllow(Strict):
    """Network "allowlist": only these domains, through Dispatch's filtering proxy."""

    allow: list[Annotated[str, Field(min_length=1, max_length=260)]] = Field(
        min_length=1,
        max_length=200,
        description="Domains (`example.com`; `*.example.com` for the names below it; either "
        "with `:port`, else HTTP on 80 and HTTPS on 443) and names of the controller's network "
        "presets (`python-packages`).",
    )


# What a submission may ask for: no network (the default), all of it, or an allowlist.
NetworkChoice = Literal["none", "open"] | NetworkAllow


class TaskCreate(Strict):
    thread: Name = Field(
        default="default", description="Thread name; a thread of that name is created if new."
    )
    kind: Literal["command"] = "command"
    command: list[Annotated[str, Field(max_length=100_000)]] = Field(
        min_length=1, max_length=MAX_COMMAND_ARGS, description="Program and arguments (no shell)."
    )
    folders: list[FolderRequest] = Field(default_factory=list, max_length=MAX_FOLDERS)
    network: NetworkChoice = "none"
    isolation: Literal["container", "vm"] = Field(
        default="container",
        description="container: the sandbox_backend setting's sandbox; vm: a QEMU VM with its "
        "own kernel (the libvirt backend).",
    )
    timeout_s: float | None = Field(
        default=None, gt=0, description="Seconds; the controller's default when omitted."
    )

    @field_validator("command")
    @classmethod
    def _no_nul(cls, command: list[str]) -> list[str]:
        if any("\x00" in arg for arg in command):
            raise ValueError("an argument contains a NUL character, which no program can receive")
        return command


MAX_PROMPT_CHARS = 20_000
AgentTool = Literal["bash", "edit", "computer", "browser", "memory"]


class AgentTaskCreate(Strict):
    """An agent task: the model works with tools until it answers (see computer_use)."""

    thread: Name = Field(
        default="default", description="Thread name; a thread of that name is created if new."
    )
    kind: Literal["agent"]
    prompt: str = Field(
        min_length=1, max_length=MAX_PROMPT_CHARS, description="What the agent should do."
    )
    tools: list[AgentTool] = Field(
        min_length=1, max_length=5, description="bash, edit, computer, browser, memory."
    )
    folders: list[FolderRequest] = Field(default_factory=list, max_length=MAX_FOLDERS)
    network: NetworkChoice = "none"
    isolation: Literal["container", "vm"] = Field(
        default="container",
        description="container: the sandbox_backend setting's sandbox; vm: a QEMU VM with its "
        "own kernel (the libvirt backend).",
    )
    display: Literal["sandbox", "host"] = Field(
        default="sandbox",
        description="sandbox: a desktop container; host: the host_display setting's screen.",
    )
    max_steps: int = Field(default=30, ge=1, description="Model turns before it is stopped.")
    model: str | None = Field(
        default=None, min_length=1, max_length=100, description="The `model` setting if omitted."
    )
    timeout_s: float | None = Field(
        default=None, gt=0, description="Seconds; the controller's default when omitted."
    )
    policy: dict[str, Any] | None = Field(
        default=None, description="Approval rules; can only tighten the configured policy."
    )
    allowed_domains: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list, max_length=100, description="Where the browser may go."
    )

    @field_validator("tools")
    @classmethod
    def _unique(cls, tools: list[str]) -> list[str]:
        if len(set(tools)) != len(tools):
            raise ValueError("a tool is named twice; name each tool once")
        return tools

    @field_validator("prompt")
    @classmethod
    def _no_nul_prompt(cls, prompt: str) -> str:
        if "\x00" in prompt:
            raise ValueError("the prompt contains a NUL character")
        return prompt


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "command"))
    return str(getattr(value, "kind", "command"))


# A submission: a command (the default when `kind` is left out) or an agent task.
AnyTaskCreate = Annotated[
    Annotated[TaskCreate, Tag("command")] | Annotated[AgentTaskCreate, Tag("agent")],
    Discriminator(_kind_of),
]
