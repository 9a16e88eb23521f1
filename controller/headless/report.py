"""What `dispatch run` writes: JUnit XML, one JSON result, and the artifacts folder.

Every text in a `RunReport` is already masked (secrets shown as `***`); nothing here reads the
store again, so nothing unmasked can slip into a file.
"""

from __future__ import annotations

import contextlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from controller.headless.runner import Result, RunReport, TaskReport
from controller.headless.writes import Writer

# Characters XML 1.0 cannot carry at all (a task's output may hold any byte).
_XML_BAD = dict.fromkeys(
    [c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)] + [0xFFFE, 0xFFFF],
    "\N{REPLACEMENT CHARACTER}",
)


def _xml_text(text: str) -> str:
    return text.translate(_XML_BAD)


def step_log(task: TaskReport) -> str:
    """The task's steps and output as plain text (JUnit's system-out)."""
    lines: list[str] = []
    for step in task.steps:
        kind = step.get("kind")
        if kind == "model":
            text = str(step.get("text", "")).strip()
            calls = [
                f"{c.get('name')} {json.dumps(c.get('input', {}), sort_keys=True)}"
                for c in step.get("tool_calls", [])
            ]
            lines.append(
                f"[{step.get('index')}] model: {text}" if text else f"[{step.get('index')}] model"
            )
            lines += [f"    call {c}" for c in calls]
        elif kind == "tools":
            for result in step.get("results", []):
                mark = "refused" if result.get("is_error") else "result"
                lines.append(f"[{step.get('index')}] {mark}: {str(result.get('text', '')).strip()}")
        else:
            lines.append(f"[{step.get('index')}] {kind}: {step.get('text', '')}")
    if task.output:
        lines += ["--- output ---", task.output.rstrip("\n")]
    if task.final_answer:
        lines += ["--- final answer ---", task.final_answer]
    return "\n".join(lines) + "\n"


def junit(report: RunReport) -> str:
    """JUnit XML: one test case per task; failures, denials and errors with their reasons."""
    suite = ET.Element(
        "testsuite",
        name=report.taskfile.name,
        tests=str(len(report.tasks)),
        failures=str(sum(t.result in (Result.FAILED, Result.DENIED) for t in report.tasks)),
        errors=str(sum(t.result is Result.ERROR for t in report.tasks)),
        skipped=str(sum(t.result is Result.NOT_RUN for t in report.tasks)),
        time=f"{report.duration_s:.3f}",
    )
    for task in report.tasks:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=report.taskfile.stem,
            name=task.name,
            time=f"{task.duration_s:.3f}",
        )
        reason = _xml_text(task.reason or task.status)
        if task.result is Result.FAILED:
            ET.SubElement(case, "failure", type=task.outcome or "failed", message=reason)
        elif task.result is Result.DENIED:
            ET.SubElement(case, "failure", type="denied", message=reason)
        elif task.result is Result.ERROR:
            ET.SubElement(case, "error", type=task.outcome or task.status, message=reason)
        elif task.result is Result.NOT_RUN:
            ET.SubElement(case, "skipped", message=reason)
        ET.SubElement(case, "system-out").text = _xml_text(step_log(task))
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def as_json(report: RunReport) -> dict[str, Any]:
    """One machine-readable result for `--json`."""
    return {
        "taskfile": str(report.taskfile),
        "exit_code": int(report.exit_code),
        "summary": report.headline,
        "duration_s": round(report.duration_s, 3),
        "tasks": [
            {
                "name": t.name,
                "kind": t.kind,
                "result": t.result.value,
                "status": t.status,
                "outcome": t.outcome,
                "exit_code": t.exit_code,
                "reason": t.reason,
                "duration_s": round(t.duration_s, 3),
                "final_answer": t.final_answer,
                "output": t.output,
                "steps": len(t.steps),
            }
            for t in report.tasks
        ],
    }


def write_artifacts(report: RunReport, folder: Path, writer: Writer) -> None:
    """Per task: its output, its steps (JSON and readable), its screenshots, its audit export
    (`dispatch audit verify --export DIR/TASK/audit` checks it on its own, and its index.html
    is the offline timeline); and the summary. Written through `writer` (see writes.py).

    Raises:
        UnsafePath: a task left a link on the way; nothing was written through it.
    """
    # Here, not at the top: the export's timeline draws with Pillow and SciPy (0.4 s to load),
    # which a run without --artifacts never needs.
    from computer_use.audit.chain import AUDIT_FOLDER
    from computer_use.audit.export import NoSuchTask, export_task
    from computer_use.audit.shots import media_type

    audit_dir = report.data_dir / AUDIT_FOLDER if report.data_dir is not None else None
    for task in report.tasks:
        own = folder / task.name
        writer.write(own / "output.txt", task.output)
        writer.write(own / "steps.json", json.dumps(task.steps, indent=2, sort_keys=True) + "\n")
        writer.write(own / "log.txt", step_log(task))
        for ref, path in task.screenshots.items():
            if path.exists():
                data = path.read_bytes()
                writer.write(own / "screenshots" / f"{ref}.{media_type(data[:16])[1]}", data)
        if audit_dir is not None and task.task_id is not None:
            # Empty first: an earlier run's, in a reused folder, must not mix in.
            trail = writer.fresh_folder(own / "audit")
            with contextlib.suppress(NoSuchTask):  # a task that never started has no trail
                export_task(audit_dir, task.task_id, trail)
    writer.write(folder / "result.json", json.dumps(as_json(report), indent=2) + "\n")
    writer.write(folder / "junit.xml", junit(report))
