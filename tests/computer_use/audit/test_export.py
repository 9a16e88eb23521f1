"""A task's export verifies on its own and its index.html shows every step, offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from computer_use.audit.entry import Head, Kind
from computer_use.audit.export import NoSuchTask, export_task, verify_export
from computer_use.audit.verify import ProblemKind
from tests.computer_use.audit.conftest import Built

CHROMIUM = Path("/usr/bin/chromium")


def _export(built: Built, tmp_path: Path, task: int = 2) -> Path:
    out = tmp_path / "export"
    report = export_task(built.root, task, out)
    assert report.ok, report.summary()
    # Moved elsewhere, the data directory gone: the export stands on its own.
    moved = tmp_path / "elsewhere"
    shutil.move(out, moved)
    shutil.rmtree(built.root)
    return moved


def test_an_export_holds_the_tasks_lines_its_proof_and_screenshots(
    built: Built, tmp_path: Path
) -> None:
    lines = built.lines()
    mine = [line for line, e in zip(lines, built.entries, strict=True) if e.task == 2]
    out = _export(built, tmp_path)
    assert (out / "entries.jsonl").read_bytes() == b"".join(mine)
    # Task 2 is entries 2-9; the proof runs from entry 1 to entry 10.
    assert (out / "chain.jsonl").read_bytes() == b"".join(lines[0:10])
    assert len(list((out / "shots").iterdir())) == 4
    report = verify_export(out)
    assert report.ok, report.summary()
    assert (report.task_entries, report.shots_checked) == (8, 4)
    assert "head 18:" in report.summary() and "past this export" in report.summary()


def test_a_head_inside_the_proof_is_checked(built: Built, tmp_path: Path) -> None:
    entry_9 = built.entries[8]
    out = _export(built, tmp_path)
    assert verify_export(out, head=Head(9, entry_9.hash)).ok
    problem = verify_export(out, head=Head(9, "0" * 64)).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.NOT_EXTENDING, 9)


def test_tampering_with_an_export_is_caught(built: Built, tmp_path: Path) -> None:
    out = _export(built, tmp_path)
    chain = (out / "chain.jsonl").read_bytes()
    (out / "chain.jsonl").write_bytes(chain.replace(b"Ann's phone", b"Bob's phone"))
    problem = verify_export(out).problem
    assert problem is not None and (problem.kind, problem.seq) == (ProblemKind.EDITED, 7)
    (out / "chain.jsonl").write_bytes(chain)
    entries = (out / "entries.jsonl").read_bytes().splitlines(keepends=True)
    (out / "entries.jsonl").write_bytes(b"".join(entries[:-1]))
    problem = verify_export(out).problem
    assert problem is not None and "entries.jsonl has 7 entries, the proof 8" in problem.message
    (out / "entries.jsonl").write_bytes(b"".join(entries))
    shot = next((out / "shots").iterdir())
    shot.write_bytes(shot.read_bytes()[:-1])
    problem = verify_export(out).problem
    assert problem is not None and problem.kind is ProblemKind.SCREENSHOT_ALTERED


def test_exporting_a_task_with_no_entries_says_so(built: Built, tmp_path: Path) -> None:
    with pytest.raises(NoSuchTask, match="no entry for task 99"):
        export_task(built.root, 99, tmp_path / "out")


@pytest.mark.browser
def test_the_timeline_shows_every_step_and_image_in_chromium_with_the_network_blocked(
    built: Built, tmp_path: Path
) -> None:
    from playwright.sync_api import Route, sync_playwright

    steps = [e for e in built.entries if e.task == 2]
    out = _export(built, tmp_path)
    blocked: list[str] = []

    def only_files(route: Route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.route("**/*", only_files)
            page.goto((out / "index.html").as_uri())
            page.wait_for_load_state("load")
            sections = page.locator("section.step")
            assert sections.count() == len(steps)
            for index, entry in enumerate(steps):
                section = sections.nth(index)
                assert section.get_attribute("id") == f"seq-{entry.seq}"
                assert f"#{entry.seq}" in section.inner_text()
                assert section.locator("img").count() == len(entry.shots)
            titles = page.locator("div.title").all_inner_texts()
            assert "Proposed: Click at (270, 165)" in titles[3]
            assert titles[5] == "Approved by Ann's phone on device 3: Click at (270, 165)"
            assert "Decided by Ann's phone on device 3 at " in page.locator("div.who").inner_text()
            images = page.locator("img")
            assert images.count() == 5  # seen, judged, judged + annotated, after
            widths = images.evaluate_all("all => all.map(i => i.complete && i.naturalWidth)")
            assert all(width and width > 0 for width in widths), widths
            artifact = tmp_path / "audit-timeline.png"
            page.screenshot(path=str(artifact), full_page=True)
            assert artifact.stat().st_size > 10_000
        finally:
            browser.close()
    assert blocked == []
    html = (out / "index.html").read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html


def test_model_text_cannot_inject_markup_into_the_timeline(tmp_path: Path) -> None:
    from computer_use.audit.chain import AuditLog

    root = tmp_path / "audit"
    with AuditLog.open(root) as log:
        log.append(
            Kind.MODEL_TURN,
            task=5,
            thread=1,
            data={"text": '<img src="https://evil.example/x.png">\u202e<script>alert(1)</script>'},
        )
    export_task(root, 5, tmp_path / "out")
    html = (tmp_path / "out" / "index.html").read_text()
    assert "<script>" not in html and '<img src="https' not in html
    assert "\u202e" not in html and "\\u202e" in html


def test_the_models_line_breaks_are_kept_and_each_line_escaped(tmp_path: Path) -> None:
    from computer_use.audit.chain import AuditLog
    from computer_use.audit.timeline import steps

    root = tmp_path / "audit"
    with AuditLog.open(root) as log:
        log.append(Kind.MODEL_TURN, task=5, thread=1, data={"text": "First.\nSecond\x1b[2J."})
        found = steps(log.entries(5))
    assert found[0].detail == "First.\nSecond\\x1b[2J."
