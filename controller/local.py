"""Files a local controller keeps in its data directory, read by the CLI on the same machine.

    owner-token       the token of the local CLI (mode 0600); no pairing needed on this machine
    controller.json   the URL the running controller listens on

Kept apart from the server modules so client commands start without importing them.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from controller.paths import default_config_dir, default_data_dir

OWNER_TOKEN_FILE = "owner-token"
SERVER_FILE = "controller.json"


def local_data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The data directory a local controller uses: DISPATCH_DATA_DIR, config.toml, default."""
    if environ.get("DISPATCH_DATA_DIR"):
        return Path(environ["DISPATCH_DATA_DIR"]).expanduser().absolute()
    config = Path(environ.get("DISPATCH_CONFIG") or default_config_dir(environ) / "config.toml")
    try:
        configured = tomllib.loads(config.expanduser().read_text()).get("data_dir")
    except (OSError, tomllib.TOMLDecodeError):
        configured = None
    if isinstance(configured, str):
        return Path(configured).expanduser().absolute()
    return default_data_dir(environ)


def local_server_url(data_dir: Path) -> str | None:
    """The URL a running local controller recorded in its data directory."""
    try:
        url = json.loads((data_dir / SERVER_FILE).read_text()).get("url")
    except (OSError, ValueError):
        return None
    return url if isinstance(url, str) else None


def read_owner_token(data_dir: Path) -> str | None:
    """The owner token stored in `data_dir`, or None when there is none yet."""
    try:
        text = (data_dir / OWNER_TOKEN_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def write_private(path: Path, text: str) -> None:
    """Write `text` so that only this user can read it, replacing `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
