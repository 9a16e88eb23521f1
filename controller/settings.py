"""Settings, read once at start-up into a frozen object: flags, then `DISPATCH_*`, then config.toml.

    host = "127.0.0.1"
    port = 8420
    max_concurrent_tasks = 2

    [[folders]]
    path = "~/Projects"
    mode = "rw"

    [notify.ntfy]
    url = "https://ntfy.sh"
    topic = "my-dispatch"

A wrong value raises `ConfigError` naming the setting, where it came from, and the fix.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sandbox
from computer_use.approval.policy import Policy
from computer_use.errors import PolicyError
from controller.errors import ConfigError
from controller.notify.config import NotifySettings, parse_notify
from controller.paths import default_cache_dir, default_config_dir, default_data_dir
from sandbox.egress import EgressPolicy, PolicyInvalid
from sandbox.mounts import validate_mount
from sandbox.ownership import parse_user

ENV_PREFIX = "DISPATCH_"
DEFAULT_MODEL = "claude-sonnet-4-6"
MIB = 1024 * 1024
MODES = ("ro", "rw")
# Presets every controller has; `[network.presets]` in config.toml adds to or replaces them.
DEFAULT_PRESETS: dict[str, tuple[str, ...]] = {
    "python-packages": ("pypi.org", "files.pythonhosted.org"),
}
PRESET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class FolderGrant:
    """A host folder tasks may name (it or anything inside it), with the widest mode allowed.

    When grants nest, the deepest one covering a folder decides its mode and git_writable.
    """

    path: Path
    mode: str = "ro"
    # Whether tasks may write the `.git` folders inside (hooks and config run on the host).
    git_writable: bool = False

    @property
    def read_only(self) -> bool:
        return self.mode == "ro"


@dataclass(frozen=True)
class Settings:
    """Everything the controller needs, validated. Build it with `load_settings`."""

    host: str = "127.0.0.1"
    port: int = 8420
    data_dir: Path = field(default_factory=default_data_dir)
    config_dir: Path = field(default_factory=default_config_dir)
    # `dispatch run`'s template databases: a task that could write them could plant queued
    # tasks in every later run's database.
    cache_dir: Path = field(default_factory=default_cache_dir)
    config_file: Path | None = None
    database_url: str | None = None
    max_concurrent_tasks: int = 2
    sandbox_backend: str = "docker"
    sandbox_image: str = sandbox.DEFAULT_IMAGE
    folders: tuple[FolderGrant, ...] = ()
    # uid:gid every sandbox runs as; None: the owner of the grant holding the task's folders.
    sandbox_user: tuple[int, int] | None = None
    public_url: str | None = None
    # HTTPS: a certificate (PEM, with its chain) and its key; `dispatch tls init` makes both.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_body_bytes: int = 1 * MIB
    default_task_timeout_s: float = 600.0
    max_task_timeout_s: float = 24 * 3600.0
    log_level: str = "info"
    # The owner's decision: whether a device (not only the owner) may ask for network "open".
    allow_open_network: bool = False
    min_free_mb: int = 512
    # The HTTP edge (controller/api/edge.py): what a client may hold without a token.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 5.0
    max_connections: int = 200
    # None: a quarter of max_connections, at least 4 (see connections_per_client).
    max_connections_per_client: int | None = None
    trusted_proxies: tuple[str, ...] = ()
    # The agent (see computer_use): the model, the screen, and how long a person has to decide.
    model: str = DEFAULT_MODEL
    host_display: str | None = None
    desktop_image: str = "dispatch/desktop:latest"
    approval_timeout_s: float = 300.0
    # Audit screenshots older than this are removed at start (entries and hashes stay); None:
    # kept forever.
    audit_retention_days: float | None = None
    max_agent_steps: int = 200
    # From ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL, as the official client reads them.
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_base_url: str | None = None
    # The config file's `[policy]` table (computer_use.approval.policy's format); None: default.
    policy: dict[str, Any] | None = None
    # `dispatch run`: no person to ask, so every ask is a deny and a denial ends the task. Set
    # by that command only, never by a config file or the environment.
    headless: bool = False
    # Values written as `***` in the audit log (a headless run's secrets); never configured.
    audit_mask: tuple[str, ...] = field(default=(), repr=False)
    notify: NotifySettings = field(default_factory=NotifySettings)
    # Network allowlists by name (`[network.presets]`), usable in a task's allow list.
    network_presets: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_PRESETS)
    )
    # Names the egress proxy reaches at a given address (`network_resolve`, like curl
    # --resolve): the owner's permission to reach that address even if private or local.
    network_resolve: Mapping[str, str] = field(default_factory=dict)

    @property
    def connections_per_client(self) -> int:
        """How many connections one client address may hold open at once."""
        if self.max_connections_per_client is not None:
            return self.max_connections_per_client
        return min(self.max_connections, max(4, self.max_connections // 4))

    @property
    def effective_database_url(self) -> str:
        """The configured database, or SQLite in the data directory (its path escaped, so a
        `?` or `#` in it is part of the file name, not the URL's query)."""
        if self.database_url:
            return self.database_url
        from sqlalchemy.engine import URL  # loaded by what opens the database anyway

        path = str(self.data_dir / "dispatch.db")
        return URL.create("sqlite", database=path).render_as_string(hide_password=False)

    @property
    def url(self) -> str:
        """Where people reach this controller: `public_url`, else the listening address."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def tls(self) -> bool:
        """Whether `dispatch serve` speaks HTTPS (both tls_cert and tls_key are set)."""
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None for PostgreSQL or an in-memory database."""
        if not self.database_url:
            # Without parsing a URL: SQLAlchemy is not loaded yet when `dispatch run` checks
            # its task file's folders against the data directory.
            return Path(os.path.abspath((self.data_dir / "dispatch.db").expanduser()))
        from sqlalchemy.engine import make_url

        url = make_url(self.effective_database_url)
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return Path(os.path.abspath(Path(url.database).expanduser()))

    @property
    def protected(self) -> dict[Path, str]:
        """Dispatch's own state, never mountable into a sandbox: folder -> what it holds.

        The folders of the config file in use and of the SQLite database count wherever they
        are: a task that could write either could grant itself any folder.
        """
        found = {
            self.data_dir: "Dispatch's data directory",
            self.config_dir: "Dispatch's default config directory",
            self.cache_dir: "Dispatch's cache (the template databases of `dispatch run`)",
        }
        if self.config_file is not None:
            found.setdefault(self.config_file.parent, f"the config file {self.config_file}")
        if self.sqlite_path is not None:
            found.setdefault(self.sqlite_path.parent, f"the database {self.sqlite_path}")
        return found

    @property
    def protected_paths(self) -> tuple[Path, ...]:
        return tuple(self.protected)


# Settings a person may set, with how to parse a text value (from env or a flag).
def _text(value: str) -> str:
    return value


def _path(value: str) -> Path:
    return Path(value).expanduser()


BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _bool(value: str) -> bool:
    return BOOL_WORDS[value.strip().lower()]


class _Invalid(ValueError):
    """A value a parser refused with its own explanation."""


def _user(value: str) -> tuple[int, int]:
    try:
        return parse_user(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _addresses(value: Any) -> tuple[str, ...]:
    """A list from config.toml, or comma-separated text from the environment or a flag."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise TypeError("not a list of addresses")
    return tuple(i.strip() for i in items if i.strip())


PARSERS: dict[str, Callable[[str], Any]] = {
    "host": _text,
    "port": int,
    "data_dir": _path,
    "database_url": _text,
    "max_concurrent_tasks": int,
    "sandbox_backend": _text,
    "sandbox_image": _text,
    "sandbox_user": _user,
    "public_url": _text,
    "tls_cert": _path,
    "tls_key": _path,
    "max_body_bytes": int,
    "default_task_timeout_s": float,
    "max_task_timeout_s": float,
    "log_level": _text,
    "allow_open_network": _bool,
    "min_free_mb": int,
    "header_timeout_s": float,
    "body_timeout_s": float,
    "idle_timeout_s": float,
    "max_connections": int,
    "max_connections_per_client": int,
    "trusted_proxies": _addresses,
    "model": _text,
    "host_display": _text,
    "desktop_image": _text,
    "approval_timeout_s": float,
    "audit_retention_days": float,
    "max_agent_steps": int,
}
FILE_ONLY = ("folders", "policy", "notify", "network", "network_resolve")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def config_path(flag: str | Path | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file to read and whether it was named explicitly (so must exist)."""
    if flag:
        return Path(flag).expanduser(), True
    if environ.get(ENV_PREFIX + "CONFIG"):
        return Path(environ[ENV_PREFIX + "CONFIG"]).expanduser(), True
    return default_config_dir(environ) / "config.toml", False


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] = os.environ,
    *,
    config: str | Path | None = None,
) -> Settings:
    """Merge flags > environment > config file > defaults, and validate the result.

    Args:
        flags: values given on the command line; None values are ignored.
        environ: the environment to read `DISPATCH_*` from.
        config: the `--config` flag, if given.

    Raises:
        ConfigError: a value is wrong; the message names the setting, its source and the fix.
    """
    file_path, explicit = config_path(config, environ)
    file_values = _read_config_file(file_path, explicit)
    raw: dict[str, tuple[Any, str]] = {}
    for key, value in file_values.items():
        raw[key] = (value, f"{file_path}")
    for key in PARSERS:
        env_name = ENV_PREFIX + key.upper()
        if environ.get(env_name, "") != "":
            raw[key] = (environ[env_name], env_name)
    for key, value in (flags or {}).items():
        if value is not None:
            raw[key] = (value, "--" + key.replace("_", "-"))

    values: dict[str, Any] = {}
    for key, (value, source) in raw.items():
        if key in FILE_ONLY:
            continue
        values[key] = _parse(key, value, source)
    config_dir = default_config_dir(environ)
    data_dir = values.get("data_dir") or default_data_dir(environ)
    values["data_dir"] = Path(os.path.abspath(data_dir))
    settings = Settings(
        anthropic_api_key=environ.get("ANTHROPIC_API_KEY") or None,
        anthropic_base_url=environ.get("ANTHROPIC_BASE_URL") or None,
        config_dir=config_dir,
        cache_dir=default_cache_dir(environ),
        config_file=Path(os.path.abspath(file_path)) if file_path.exists() else None,
        **values,
    )
    _validate(settings, raw)
    folders = _folders(file_values.get("folders", []), file_path, settings)
    return replace(
        settings,
        folders=folders,
        policy=_policy(file_values.get("policy"), file_path),
        notify=parse_notify(file_values.get("notify"), file_path),
        network_presets=_presets(file_values.get("network"), file_path),
        network_resolve=_resolve(file_values.get("network_resolve"), file_path),
    )


