"""Exit codes of the `dispatch` command, documented in the README.

A command run in a sandbox (or a task waited for with `submit --wait`) passes its own status
through; Dispatch's own outcomes use a few low codes for talking to the controller and codes
from 120 up, next to the ones `timeout` (124) and `docker run` (125) made familiar.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    REFUSED = 1  # the controller refused the request (bad input, unknown id, wrong state)
    USAGE = 2  # bad flags or arguments (click's own code), or a wrong setting at start-up
    UNREACHABLE = 3  # no controller answered at the server URL
    UNAUTHORIZED = 4  # no token, or the token is unknown or revoked
    TASK_INTERRUPTED = 75  # the controller stopped while the task ran; `dispatch retry` it
    GRANT_REFUSED = 120  # a folder grant was refused
    ENGINE_UNAVAILABLE = 121  # the Docker engine cannot be reached
    IMAGE_MISSING = 122  # the sandbox image is not built
    OUT_OF_MEMORY = 123  # the command was killed for exceeding the memory limit
    TIMED_OUT = 124  # the command was killed at its timeout
    SANDBOX_FAILED = 125  # any other sandbox or image-build failure; a task that never ran
    INTERRUPTED = 130  # stopped with Ctrl-C; with `submit --wait`, also a cancelled task
