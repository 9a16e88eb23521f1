"""Our overhead per computer step (screenshot, policy, record, action) over the SDK's tool runner.

    .venv/bin/python bench/agent_step.py [--steps 10] [--runs 6]

Starts an Xvfb at 1280x800 filled with terminals of text (bench/screenshot.py's screen), the
scripted fake Messages API (computer_use.testing.fake_model) answering every request at once,
and a controller store (SQLite with fsync, blobs, in a temporary data directory). Every model
reply asks for one computer step: a `left_click` on the screen, then a `screenshot`. Two loops
take turns, `--runs` runs of `--steps` replies each (plus one untimed warm-up run each), all in
this one process, against the same fake model and the same `anthropic` client:

  ours      an agent task as the controller runs it (`controller.agent.runner.AgentJob`,
            `display: "host"` on the Xvfb): the computer toolset on X11 behind the `Confirmer`
            with an allow-all policy, clicks through xdotool, captures through mss, each reply
            and its results recorded as `task.step` events with the screenshot stored by hash;
  baseline  `client.beta.messages.tool_runner` with a computer toolset whose members do
            nothing, its screenshot one prepared capture (the same bytes ours sends), nothing
            recorded.

A step is the time from one model reply reaching the loop to the next: the calls, their results
sent back, the fake's answer. Both loops send the same images, so the difference is our cost.
Where ours goes is shown below the figures: the median of each part per call, and its calls per
step (the screen capture with its encoding, each xdotool run, each step recorded, the results'
images stored).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anthropic.tools import (  # noqa: E402
    BetaAbstractComputerToolset20260801,
    BetaScreenshotResult,
    BetaToolsetCallContext,
)
from anthropic.types.beta import (  # noqa: E402
    BetaComputerLeftClickInput,
    BetaComputerScreenshotInput,
)

from computer_use.agent import loop  # noqa: E402
from computer_use.agent.loop import agent_client  # noqa: E402
from computer_use.approval.policy import Decision, Policy  # noqa: E402
from computer_use.screen.x11 import X11Screen  # noqa: E402
from computer_use.testing.fake_model import FakeModel, Reply, ToolCall  # noqa: E402
from controller.agent.runner import AgentJob, TaskSteps  # noqa: E402
from controller.execution.folders import FolderPlan  # noqa: E402
from controller.service import Controller, make_private  # noqa: E402
from controller.settings import load_settings  # noqa: E402
from controller.store.models import TaskKind  # noqa: E402
from controller.store.tasks import NewTask  # noqa: E402
from sandbox import Network  # noqa: E402

# The screen of bench/screenshot.py (terminals full of text), loaded by path: `bench/` is not a
# package, and on sys.path its controller.py would hide the `controller` package.
_spec = importlib.util.spec_from_file_location("bench_screenshot", REPO / "bench" / "screenshot.py")
assert _spec is not None and _spec.loader is not None
_screenshot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_screenshot)
xvfb = _screenshot.xvfb

MODEL = "claude-fake"
API_KEY = "bench-key"


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def script(steps: int) -> list[Reply]:
    """`steps` replies of a click (on a terminal, which ignores it) and a screenshot; then done."""
    replies = [
        Reply(
            text="Clicking, then looking.",
            tool_calls=[
                ToolCall("left_click", {"coordinate": [300 + 7 * index, 200]}),
                ToolCall("screenshot"),
            ],
        )
        for index in range(steps)
    ]
    return [*replies, Reply(text="Done.")]


class Parts:
    """Times the parts of our step, by wrapping the methods that do them."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}
        self.on = False

    def wrap(self, owner: Any, name: str, label: str) -> None:
        method = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                if self.on:
                    self.calls.setdefault(label, []).append(time.perf_counter() - started)

        setattr(owner, name, timed)


PARTS = Parts()
PARTS.wrap(X11Screen, "capture", "capture + encode (mss, JPEG)")
PARTS.wrap(X11Screen, "_run", "xdotool run")
PARTS.wrap(TaskSteps, "record", "step recorded (a transaction)")
PARTS.wrap(loop, "summarise_results", "results summarised, images stored")


def gaps(stamps: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(stamps)]


class TimedJob(AgentJob):
    """The controller's agent job, noting when each model reply reaches the loop."""

    stamps: list[float]

    def _on_reply(self, message: Any) -> None:
        self.stamps.append(time.perf_counter())
        super()._on_reply(message)


class NothingComputer(BetaAbstractComputerToolset20260801):
    """The baseline: a click does nothing, a screenshot is one prepared capture."""

    def __init__(self, shot: BetaScreenshotResult) -> None:
        super().__init__()
        self.shot = shot

    def screenshot(
        self, context: BetaToolsetCallContext, input: BetaComputerScreenshotInput
    ) -> BetaScreenshotResult:
        return self.shot

    def left_click(
        self, context: BetaToolsetCallContext, input: BetaComputerLeftClickInput
    ) -> str | None:
        return None