def _presets(raw: Any, file_path: Path) -> dict[str, tuple[str, ...]]:
    """`[network.presets]`: name = ["domain", ...], checked like a task's allow list."""
    presets = dict(DEFAULT_PRESETS)
    if raw is None:
        return presets
    where = f"config file {file_path}: [network]"
    if not isinstance(raw, dict) or set(raw) - {"presets"}:
        raise ConfigError(f"{where} may hold only a presets table: [network.presets]")
    table = raw.get("presets", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}.presets must be a table of name = [domains]")
    for name, domains in table.items():
        if not PRESET_NAME.match(name):
            raise ConfigError(
                f"{where}.presets has the name {name!r}; use lower-case letters, digits, - and _ "
                "(a name without dots, so it is never taken for a domain)"
            )
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            raise ConfigError(
                f'{where}.presets.{name} must be a list of domains, e.g. ["pypi.org"]'
            )
        try:
            EgressPolicy.build(domains)
        except PolicyInvalid as exc:
            raise ConfigError(f"{where}.presets.{name}: {exc}") from None
        presets[name] = tuple(domains)
    return presets


def _resolve(raw: Any, file_path: Path) -> dict[str, str]:
    """`network_resolve = {"name" = "address"}`, checked."""
    if raw is None:
        return {}
    where = f"config file {file_path}: network_resolve"
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError(
            f'{where} must be a table of name = "address", e.g. {{"intranet.test" = "10.0.0.5"}}'
        )
    try:
        EgressPolicy.build([], raw)
    except PolicyInvalid as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return dict(raw)


