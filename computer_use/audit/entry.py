"""One audit entry: what it records, its canonical bytes, its hash, and its line in the log.

An entry is a JSON object with exactly these keys:

    seq     1, 2, 3, ... one sequence for the whole controller (every task, every thread)
    prev    the previous entry's hash (64 zeros for the first entry)
    time    when it was written, UTC, ISO 8601 with microseconds ("2026-12-06T18:57:33.123456Z")
    task    the task's id (null for entries about the log itself)
    thread  the thread's id (null likewise)
    kind    a `Kind`
    data    what happened, a JSON object (the keys each kind requires are in `REQUIRED`)
    shots   the screenshots it refers to: role -> SHA-256 of the file's bytes (`Role`)

Its canonical form is `json.dumps(entry, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)` encoded as UTF-8, and its hash is the SHA-256 of exactly
those bytes. Because `prev` is inside, each hash covers every entry before it.

In the log each entry is one line, itself canonical JSON: `{"entry":<canonical>,"hash":"<hex>"}`.
The entry's bytes sit at a fixed offset from both ends of the line, so a verifier hashes them
without parsing or re-encoding anything; and everything after `data` (kind, prev, seq, shots,
task, thread, time, in key order) has values of a fixed shape, so the verifier reads the chain
fields from the line's tail with one regular expression (`chain_tail`) instead of decoding the
whole entry. The tail starts at the last `,"kind":"` of the line: nothing after `data` can
contain that text, whatever `data` holds.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
LINE_PREFIX = b'{"entry":'
HASH_INFIX = b',"hash":"'
# ,"hash":"<64 hex>"}
LINE_SUFFIX_BYTES = len(HASH_INFIX) + 64 + 2
# The chain fields follow `data`; this key is where they start (the last occurrence in a line).
TAIL_MARK = b',"kind":"'
HEX64 = re.compile(r"[0-9a-f]{64}")
ROLE_NAME = re.compile(r"[a-z][a-z_]{0,31}")


class Kind(enum.StrEnum):
    """What an entry records. The data each one carries is in `REQUIRED` (and `Kind` docs)."""

    TASK_SUBMITTED = "task_submitted"  # who asked for what: {type, request, by}
    TASK_STARTED = "task_started"  # a worker took it
    MODEL_TURN = "model_turn"  # {text, input_tokens, output_tokens}; shot "seen"
    ACTION_PROPOSED = "action_proposed"  # {action_id, tool, member, input, description, reason}
    APPROVAL_REQUESTED = "approval_requested"  # {action_id, approval_id}; "judged", "annotated"
    APPROVAL_DECIDED = "approval_decided"  # {action_id, decision, by, device, reason}
    ACTION_PERFORMED = "action_performed"  # {action_id, outcome, result}; shot "after"
    SANDBOX_COMMAND = "sandbox_command"  # {command, exit_code, outcome}
    TASK_FINISHED = "task_finished"  # {status, reason}
    SCREENSHOTS_PRUNED = "screenshots_pruned"  # retention: {older_than_days, shots: [sha, ...]}
    LOG_REPAIRED = "log_repaired"  # a torn last line set aside: {offset, bytes, sha256, saved_as}


# Keys `data` must have, per kind; anything else is kept as given.
REQUIRED: Mapping[Kind, tuple[str, ...]] = {
    Kind.TASK_SUBMITTED: ("type", "request"),
    Kind.TASK_STARTED: (),
    Kind.MODEL_TURN: ("text",),
    Kind.ACTION_PROPOSED: ("action_id", "tool", "description"),
    Kind.APPROVAL_REQUESTED: ("action_id",),
    Kind.APPROVAL_DECIDED: ("action_id", "decision", "by"),
    Kind.ACTION_PERFORMED: ("action_id", "outcome"),
    Kind.SANDBOX_COMMAND: ("command", "exit_code", "outcome"),
    Kind.TASK_FINISHED: ("status",),
    Kind.SCREENSHOTS_PRUNED: ("older_than_days", "shots"),
    Kind.LOG_REPAIRED: ("offset", "bytes", "sha256"),
}


class Role(enum.StrEnum):
    """Which screenshot of a step a hash is: the names the timeline shows."""

    SEEN = "seen"  # what the model saw before it chose the action
    JUDGED = "judged"  # what the person was shown when asked
    ANNOTATED = "annotated"  # the same with the action drawn on it
    AFTER = "after"  # the screen just after the action ran


@dataclass(frozen=True, order=True)
class Head:
    """The last entry's sequence number and hash: publish it, check a log extends it later."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Head:
        """`SEQ:HASH` as printed by `str(head)`.

        Raises:
            ValueError: not two parts, SEQ not a number or HASH not 64 lowercase hex digits.
        """
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or not HEX64.fullmatch(digest):
            raise ValueError(f"a head is SEQ:HASH (like 42:{'ab' * 32}), got {text!r}")
        return cls(int(seq), digest)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


EMPTY_HEAD = Head(0, GENESIS)


@dataclass(frozen=True)
class Entry:
    """One entry read back from the log, with its hash."""

    seq: int
    prev: str
    time: str
    task: int | None
    thread: int | None
    kind: Kind
    data: Mapping[str, Any]
    shots: Mapping[str, str]
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "prev": self.prev,
            "time": self.time,
            "task": self.task,
            "thread": self.thread,
            "kind": self.kind.value,
            "data": dict(self.data),
            "shots": dict(self.shots),
            "hash": self.hash,
        }


