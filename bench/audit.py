"""How fast the audit log writes durably and verifies, against a plain SQLite insert.

    .venv/bin/python bench/audit.py [--appends 1000] [--entries 100000] [--rounds 5]

Appends: in a temporary folder on the same file system, interleaved in `--rounds` rounds,
  audit append     `AuditLog.append` of a proposed action (~450 bytes of canonical JSON):
                   flock, one O_APPEND write, fdatasync; returns once durable
  + new screenshot the same naming a 1280x800 PNG put just before: the worst case, where the
                   append waits for the background writer to make the file durable first
  sqlite WAL       the baseline: one INSERT of the same JSON per transaction, journal_mode=WAL,
                   synchronous=FULL (the controller's own store settings)
  sqlite DELETE    the same with SQLite's default rollback journal, for reference
and prints each one's appends per second and the audit log's ratio to the baseline (goal: 0.8x).

Verification: a log of `--entries` entries in the shape of real tasks (submitted, model turns,
proposals, approvals, results; a screenshot every few entries, 400 distinct files of ~60 KB),
written directly (no fsync: only reading is timed), then `verify()` three times: entries per
second for the whole check (chain and screenshot files), the median (goal: 50,000/s), by the
wall clock and by CPU time (which a busy machine does not inflate).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from computer_use.audit import entry as E  # noqa: E402
from computer_use.audit.chain import LOG_NAME, SHOTS_NAME, AuditLog  # noqa: E402
from computer_use.audit.entry import GENESIS, Kind  # noqa: E402
from computer_use.audit.verify import verify  # noqa: E402

PROPOSAL = {
    "action_id": "toolu_01ABCDEFGHIJKLMNOPQRSTUV",
    "tool": "computer",
    "member": "left_click",
    "input": {"coordinate": [812, 430]},
    "screen_input": {"coordinate": [1218, 645]},
    "description": "Click at (1218, 645)",
    "reason": "The Send button is at the bottom right of the compose window; pressing it sends.",
    "policy": "ask",
}


def screen(seed: int, size: tuple[int, int] = (1280, 800)) -> bytes:
    image = Image.new("RGB", size, "#f4f4f4")
    draw = ImageDraw.Draw(image)
    for row in range(0, size[1], 24):
        draw.text((20, row), f"Quarterly report {seed} - row {row} - lorem ipsum dolor", "#222")
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def bench_appends(root: Path, count: int, rounds: int) -> dict[str, float]:
    log = AuditLog.open(root / "audit")
    shots = [screen(n) for n in range(count // rounds // 10 + 1)]
    payload = json.dumps(PROPOSAL)
    databases = {}
    for mode in ("WAL", "DELETE"):
        db = sqlite3.connect(root / f"plain-{mode}.db", isolation_level=None)
        db.execute(f"PRAGMA journal_mode={mode}")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, data TEXT NOT NULL)")
        databases[mode] = db
    times: dict[str, list[float]] = {
        "audit append": [],
        "+ new screenshot": [],
        "sqlite WAL": [],
        "sqlite DELETE": [],
    }
    per_round = count // rounds
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(per_round):
            log.append(Kind.ACTION_PROPOSED, task=1, thread=1, data=PROPOSAL)
        times["audit append"].append((time.perf_counter() - started) / per_round)
        few = len(shots)
        started = time.perf_counter()
        for shot in shots:
            log.append(Kind.ACTION_PROPOSED, task=1, thread=1, data=PROPOSAL, shots={"seen": shot})
        times["+ new screenshot"].append((time.perf_counter() - started) / few)
        shots = [s + b"\0" for s in shots]  # new bytes each round: never already stored
        for mode, db in databases.items():
            started = time.perf_counter()
            for _ in range(per_round):
                db.execute("INSERT INTO entries (data) VALUES (?)", (payload,))
            times[f"sqlite {mode}"].append((time.perf_counter() - started) / per_round)
    log.close()
    for db in databases.values():
        db.close()
    return {name: 1 / statistics.median(values) for name, values in times.items()}


def write_log(root: Path, count: int) -> tuple[int, int]:
    """A log of `count` entries in the shape of real tasks; (screenshot files, their bytes)."""
    shots_dir = root / SHOTS_NAME
    files = []
    for _ in range(400):
        data = os.urandom(60_000)
        digest = hashlib.sha256(data).hexdigest()
        (shots_dir / digest[:2]).mkdir(parents=True, exist_ok=True)
        (shots_dir / digest[:2] / digest).write_bytes(data)
        files.append(digest)
    cycle = [
        (Kind.TASK_SUBMITTED, {"type": "agent", "request": "send the report " * 4, "by": "phone"}),
        (Kind.MODEL_TURN, {"text": "I can see the mail client. " * 10, "input_tokens": 1812}),
        (Kind.ACTION_PROPOSED, PROPOSAL),
        (Kind.APPROVAL_REQUESTED, {"action_id": PROPOSAL["action_id"], "approval_id": 7}),
        (Kind.APPROVAL_DECIDED, {"action_id": "t", "decision": "approved", "by": "Ann"}),
        (Kind.ACTION_PERFORMED, {"action_id": PROPOSAL["action_id"], "outcome": "done"}),
        (Kind.MODEL_TURN, {"text": "Sent. " * 20, "input_tokens": 2400, "output_tokens": 60}),
        (Kind.TASK_FINISHED, {"status": "succeeded", "reason": "done"}),
    ]
    prev = GENESIS
    with open(root / LOG_NAME, "wb") as handle:
        for seq in range(1, count + 1):
            kind, data = cycle[seq % len(cycle)]
            shots = {"seen": files[seq % len(files)]} if seq % 4 == 0 else {}
            line, prev = E.encode(
                {
                    "seq": seq,
                    "prev": prev,
                    "time": E.now_iso(time.time()),
                    "task": seq // len(cycle),
                    "thread": seq % 7,
                    "kind": kind.value,
                    "data": data,
                    "shots": shots,
                }
            )
            handle.write(line)
    return len(files), 400 * 60_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dispatch-bench-audit-") as tmp:
        root = Path(tmp)
        rates = bench_appends(root, args.appends, args.rounds)
        baseline = rates["sqlite WAL"]
        print(f"durable appends, {args.appends} each in {args.rounds} interleaved rounds")
        print(f"{'case':<20}{'per second':>12}{'vs sqlite WAL':>15}")
        for name, rate in rates.items():
            print(f"{name:<20}{rate:>12.0f}{rate / baseline:>14.2f}x")
        log_root = root / "verify"
        log_root.mkdir()
        files, size = write_log(log_root, args.entries)
        runs, cpu = [], []
        for _ in range(3):
            started, started_cpu = time.perf_counter(), time.process_time()
            report = verify(log_root)
            runs.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            assert report.ok, report.summary()
        size_mb = (log_root / LOG_NAME).stat().st_size / 1e6
        print(
            f"verify: {args.entries} entries ({size_mb:.0f} MB), {files} screenshot files "
            f"({size / 1e6:.0f} MB)"
        )
        print(
            f"  median {statistics.median(runs):.2f} s = "
            f"{args.entries / statistics.median(runs):,.0f} entries/s "
            f"(best {args.entries / min(runs):,.0f}/s)"
        )
        # On a shared machine the wall clock includes waiting for a core; CPU time does not.
        print(
            f"  CPU time median {statistics.median(cpu):.2f} s = "
            f"{args.entries / statistics.median(cpu):,.0f} entries per CPU second"
        )


if __name__ == "__main__":
    main()