def expand_allow(entries: Iterable[str], settings: Settings) -> tuple[str, ...]:
    """A task's allow list with preset names replaced by their domains, checked, in order.

    Raises:
        PolicyInvalid: an entry is neither a preset nor a domain (names the presets known).
    """
    expanded: list[str] = []
    for entry in entries:
        name = entry.strip()
        if name in settings.network_presets:
            expanded.extend(settings.network_presets[name])
        elif "." not in name.split(":")[0]:
            known = ", ".join(sorted(settings.network_presets)) or "none"
            raise PolicyInvalid(
                f"{name!r} is neither a domain nor a network preset (presets: {known}); write "
                "a domain like example.com, or add the preset under [network.presets] in "
                "config.toml"
            )
        else:
            expanded.append(name)
    unique = tuple(dict.fromkeys(expanded))
    EgressPolicy.build(unique)  # raises PolicyInvalid naming the bad entry
    return unique


def _policy(raw: Any, file_path: Path) -> dict[str, Any] | None:
    """The `[policy]` table, checked now so a mistake stops start-up, not the first agent task."""
    if raw is None:
        return None
    try:
        Policy.parse(raw, where="[policy]")
    except PolicyError as exc:
        raise ConfigError(f"config file {file_path}: {exc}") from None
    return dict(raw)


