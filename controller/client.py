"""A small HTTP client for the controller's API, used by the CLI, the tests and the benchmark.

client = Client.connect()          # this machine: owner token from the data directory
task = client.submit(["make", "test"], thread="ci", folders=[("~/app", "rw")])
for event in client.events(task_id=task["id"]):
    ...
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from controller.local import local_data_dir, local_server_url, read_owner_token

RECONNECT_S = 1.0
DEFAULT_SERVER = "http://127.0.0.1:8420"


class ClientError(Exception):
    """A request failed; `code` is the API's error code (or a local one), `status` the HTTP one."""

    def __init__(self, message: str, *, code: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]


def _trust(server: str, data_dir: Path) -> ssl.SSLContext | bool:
    """The system's authorities, plus this machine's own (`dispatch tls init`) when it has one:
    the local controller over HTTPS presents a certificate that authority signed."""
    ca = data_dir / "tls" / "ca.crt"
    if not server.startswith("https://") or not ca.is_file():
        return True
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(ca))
    return context


class Client:
    """Calls the API with a bearer token; raises `ClientError` with the API's message."""

    def __init__(
        self,
        server: str,
        token: str | None,
        *,
        timeout_s: float = 30.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.server = server.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.server, headers=headers, timeout=timeout_s, verify=verify
        )

    @classmethod
    def connect(
        cls,
        server: str | None = None,
        token: str | None = None,
        environ: Mapping[str, str] = os.environ,
        *,
        data_dir: Path | None = None,
    ) -> Client:
        """From flags, then DISPATCH_SERVER/DISPATCH_TOKEN, then the local controller's files.

        The owner token in the data directory (`data_dir`, else the one `local_data_dir` finds)
        is only sent to the local controller: to the URL it recorded in `controller.json`, or to
        the default URL when none is recorded. A server named with --server or DISPATCH_SERVER
        gets no token it was not given.

        Raises:
            ClientError: `no_token` when no token may be sent.
        """
        named = server or environ.get("DISPATCH_SERVER") or None
        token = token or environ.get("DISPATCH_TOKEN") or None
        data_dir = data_dir.expanduser().absolute() if data_dir else local_data_dir(environ)
        local = local_server_url(data_dir) or DEFAULT_SERVER
        server = named or local
        if token is None:
            if named is not None and named.rstrip("/") != local.rstrip("/"):
                raise ClientError(
                    f"no token for {named}: this machine's owner token is only sent to the local "
                    f"controller ({local}); pass --token (or DISPATCH_TOKEN) with a device "
                    "token from `dispatch pair`",
                    code="no_token",
                )
            token = read_owner_token(data_dir)
            if token is None:
                raise ClientError(
                    f"no token: none given and no owner token in {data_dir}; pass --token (or "
                    "DISPATCH_TOKEN), start `dispatch serve` on this machine first, or name "
                    "the data directory it uses with --data-dir",
                    code="no_token",
                )
        return cls(server, token, verify=_trust(server, data_dir))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- calls ---------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(
                f"cannot reach the controller at {self.server} ({exc}); is `dispatch serve` "
                "running? (choose another with --server or DISPATCH_SERVER)",
                code="unreachable",
            ) from None
        if response.status_code >= 400:
            raise _error(response)
        return response.json() if response.content else None

    def submit(
        self,
        command: Sequence[str],
        *,
        thread: str = "default",
        folders: Sequence[tuple[str, str]] = (),
        network: str | dict[str, Any] = "none",
        timeout_s: float | None = None,
        agent: dict[str, Any] | None = None,
        isolation: str = "container",
    ) -> dict[str, Any]:
        """Queue `command`, or with `agent` (prompt, tools, ...) an agent task."""
        body: dict[str, Any] = {
            "thread": thread,
            "folders": [{"path": p, "mode": m} for p, m in folders],
            "network": network,
            "isolation": isolation,
        }
        if agent is not None:
            body.update({"kind": "agent", **{k: v for k, v in agent.items() if v is not None}})
        else:
            body.update({"kind": "command", "command": list(command)})
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        task: dict[str, Any] = self.request("POST", "/api/v1/tasks", json=body)
        return task

    def task(self, task_id: int) -> dict[str, Any]:
        task: dict[str, Any] = self.request("GET", f"/api/v1/tasks/{task_id}")
        return task

    def tasks(self, **filters: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        tasks: list[dict[str, Any]] = self.request("GET", "/api/v1/tasks", params=params)
        return tasks

    def cancel(self, task_id: int) -> dict[str, Any]:
        task: dict[str, Any] = self.request("POST", f"/api/v1/tasks/{task_id}/cancel")
        return task

    def retry(self, task_id: int) -> dict[str, Any]:
        task: dict[str, Any] = self.request("POST", f"/api/v1/tasks/{task_id}/retry")
        return task

    def pairing_code(self) -> dict[str, Any]:
        code: dict[str, Any] = self.request("POST", "/api/v1/pairing-codes")
        return code

    def devices(self) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = self.request("GET", "/api/v1/devices")
        return devices

    def revoke(self, device_id: int) -> dict[str, Any]:
        device: dict[str, Any] = self.request("DELETE", f"/api/v1/devices/{device_id}")
        return device

    def events(
        self, *, task_id: int | None = None, after: int | None = None, reconnect: bool = True
    ) -> Iterator[Event]:
        """Server-Sent Events, resuming after a dropped connection without gaps or repeats."""
        path = f"/api/v1/tasks/{task_id}/events" if task_id is not None else "/api/v1/events"
        last_id = after
        while True:
            headers = {} if last_id is None else {"Last-Event-ID": str(last_id)}
            try:
                with self._http.stream(
                    "GET", path, headers=headers, timeout=httpx.Timeout(30.0, read=None)
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise _error(response)
                    for event in parse_sse(response.iter_lines()):
                        last_id = event.id
                        yield event
            except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
                if not reconnect:
                    raise ClientError(
                        f"lost the event stream from {self.server} ({exc})", code="unreachable"
                    ) from None
            if not reconnect:
                return
            time.sleep(RECONNECT_S)


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Turn SSE lines into events (comments and `retry:` lines are skipped)."""
    event_id: str | None = None
    kind = "message"
    data: list[str] = []
    for line in lines:
        if line == "":
            if data and event_id is not None:
                yield Event(id=int(event_id), kind=kind, data=json.loads("\n".join(data)))
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            event_id = value
        elif name == "event":
            kind = value
        elif name == "data":
            data.append(value)


def _error(response: httpx.Response) -> ClientError:
    try:
        body = response.json()["error"]
        return ClientError(body["message"], code=body["code"], status=response.status_code)
    except (ValueError, KeyError, TypeError):
        return ClientError(
            f"the controller answered {response.status_code}: {response.text[:200]}",
            code="http_error",
            status=response.status_code,
        )
