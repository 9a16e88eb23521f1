"""`dispatch run` as CI runs it: the real command, the real engine, the scripted fake model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import docker
import pytest

from computer_use.testing.fake_model import FakeModel, Reply, ToolCall

pytestmark = pytest.mark.docker
DISPATCH = [sys.executable, "-m", "controller"]
SECRET = "s3cr3t-value-9f2c"


def dispatch_run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 180
) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),  # no config file of the machine's
        **(env or {}),
    }
    return subprocess.run(
        [*DISPATCH, "run", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout_s,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def containers_mounting(path: Path) -> list[str]:
    """Sandboxes whose task used `path` (each task's container mounts its folders)."""
    # The plain list: the high-level one inspects each container and fails on one that goes.
    return [
        str(c["Id"])
        for c in docker.from_env().api.containers(all=True)
        if any(m.get("Source", "").startswith(str(path)) for m in c.get("Mounts", []))
    ]


def test_a_passing_and_a_failing_command_exit_1_with_a_junit_report(tmp_path: Path) -> None:
    tasks = write(
        tmp_path / "tasks.yaml",
        """tasks:
  - name: passes
    command: ["sh", "-c", "echo all good"]
  - name: fails
    kind: command
    command: ["sh", "-c", "echo broken >&2; exit 3"]
""",
    )
    report = tmp_path / "junit.xml"
    done = dispatch_run(tmp_path, str(tasks), "--report", str(report), "--json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert [(t["name"], t["result"], t["exit_code"]) for t in result["tasks"]] == [
        ("passes", "passed", 0),
        ("fails", "failed", 3),
    ]
    assert result["tasks"][0]["output"] == "all good\n"
    suite = ET.parse(report).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    passes, fails = suite.findall("testcase")
    assert passes.find("failure") is None and "all good" in (passes.findtext("system-out") or "")
    assert fails.find("failure") is not None and "exit" in fails.find("failure").get("message", "")
    assert "1 passed, 1 failed" in done.stderr


def test_the_policy_allows_the_first_actions_and_denies_a_later_one(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    def bash(command: str) -> ToolCall:
        return ToolCall("bash", {"command": command}, toolset=None)

    fake_model.add(
        Reply(text="Looking first.", tool_calls=[bash("echo looked")]),
        Reply(text="Now cleaning up.", tool_calls=[bash("rm -rf /tmp/x")]),
        Reply(text="I was not allowed to clean up."),
    )
    tasks = write(
        tmp_path / "tasks.toml",
        """[[tasks]]
name = "tidy"
kind = "agent"
prompt = "Tidy up"
tools = ["bash"]
""",
    )
    policy = write(
        tmp_path / "policy.json",
        json.dumps(
            {
                "default": "deny",
                "rules": [
                    {"tool": "bash", "match": {"command": "rm *"}, "decision": "deny"},
                    {"tool": "bash", "match": {"command": "echo *"}, "decision": "allow"},
                ],
            }
        ),
    )
    report = tmp_path / "junit.xml"
    done = dispatch_run(
        tmp_path,
        str(tasks),
        "--policy",
        str(policy),
        "--report",
        str(report),
        env=fake_model.environ(),
    )
    assert done.returncode == 2, done.stderr
    assert "first denied: tidy" in done.stderr
    failure = ET.parse(report).getroot().find("testcase/failure")
    assert failure is not None and failure.get("type") == "denied"
    assert "rules[0] (bash, command 'rm *') matched: deny" in failure.get("message", "")
    # The allowed step ran; the model heard the denial before the task stopped.
    told = str(fake_model.message_requests()[-1].body["messages"][-1])
    assert "denied by the policy" in told
    system_out = ET.parse(report).getroot().findtext("testcase/system-out") or ""
    assert "looked" in system_out


def test_a_malformed_task_file_and_policy_exit_3_naming_line_and_field(tmp_path: Path) -> None:
    tasks = write(
        tmp_path / "tasks.yaml",
        """tasks:
  - name: ok
    command: ["true"]
  - name: broken
    kind: agent
    prompt: "do it"
    tools: [computer]
    max_steps: lots
""",
    )
    done = dispatch_run(tmp_path, str(tasks))
    assert done.returncode == 3
    assert f"{tasks}:8: task 'broken', field 'max_steps'" in done.stderr
    good = write(tmp_path / "good.yaml", 'tasks:\n  - name: ok\n    command: ["true"]\n')
    policy = write(tmp_path / "policy.yaml", "default: maybe\n")
    done = dispatch_run(tmp_path, str(good), "--policy", str(policy))
    assert done.returncode == 3
    assert str(policy) in done.stderr and "maybe" in done.stderr


def test_an_unreachable_engine_exits_4_saying_how_to_start_it(tmp_path: Path) -> None:
    tasks = write(tmp_path / "tasks.yaml", 'tasks:\n  - name: ok\n    command: ["true"]\n')
    done = dispatch_run(
        tmp_path, str(tasks), env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    )
    assert done.returncode == 4, done.stderr
    assert "cannot reach the Docker engine" in done.stderr and "start it" in done.stderr


def test_a_secret_never_appears_in_output_report_or_artifacts(tmp_path: Path) -> None:
    tasks = write(
        tmp_path / "tasks.yaml",
        """tasks:
  - name: leaky
    command: ["sh", "-c", "echo token=${API_TOKEN}; echo ${API_TOKEN} >&2; exit 1"]
""",
    )
    report, artifacts = tmp_path / "junit.xml", tmp_path / "artifacts"
    done = dispatch_run(
        tmp_path,
        str(tasks),
        "--json",
        "--report",
        str(report),
        "--artifacts",
        str(artifacts),
        env={"API_TOKEN": SECRET},
    )
    assert done.returncode == 1, done.stderr
    assert "token=***" in json.loads(done.stdout)["tasks"][0]["output"]
    written = [done.stdout.encode(), done.stderr.encode(), report.read_bytes()]
    written += [p.read_bytes() for p in artifacts.rglob("*") if p.is_file()]
    # Both lines, masked; in either order (stdout and stderr are two pipes, read apart).
    assert sorted((artifacts / "leaky" / "output.txt").read_text().splitlines()) == [
        "***",
        "token=***",
    ]
    assert not [data for data in written if SECRET.encode() in data]
    # The task's audit trail is there, masked as it was written, and verifies on its own.
    trail = artifacts / "leaky" / "audit"
    assert (trail / "index.html").is_file()
    assert "***" in (trail / "entries.jsonl").read_text()
    verified = subprocess.run(
        [*DISPATCH, "audit", "verify", "--export", str(trail)], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stderr


def test_sigterm_during_a_run_leaves_no_container_behind(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    tasks = write(
        tmp_path / "tasks.yaml",
        f"""tasks:
  - name: slow
    command: ["sh", "-c", "echo started; sleep 120"]
    folders: [{{path: {work}, mode: ro}}]
  - name: never
    command: ["true"]
""",
    )
    environ = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    process = subprocess.Popen(
        [*DISPATCH, "run", str(tasks), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    # The sandbox may exist before its task runs (the run starts it ahead): wait for both.
    assert process.stderr is not None
    progress: list[str] = []
    reader = threading.Thread(target=lambda: progress.extend(process.stderr or ()), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not (any("slow: running" in line for line in progress) and containers_mounting(work)):
        assert process.poll() is None, progress
        assert time.monotonic() < deadline, "the task never ran"
        time.sleep(0.05)
    time.sleep(1)  # the command runs inside it
    process.send_signal(signal.SIGTERM)
    out = process.stdout.read() if process.stdout else ""
    process.wait(timeout=60)
    reader.join(timeout=10)
    err = "".join(progress)
    assert process.returncode == 143, err
    result = json.loads(out)
    assert [t["result"] for t in result["tasks"]] == ["error", "not_run"]
    assert containers_mounting(work) == []


# `dispatch run`, then the top-level packages it loaded, written to the file named first.
LOADED = """
import atexit, pathlib, sys
out = pathlib.Path(sys.argv.pop(1))
atexit.register(lambda: out.write_text(" ".join({m.split(".")[0] for m in sys.modules})))
from controller.cli import main
main()
"""


def packages_loaded(tmp_path: Path, taskfile: Path, cache: Path) -> set[str]:
    """The packages a `dispatch run` of `taskfile` loaded, with `cache` as its cache folder."""
    out = tmp_path / "loaded.txt"
    done = subprocess.run(
        [sys.executable, "-c", LOADED, str(out), "run", str(taskfile)],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_CACHE_HOME": str(cache),
        },
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return set(out.read_text().split())


def test_a_command_run_migrates_nothing_once_the_template_database_is_made(
    tmp_path: Path,
) -> None:
    tasks = write(tmp_path / "tasks.yaml", 'tasks:\n  - name: ok\n    command: ["true"]\n')
    cache = tmp_path / "cache"
    assert "alembic" in packages_loaded(tmp_path, tasks, cache)  # the first run makes it
    assert list(cache.glob("dispatch/empty-*.sqlite"))
    loaded = packages_loaded(tmp_path, tasks, cache)
    assert "alembic" not in loaded
    # Nobody can subscribe to Web Push without the HTTP server: no key made, no pywebpush.
    assert "pywebpush" not in loaded


@pytest.mark.parametrize("package", ["anthropic", "fastapi"])
def test_a_command_run_loads_neither_the_agent_nor_the_web_stack(
    tmp_path: Path, package: str
) -> None:
    tasks = write(tmp_path / "tasks.yaml", 'tasks:\n  - name: ok\n    command: ["true"]\n')
    assert package not in packages_loaded(tmp_path, tasks, tmp_path / "cache")


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"


def test_the_example_task_file_runs(tmp_path: Path) -> None:
    done = dispatch_run(
        tmp_path, str(EXAMPLES / "tasks.yaml"), "--json", env={"GREETING": "hello-from-ci"}
    )
    assert done.returncode == 0, done.stderr
    outputs = [t["output"] for t in json.loads(done.stdout)["tasks"]]
    assert outputs == ["ok: the build passed\n", "the greeting is ***\n"]


def test_the_example_agent_task_runs_under_the_example_policy(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    log = EXAMPLES / "app" / "build.log"
    fake_model.add(
        Reply(tool_calls=[ToolCall("bash", {"command": f"cat {log}"}, toolset=None)]),
        Reply(text="Yes: the build passed in 4.2 s."),
    )
    done = dispatch_run(
        tmp_path,
        str(EXAMPLES / "agent.yaml"),
        "--policy",
        str(EXAMPLES / "policy.yaml"),
        "--json",
        env=fake_model.environ(),
    )
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)["tasks"][0]
    assert task["final_answer"] == "Yes: the build passed in 4.2 s."
    # The model read the real file through the allowed command.
    told = str(fake_model.message_requests()[-1].body["messages"][-1])
    assert "build passed in 4.2 s" in told


@pytest.mark.display
def test_display_host_without_a_display_gets_an_xvfb_of_its_own(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    fake_model.add(
        Reply(tool_calls=[ToolCall("screenshot", {}, toolset="computer")]),
        Reply(text="An empty screen."),
    )
    tasks = write(
        tmp_path / "tasks.yaml",
        """tasks:
  - name: look
    kind: agent
    prompt: "What is on the screen?"
    tools: [computer]
    display: host
""",
    )
    policy = write(
        tmp_path / "policy.yaml",
        # On a host display an allow must name it (a rule for the sandbox's desktop asks there).
        "rules: [{tool: computer, member: screenshot, match: {display: host}, decision: allow}]\n",
    )
    environ = {k: v for k, v in fake_model.environ().items()}
    saved = os.environ.pop("DISPLAY", None)
    try:
        done = dispatch_run(tmp_path, str(tasks), "--policy", str(policy), env=environ)
    finally:
        if saved is not None:
            os.environ["DISPLAY"] = saved
    assert done.returncode == 0, done.stderr
    told = fake_model.message_requests()[-1].body["messages"][-1]["content"][0]
    assert told["content"][0]["type"] == "image"