def _read_config_file(path: Path, explicit: bool) -> dict[str, Any]:
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path} does not exist; create it or fix --config")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config file {path} cannot be read ({exc}); fix its permissions"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML ({exc}); fix the syntax") from None
    known = set(PARSERS) | set(FILE_ONLY)
    for key in data:
        if key not in known:
            raise ConfigError(
                f"config file {path} has an unknown setting {key!r}; "
                f"remove it or use one of: {', '.join(sorted(known))}"
            )
    return data


def _parse(key: str, value: Any, source: str) -> Any:
    parser = PARSERS[key]
    if parser is _bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
            return _bool(value)
        raise ConfigError(f"setting {key} (from {source}) = {value!r} must be true or false")
    expected = {int: "a whole number", float: "a number", _addresses: "a list of addresses"}.get(
        parser, "text"
    )
    if isinstance(value, bool) or (
        parser in (int, float) and not isinstance(value, (str, int, float))
    ):
        raise ConfigError(f"setting {key} (from {source}) = {value!r} must be {expected}")
    if parser in (_text, _user) and not isinstance(value, str):
        raise ConfigError(f"setting {key} (from {source}) = {value!r} must be text; quote it")
    try:
        return parser(str(value)) if parser in (_path, _text) else parser(value)
    except _Invalid as exc:
        raise ConfigError(f"setting {key} (from {source}) = {value!r} {exc}") from None
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting {key} (from {source}) = {value!r} is not {expected}; fix the value"
        ) from None


