"""Review 3: a secret of `dispatch run` reaches the artifacts through a dict key.

`runner._masked` masks every string value of a step but not the keys of its objects. The model
knows the secret whenever it is in the prompt (or it read it with a bash step, whose output is
masked only in the report), and a tool call's `input` is the model's to shape: a web page the
agent read can ask it to call a tool with the token as a key. steps.json, log.txt and the JUnit
system-out then hold it in clear. (The progress lines have a smaller leak of the same family:
`mask(_step_line(step))` cuts the text at 200 characters before masking, so a secret that
straddles the cut is printed in part.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from computer_use.testing.fake_model import FakeModel, Reply, ToolCall
from tests.controller.test_headless import SECRET, dispatch_run, write

pytestmark = pytest.mark.docker


def test_a_secret_the_model_puts_in_a_key_is_masked_too(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    fake_model.add(
        Reply(text="Checking.", tool_calls=[ToolCall("bash", {"command": "true", SECRET: 1})]),
        Reply(text="Done."),
    )
    tasks = write(
        tmp_path / "tasks.toml",
        """[[tasks]]
name = "deploy"
kind = "agent"
prompt = "Deploy with token ${API_TOKEN}"
tools = ["bash"]
""",
    )
    policy = write(
        tmp_path / "policy.json",
        json.dumps({"default": "allow", "rules": []}),
    )
    report, artifacts = tmp_path / "junit.xml", tmp_path / "artifacts"
    done = dispatch_run(
        tmp_path,
        str(tasks),
        "--policy",
        str(policy),
        "--report",
        str(report),
        "--artifacts",
        str(artifacts),
        "--json",
        env={**fake_model.environ(), "API_TOKEN": SECRET},
    )
    written = {"stdout": done.stdout, "stderr": done.stderr, "junit": report.read_text()}
    written |= {str(p): p.read_text() for p in artifacts.rglob("*") if p.is_file()}
    leaked = sorted(name for name, text in written.items() if SECRET in text)
    assert not leaked, f"the secret is in clear in {leaked}"
