"""`dispatch sandbox run --allow`: restricted internet from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli.exit_codes import ExitCode
from tests.sandbox.egress_sites import SMALL, Site, serve

pytestmark = pytest.mark.docker
DISPATCH = [sys.executable, "-m", "controller", "sandbox", "run"]


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with serve() as served:
        yield served


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DISPATCH, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_allow_reaches_the_name_and_reports_what_it_refused(
    docker_client: object, site: Site
) -> None:
    done = run(
        "--allow", f"allowed.test:{site.port}", "--resolve", "allowed.test=127.0.0.1", "--",
        "sh", "-c", f"curl -fsS http://allowed.test:{site.port}/small; curl -sS http://pypi.org/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(SMALL.decode())
    assert "not on this task's network allowlist" in done.stdout  # the 403's body
    assert "dispatch: network: refused pypi.org:80" in done.stderr


def test_a_bad_allow_entry_is_a_usage_error(docker_client: object) -> None:
    done = run("--allow", "10.0.0.1", "--", "true")
    assert done.returncode == ExitCode.USAGE
    assert "is an IP address" in done.stderr and "network_resolve" in done.stderr
    done = run("--allow", "pypi.org", "--network", "open", "--", "true")
    assert done.returncode == ExitCode.USAGE and "cannot go with --network open" in done.stderr


def test_presets_and_network_resolve_come_from_the_config_file(
    docker_client: object, site: Site, tmp_path: Path
) -> None:
    config = tmp_path / "dispatch" / "config.toml"
    config.parent.mkdir()
    config.write_text(
        'network_resolve = {"allowed.test" = "127.0.0.1"}\n'
        f'[network.presets]\nlocal-site = ["allowed.test:{site.port}"]\n'
    )
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    done = run(
        "--allow",
        "local-site",
        "--",
        "curl",
        "-fsS",
        f"http://allowed.test:{site.port}/small",
        env=env,
    )
    assert (done.returncode, done.stdout) == (0, SMALL.decode()), done.stderr
    done = run("--allow", "no-such-preset", "--", "true", env=env)
    assert (
        done.returncode == ExitCode.USAGE and "presets: local-site, python-packages" in done.stderr
    )