def _validate(settings: Settings, raw: Mapping[str, tuple[Any, str]]) -> None:
    def where(key: str) -> str:
        return f"setting {key} (from {raw[key][1]})" if key in raw else f"setting {key}"

    if not 1 <= settings.port <= 65535:
        raise ConfigError(f"{where('port')} = {settings.port} must be between 1 and 65535")
    if not settings.host or any(c.isspace() for c in settings.host):
        raise ConfigError(f"{where('host')} = {settings.host!r} must be an address like 127.0.0.1")
    if not 1 <= settings.max_concurrent_tasks <= 64:
        raise ConfigError(
            f"{where('max_concurrent_tasks')} = {settings.max_concurrent_tasks} must be "
            "between 1 and 64; the machine's core count is a good choice"
        )
    if settings.sandbox_backend not in sandbox.BACKENDS:
        raise ConfigError(
            f"{where('sandbox_backend')} = {settings.sandbox_backend!r} is unknown; "
            f"use one of: {', '.join(sorted(sandbox.BACKENDS))}"
        )
    if not settings.sandbox_image.strip():
        raise ConfigError(f"{where('sandbox_image')} is empty; use {sandbox.DEFAULT_IMAGE}")
    if settings.database_url is not None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        scheme = urlsplit(settings.database_url).scheme.split("+")[0]
        try:
            make_url(settings.database_url)
        except ArgumentError:
            scheme = ""
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ConfigError(
                f"{where('database_url')} = {settings.database_url!r} is not supported; use "
                "postgresql://USER:PASSWORD@HOST/DB, sqlite:///PATH, or leave it unset"
            )
    if settings.public_url is not None and urlsplit(settings.public_url).scheme not in (
        "http",
        "https",
    ):
        raise ConfigError(
            f"{where('public_url')} = {settings.public_url!r} must start with http:// or https://"
        )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        missing = "tls_key" if settings.tls_key is None else "tls_cert"
        raise ConfigError(
            f"{missing} is not set; HTTPS needs both tls_cert and tls_key (`dispatch tls init` "
            "makes a pair and prints the lines to add)"
        )
    for key in ("tls_cert", "tls_key"):
        value = getattr(settings, key)
        if value is not None and not value.is_file():
            raise ConfigError(
                f"{where(key)} = {str(value)!r} is not a file; give the path of a PEM file "
                "(`dispatch tls init` makes a certificate and key)"
            )
    if not 1024 <= settings.max_body_bytes <= 64 * MIB:
        raise ConfigError(
            f"{where('max_body_bytes')} = {settings.max_body_bytes} must be between 1024 and "
            f"{64 * MIB}"
        )
    if not 0 < settings.max_task_timeout_s <= 7 * 24 * 3600:
        raise ConfigError(
            f"{where('max_task_timeout_s')} = {settings.max_task_timeout_s:g} must be more than "
            "0 and at most 604800 (a week)"
        )
    if not 0 < settings.default_task_timeout_s <= settings.max_task_timeout_s:
        raise ConfigError(
            f"{where('default_task_timeout_s')} = {settings.default_task_timeout_s:g} must be "
            f"more than 0 and at most max_task_timeout_s ({settings.max_task_timeout_s:g})"
        )
    if not 1 <= settings.approval_timeout_s <= 24 * 3600:
        raise ConfigError(
            f"{where('approval_timeout_s')} = {settings.approval_timeout_s:g} must be between 1 "
            "and 86400 seconds"
        )
    days = settings.audit_retention_days
    if days is not None and not 0 < days <= 100 * 365:
        raise ConfigError(
            f"{where('audit_retention_days')} = {days:g} must be more than 0 days (at most "
            "36500); leave it out to keep audit screenshots forever"
        )
    if not 1 <= settings.max_agent_steps <= 10_000:
        raise ConfigError(
            f"{where('max_agent_steps')} = {settings.max_agent_steps} must be between 1 and 10000"
        )
    if settings.host_display is not None and not re.fullmatch(
        r":\d+(\.\d+)?", settings.host_display
    ):
        raise ConfigError(
            f"{where('host_display')} = {settings.host_display!r} is not an X display; write it "
            'like ":0"'
        )
    if not 0 <= settings.min_free_mb <= 1024 * 1024:
        raise ConfigError(
            f"{where('min_free_mb')} = {settings.min_free_mb} must be between 0 (no check) and "
            "1048576 (1 TiB)"
        )
    for key in ("header_timeout_s", "body_timeout_s", "idle_timeout_s"):
        if not 0 < getattr(settings, key) <= 3600:
            raise ConfigError(
                f"{where(key)} = {getattr(settings, key):g} must be more than 0 and at most 3600"
            )
    if not 1 <= settings.max_connections <= 10_000:
        raise ConfigError(
            f"{where('max_connections')} = {settings.max_connections} must be between 1 and 10000"
        )
    per_client = settings.max_connections_per_client
    if per_client is not None and not 1 <= per_client <= settings.max_connections:
        raise ConfigError(
            f"{where('max_connections_per_client')} = {per_client} must be between 1 and "
            f"max_connections ({settings.max_connections})"
        )
    for proxy in settings.trusted_proxies:
        _check_proxy(proxy, where("trusted_proxies"))
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(
            f"{where('log_level')} = {settings.log_level!r} is unknown; use one of: "
            + ", ".join(LOG_LEVELS)
        )


