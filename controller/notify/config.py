"""The `[notify]` tables of the configuration file, parsed and checked (see controller.notify)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controller.errors import ConfigError

NOTIFY_EVENTS = ("approval.requested", "task.succeeded", "task.failed", "task.interrupted")


@dataclass(frozen=True)
class WebPushSettings:
    """`[notify.webpush]`: Web Push to the devices that subscribed in the console."""

    enabled: bool = True
    # The contact a push service may write to about this sender (VAPID `sub`); None: derived
    # from public_url.
    subject: str | None = None
    # Endpoints must be https:// (every browser's push service is); tests and a push service
    # on this machine need http://.
    allow_http_endpoints: bool = False
    events: tuple[str, ...] = NOTIFY_EVENTS


@dataclass(frozen=True)
class NtfySettings:
    """`[notify.ntfy]`: one ntfy topic that every notification is published to."""

    url: str
    topic: str
    token: str | None = field(default=None, repr=False)
    events: tuple[str, ...] = NOTIFY_EVENTS


@dataclass(frozen=True)
class WebhookSettings:
    """`[notify.webhook]`: a JSON POST to one URL, signed when a secret is set."""

    url: str
    secret: str | None = field(default=None, repr=False)
    events: tuple[str, ...] = NOTIFY_EVENTS


@dataclass(frozen=True)
class NotifySettings:
    """`[notify]`: where notifications go (see controller.notify)."""

    webpush: WebPushSettings = field(default_factory=WebPushSettings)
    ntfy: NtfySettings | None = None
    webhook: WebhookSettings | None = None


NOTIFY_KEYS: dict[str, dict[str, type]] = {
    "webpush": {"enabled": bool, "subject": str, "allow_http_endpoints": bool, "events": list},
    "ntfy": {"url": str, "topic": str, "token": str, "events": list},
    "webhook": {"url": str, "secret": str, "events": list},
}
NTFY_TOPIC = re.compile(r"[-_A-Za-z0-9]{1,64}")


def parse_notify(raw: Any, file_path: Path) -> NotifySettings:
    """The `[notify]` tables, each checked for unknown keys, types and usable URLs."""
    if raw is None:
        return NotifySettings()
    if not isinstance(raw, dict):
        raise ConfigError(
            f"setting notify (from {file_path}) must be a table; write [notify.ntfy] and "
            "[notify.webhook] sections"
        )
    unknown = set(raw) - set(NOTIFY_KEYS)
    if unknown:
        raise ConfigError(
            f"setting notify (from {file_path}) has unknown notifiers {sorted(unknown)}; use "
            f"{', '.join(f'[notify.{n}]' for n in NOTIFY_KEYS)}"
        )
    tables: dict[str, dict[str, Any]] = {}
    for name, keys in NOTIFY_KEYS.items():
        table = raw.get(name)
        if table is None:
            continue
        where = f"[notify.{name}] (in {file_path})"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table of settings")
        extra = set(table) - set(keys)
        if extra:
            raise ConfigError(
                f"{where} has unknown keys {sorted(extra)}; use {', '.join(sorted(keys))}"
            )
        for key, kind in keys.items():
            if key in table and (
                not isinstance(table[key], kind) or (kind is not bool and table[key] == "")
            ):
                shown = "true or false" if kind is bool else "a list" if kind is list else "text"
                raise ConfigError(f"{where} {key} = {table[key]!r} must be {shown}")
        if "events" in table:
            bad = [e for e in table["events"] if e not in NOTIFY_EVENTS]
            if bad or not table["events"]:
                raise ConfigError(
                    f"{where} events = {table['events']!r} must name some of: "
                    + ", ".join(NOTIFY_EVENTS)
                )
            table = {**table, "events": tuple(table["events"])}
        tables[name] = table
    ntfy = webhook = None
    if "ntfy" in tables:
        table = tables["ntfy"]
        where = f"[notify.ntfy] (in {file_path})"
        for key in ("url", "topic"):
            if key not in table:
                raise ConfigError(
                    f'{where} needs {key}; write url = "https://ntfy.sh" and topic = "NAME"'
                )
        check_http_url(table["url"], f"{where} url")
        if not NTFY_TOPIC.fullmatch(table["topic"]):
            raise ConfigError(
                f"{where} topic = {table['topic']!r} must be 1-64 letters, digits, - or _ (as "
                "ntfy requires); on a public server choose one nobody can guess"
            )
        ntfy = NtfySettings(**table)
    if "webhook" in tables:
        table = tables["webhook"]
        where = f"[notify.webhook] (in {file_path})"
        if "url" not in table:
            raise ConfigError(f'{where} needs url; write url = "https://example.com/hook"')
        check_http_url(table["url"], f"{where} url")
        webhook = WebhookSettings(**table)
    webpush = WebPushSettings(**tables.get("webpush", {}))
    if webpush.subject is not None and not webpush.subject.startswith(("mailto:", "https://")):
        raise ConfigError(
            f"[notify.webpush] (in {file_path}) subject = {webpush.subject!r} must be a "
            "mailto: or https:// address push services can reach you at, like "
            '"mailto:me@example.com"'
        )
    return NotifySettings(webpush=webpush, ntfy=ntfy, webhook=webhook)


def check_http_url(url: str, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where} = {url!r} must be a full http:// or https:// URL")
    if parts.username or parts.password:
        raise ConfigError(
            f"{where} = {url!r} carries credentials; remove them (for ntfy, set token)"
        )