@contextmanager
def controller_at(root: Path, display: str, model_url: str) -> Iterator[Controller]:
    """A controller's stores in `root`, its runner not started: the bench runs the job itself."""
    (root / "config.toml").write_text("")
    settings = load_settings(
        {"data_dir": root / "data", "sandbox_backend": "fake", "log_level": "warning"},
        {"XDG_CONFIG_HOME": str(root / "xdg")},
        config=root / "config.toml",
    )
    settings = replace(
        settings,
        host_display=display,
        anthropic_base_url=model_url,
        anthropic_api_key=API_KEY,
        model=MODEL,
    )
    controller = Controller(settings)
    make_private(settings.data_dir, settings.sqlite_path)
    controller.db.migrate()
    # Every step is audited as in a running controller (write-ahead, fsync'd).
    controller.audit.open()
    try:
        yield controller
    finally:
        controller.audit.close()
        controller.db.dispose()


def run_ours(controller: Controller, model: FakeModel, steps: int) -> list[float]:
    model.add(*script(steps))
    task = controller.tasks.submit(
        NewTask(
            thread="bench",
            command=[],
            mounts=(),
            network=Network.NONE,
            timeout_s=3600,
            kind=TaskKind.AGENT,
            agent={
                "prompt": "Click and look.",
                "tools": ["computer"],
                "display": "host",
                "max_steps": steps + 1,
                "model": MODEL,
            },
        )
    )
    services = controller.runner.agents
    assert services is not None, "the controller has no agent services"
    job = TimedJob(
        services=services,
        task=task,
        plan=FolderPlan(requested=(), mounts=(), user=None),
        policy=Policy(default=Decision.ALLOW),
        context="",
        factory=lambda backend, spec: None,  # type: ignore[arg-type,return-value]
        attach=lambda box: True,
        cancelled=lambda: False,
        on_sandbox=lambda sandbox_id: None,
    )
    job.stamps = []
    result = job.run()
    if not result.ok:
        sys.exit(f"the agent task ended {result.outcome.value}: {result.reason}")
    # A refused call is fast and would flatter the figure: every call must have run.
    refused = [
        r["text"]
        for step in controller.tasks.steps(task.id)
        for r in step.get("results", [])
        if r.get("is_error")
    ]
    if refused:
        sys.exit(f"a call was refused, so the figure would be wrong: {refused[0]}")
    return gaps(job.stamps)


def run_baseline(shot: BetaScreenshotResult, model: FakeModel, steps: int) -> list[float]:
    model.add(*script(steps))
    client = agent_client(api_key=API_KEY, base_url=model.url, on_retry=lambda text: None)
    with NothingComputer(shot) as toolset:
        runner = client.beta.messages.tool_runner(
            model=MODEL,
            max_tokens=4096,
            messages=[{"role": "user", "content": "Click and look."}],
            stream=False,
            tools=[toolset],
            thread=False,
        )
        stamps = [time.perf_counter() for _ in runner]
    client.close()
    return gaps(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="model replies per run")
    parser.add_argument("--runs", type=int, default=6, help="timed runs of each loop")
    args = parser.parse_args()
    for tool in ("Xvfb", "xterm", "xdotool"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install xvfb xterm xdotool (or run `make test`)")
    root = Path(tempfile.mkdtemp(prefix="dispatch-bench-step-"))
    samples: dict[str, list[float]] = {"baseline": [], "ours": []}
    with (
        xvfb(1280, 800) as display,
        FakeModel(api_key=API_KEY, model=MODEL) as model,
        controller_at(root, display, model.url) as controller,
    ):
        screen = X11Screen(display)
        frame = screen.capture()
        shot = BetaScreenshotResult(data=frame.base64(), media_type=frame.media_type)
        screen.close()
        for run in range(args.runs + 1):  # the first run of each warms up, untimed
            base = run_baseline(shot, model, args.steps)
            PARTS.on = run > 0
            ours = run_ours(controller, model, args.steps)
            PARTS.on = False
            if run:
                samples["baseline"] += base
                samples["ours"] += ours
        model.assert_script_done()
    shutil.rmtree(root, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    tails = {name: p95(values) for name, values in samples.items()}
    print(
        f"computer step (click + screenshot) at 1280x800, {args.runs} runs x {args.steps} steps, "
        f"fake model answering at once, allow-all policy, SQLite with fsync ({os.cpu_count()} CPUs)"
    )
    print(f"{'loop':<22}{'median ms':>11}{'p95 ms':>10}")
    for name in ("baseline", "ours"):
        label = "SDK runner, no-op" if name == "baseline" else "ours (controller job)"
        print(f"{label:<22}{medians[name] * 1000:>11.1f}{tails[name] * 1000:>10.1f}")
    print(
        f"{'our overhead':<22}{(medians['ours'] - medians['baseline']) * 1000:>11.1f}"
        f"{(tails['ours'] - tails['baseline']) * 1000:>10.1f}   (goal: median <= 60 ms)"
    )
    print(f"ratio ours / baseline (median): {medians['ours'] / medians['baseline']:.1f}x")
    print(f"\n{'where ours goes':<36}{'median ms':>11}{'per step':>10}")
    for label, values in PARTS.calls.items():
        per_step = len(values) / len(samples["ours"])
        print(f"{label:<36}{statistics.median(values) * 1000:>11.1f}{per_step:>10.1f}")


if __name__ == "__main__":
    main()