def canonical(value: Any) -> bytes:
    """The canonical JSON bytes of `value` (sorted keys, no spaces, UTF-8, no NaN)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def now_iso(when_s: float) -> str:
    return datetime.fromtimestamp(when_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(fields: Mapping[str, Any]) -> tuple[bytes, str]:
    """The log line (with its newline) and hash of an entry given as its eight fields."""
    body = canonical(fields)
    digest = hashlib.sha256(body).hexdigest()
    return LINE_PREFIX + body + HASH_INFIX + digest.encode("ascii") + b'"}\n', digest


def split(line: bytes) -> tuple[bytes, str] | None:
    """The entry's canonical bytes and the hash stored beside them; None when the line does not
    have the log's layout. `line` is without its newline."""
    if (
        line[:9] != LINE_PREFIX
        or line[-LINE_SUFFIX_BYTES:-66] != HASH_INFIX
        or line[-2:] != b'"}'
        or len(line) < len(LINE_PREFIX) + LINE_SUFFIX_BYTES + 2
    ):
        return None
    return line[9:-LINE_SUFFIX_BYTES], line[-66:-2].decode("ascii", "replace")


def split_raw(line: bytes) -> tuple[bytes, bytes] | None:
    """`split` with the stored hash left as bytes (for verify's loop)."""
    if (
        line[:9] != LINE_PREFIX
        or line[-LINE_SUFFIX_BYTES:-66] != HASH_INFIX
        or line[-2:] != b'"}'
        or len(line) < len(LINE_PREFIX) + LINE_SUFFIX_BYTES + 2
    ):
        return None
    return line[9:-LINE_SUFFIX_BYTES], line[-66:-2]


# A decoder made once, called on str: json.loads would detect the encoding on every call.
_raw_decode = json.JSONDecoder().raw_decode


def _decode(text: str) -> Any:
    value, end = _raw_decode(text)
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value


# The tail of a canonical entry, after `data`: every value has a fixed shape, so one regular
# expression reads it (several times faster than decoding it as JSON, which verify would do
# once per entry).
_TAIL = re.compile(
    rb'"kind":"([a-z_]{1,40})","prev":"([0-9a-f]{64})","seq":(0|[1-9][0-9]{0,17}),'
    rb'"shots":\{((?:"[a-z][a-z_]{0,31}":"[0-9a-f]{64}")?(?:,"[a-z][a-z_]{0,31}":"[0-9a-f]{64}")*)\},'
    rb'"task":(null|-?[0-9]{1,18}),"thread":(null|-?[0-9]{1,18}),"time":"([0-9T:.Z+-]{1,40})"\}'
)
_SHOT = re.compile(rb'"([a-z][a-z_]{0,31})":"([0-9a-f]{64})"')


def chain_tail(body: bytes) -> tuple[bytes, ...] | None:
    """The raw bytes of kind, prev, seq, shots (inside the braces), task, thread and time; None
    when the tail is not in canonical shape. What verify's loop reads, converting only what it
    needs."""
    start = body.rfind(TAIL_MARK)
    found = _TAIL.fullmatch(body, start + 1) if start >= 0 else None
    return found.groups() if found is not None else None


def shot_hashes(raw: bytes) -> list[str]:
    """The hashes in the raw `shots` of `chain_tail`."""
    return [digest.decode() for _, digest in _SHOT.findall(raw)]


def chain_fields(body: bytes) -> dict[str, Any] | None:
    """kind, prev, seq, shots, task, thread and time read from an entry's tail, or None."""
    tail = chain_tail(body)
    if tail is None:
        return None
    kind, prev, seq, shots, task, thread, time = tail
    return {
        "kind": kind.decode(),
        "prev": prev.decode(),
        "seq": int(seq),
        "shots": {r.decode(): h.decode() for r, h in _SHOT.findall(shots)} if shots else {},
        "task": None if task == b"null" else int(task),
        "thread": None if thread == b"null" else int(thread),
        "time": time.decode(),
    }


def data_of(body: bytes) -> Any:
    """The `data` object of an entry whose chain fields parsed (raises ValueError if bad)."""
    return _decode(body[len(b'{"data":') : body.rfind(TAIL_MARK)].decode("utf-8"))


def decode(line: bytes) -> Entry | None:
    """The entry on a log line (without its newline), fully parsed; None if it does not parse.

    The hash is the one stored on the line; `verify` is what checks it.
    """
    parts = split(line)
    if parts is None:
        return None
    body, digest = parts
    fields = chain_fields(body)
    try:
        data = data_of(body) if fields is not None and body.startswith(b'{"data":') else None
    except ValueError:
        return None
    if fields is None or type(data) is not dict:
        return None
    try:
        kind = Kind(fields["kind"])
    except ValueError:
        return None
    return Entry(
        seq=fields["seq"],
        prev=fields["prev"],
        time=fields["time"],
        task=fields["task"],
        thread=fields["thread"],
        kind=kind,
        data=data,
        shots=fields["shots"],
        hash=digest,
    )
