"""Errors raised by the sandbox package.

    SandboxError                 root: catch this to handle any sandbox failure
    ├── GrantRefused             a grant was refused (missing, a file, sensitive, outside roots)
    ├── EngineUnavailable        the backend's engine (Docker daemon, libvirtd) cannot be reached
    ├── ImageMissing             the sandbox image is not built
    ├── ImageBuildFailed         building an image (or bootstrapping its base) failed
    ├── SandboxNotRunning        an operation needs a started sandbox
    ├── FileOperationFailed      read_file/write_file could not (missing, read-only, denied)
    └── BackendUnavailable       a backend was named that is unknown or whose extra is not installed

A command that times out, is killed for memory or exits non-zero is not an error: it is an
`ExecResult` the caller inspects.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Root of every error the sandbox package raises."""


class GrantRefused(SandboxError):
    """A folder grant was refused; the message names the folder and the fix."""


class EngineUnavailable(SandboxError):
    """The isolation engine cannot be reached."""


class ImageMissing(SandboxError):
    """The sandbox image is not present locally."""


class ImageBuildFailed(SandboxError):
    """An image or its base could not be built."""


class SandboxNotRunning(SandboxError):
    """The sandbox was used before `start()` or after `stop()`."""


class FileOperationFailed(SandboxError):
    """A file could not be read or written inside the sandbox."""


class BackendUnavailable(SandboxError):
    """The named backend does not exist or its optional dependency is missing."""
