"""Review: end to end through the API, a task leaves a setuid file in its read-write folder.

The same hole as tests/sandbox/test_review_setid_ptrace.py, through the real worker: the task
writes the ptrace script into its folder, leaves it running as a daemon, and exits with 137 so
that the controller starts its OOM check, whose unconfined first moments the daemon uses.
"""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from conftest import Api
from test_docker_folders import api, make_settings, run  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TRACER = Path(__file__).parents[1] / "sandbox" / "review_data" / "ptrace_window.py.txt"


def test_review_a_task_leaves_a_setuid_file_through_the_api(api: Api, workspace: Path) -> None:  # noqa: F811
    app = workspace / "projects" / "app"
    code = base64.b64encode(TRACER.read_bytes()).decode()
    script = (
        f"echo {code} | base64 -d > t.py && cp /bin/sh tool && "
        "(setsid python3 t.py $PWD/tool $PWD/log </dev/null >/dev/null 2>&1 &) && "
        "while ! grep -q up log 2>/dev/null; do sleep 0.05; done; exit 137"
    )
    done = run(api, script, app)
    mode = (app / "tool").stat().st_mode
    log = (app / "log").read_text() if (app / "log").exists() else ""
    assert mode & (stat.S_ISUID | stat.S_ISGID) == 0, (oct(mode), done["status"], log)
