"""One line of a sandbox's network log: what was asked, whether it went through, bytes each way."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class EgressRecord:
    """One request through the egress proxy (a plain HTTP request or a CONNECT tunnel)."""

    time: float  # epoch seconds when the request arrived
    domain: str  # the name asked for, as the sandbox wrote it
    port: int
    method: str  # "CONNECT", "GET", ...; "" when the request could not be read
    allowed: bool
    reason: str = ""  # why it was refused (or why an allowed request failed)
    bytes_up: int = 0  # sandbox -> destination
    bytes_down: int = 0  # destination -> sandbox
    status: int | None = None  # what the proxy itself answered (200, 403, 502, ...)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EgressRecord:
        return cls(
            time=float(data["time"]),
            domain=str(data["domain"]),
            port=int(data["port"]),
            method=str(data.get("method", "")),
            allowed=bool(data["allowed"]),
            reason=str(data.get("reason", "")),
            bytes_up=int(data.get("bytes_up", 0)),
            bytes_down=int(data.get("bytes_down", 0)),
            status=None if data.get("status") is None else int(data["status"]),
        )

    @classmethod
    def from_json(cls, line: str) -> EgressRecord:
        return cls.from_dict(json.loads(line))
