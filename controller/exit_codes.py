"""Exit codes of the `dispatch` command, documented in the README.

A command run in a sandbox passes its own status through (0-255); Dispatch's own outcomes use
codes from 120 up, next to the ones `timeout` (124) and `docker run` (125) made familiar.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    USAGE = 2  # bad flags or arguments (click's own code)
    GRANT_REFUSED = 120  # a folder grant was refused
    ENGINE_UNAVAILABLE = 121  # the Docker engine cannot be reached
    IMAGE_MISSING = 122  # the sandbox image is not built
    OUT_OF_MEMORY = 123  # the command was killed for exceeding the memory limit
    TIMED_OUT = 124  # the command was killed at its timeout
    SANDBOX_FAILED = 125  # any other sandbox or image-build failure
    INTERRUPTED = 130  # stopped with Ctrl-C