def _check_proxy(proxy: str, where: str) -> None:
    """An address or network uvicorn will understand; it would silently ignore anything else."""
    try:
        if "/" in proxy:
            ipaddress.ip_network(proxy)
        else:
            ipaddress.ip_address(proxy)
    except ValueError as exc:
        raise ConfigError(
            f"{where} has {proxy!r}, which is not an IP address or network ({exc}); name the "
            "proxy in front of the controller, like 127.0.0.1 or 10.0.0.0/8 (never *: any "
            "client could then choose the address it is rate-limited under)"
        ) from None


def _folders(entries: Any, file_path: Path, settings: Settings) -> tuple[FolderGrant, ...]:
    """Check each `[[folders]]` entry: it exists, is not sensitive, and has known values.

    The same folder (after resolving) twice is kept once when both say the same, and refused
    when they differ: which one would decide cannot be told.
    """
    if not isinstance(entries, list):
        raise ConfigError(
            f"setting folders (from {file_path}) must be a list of tables; write "
            '[[folders]] path = "~/Projects" mode = "rw"'
        )
    grants: dict[Path, tuple[str, FolderGrant]] = {}
    for index, entry in enumerate(entries):
        name = f"setting folders[{index}] (from {file_path})"
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ConfigError(f'{name} needs a path; write path = "~/Projects"')
        unknown = set(entry) - {"path", "mode", "git_writable"}
        if unknown:
            raise ConfigError(
                f"{name} has unknown keys {sorted(unknown)}; use path, mode and git_writable"
            )
        mode = entry.get("mode", "ro")
        if mode not in MODES:
            raise ConfigError(f'{name} has mode {mode!r}; use mode = "ro" or mode = "rw"')
        git_writable = entry.get("git_writable", False)
        if not isinstance(git_writable, bool):
            raise ConfigError(
                f"{name} has git_writable = {git_writable!r}; use true or false (unquoted)"
            )
        try:
            mount = validate_mount(
                entry["path"], read_only=mode == "ro", protected=settings.protected_paths
            )
        except sandbox.GrantRefused as exc:
            raise ConfigError(f"{name}: {exc}{_state_hint(entry['path'], settings)}") from None
        grant = FolderGrant(path=mount.host, mode=mode, git_writable=git_writable)
        earlier = grants.get(grant.path)
        if earlier is not None and earlier[1] != grant:
            first, other = earlier
            raise ConfigError(
                f"{first} and {name} both grant {grant.path}, one with mode = {other.mode!r}, "
                f"git_writable = {str(other.git_writable).lower()} and the other with mode = "
                f"{mode!r}, git_writable = {str(git_writable).lower()}; keep one of them"
            )
        grants.setdefault(grant.path, (name, grant))
    return tuple(grant for _, grant in grants.values())


def _state_hint(path: str, settings: Settings) -> str:
    """Why a grant touching Dispatch's own state is refused (mounts.py only says that it is)."""
    named = Path(os.path.normpath(Path(path).expanduser().absolute()))
    for place, holds in settings.protected.items():
        for form in (named, named.resolve()):
            for known in (place.absolute(), place.resolve()):
                if form == known or known in form.parents or form in known.parents:
                    return (
                        f" ({known} holds {holds}; a task able to write there could change its "
                        "own grants, so keep it out of every granted folder)"
                    )
    return ""
