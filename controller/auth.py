"""Devices, tokens and pairing: who may use the API.

A token is 256 random bits shown once; only its SHA-256 is stored (a fast hash is enough for
secrets this long). Pairing codes are short so a person can type them, so they are single use,
expire in ten minutes, and wrong guesses are rate-limited per client and in total.

Revocation is immediate: every revocation in this process bumps `Auth.generation`, which both
keeps a check that raced with it from caching the revoked device and tells open event streams
(through `DeviceWatch`) to look the device up again.

Two roles. The owner (the local CLI's token, `is_owner`) issues pairing codes, revokes devices
and changes settings; a device (a phone, a browser) uses the API for work. The role is a column
a device cannot set, and the owner is shown by its role, never by a name: pairing refuses names
that could pass for the owner's, so a stolen device token cannot hide a second device as one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import socket
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from confusable_homoglyphs import categories, confusables
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from controller.errors import (
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    Unprocessable,
)
from controller.local import OWNER_TOKEN_FILE, read_owner_token, write_private
from controller.store.db import Database
from controller.store.models import Device, PairingCode

TOKEN_BYTES = 32
PAIRING_CODE_TTL_S = 600.0
# No 0/O, 1/I/L: a code read off a screen is typed without guessing which glyph it was.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
OWNER_DEVICE_NAME = "owner (this machine)"
# Refreshing last_seen on every request would turn each read into a write.
LAST_SEEN_RESOLUTION_S = 30.0
# A database shared by several controllers can be revoked in from elsewhere; long-lived requests
# look their device up again this often.
SHARED_RECHECK_S = 5.0
# Whose owner token a device is: rotating one controller's token must not log out the others
# that share its database.
OWNER_HOST = socket.gethostname()

log = logging.getLogger(__name__)


# Not text, or text that changes how the text around it is shown: controls, bidi overrides and
# isolates, zero-width and other format characters, surrogates, private use, line separators.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
# Scripts with many letters that look alike; one word may not mix them.
LOOKALIKE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK"})


class Role(StrEnum):
    OWNER = "owner"
    DEVICE = "device"


def role_of(device: Device) -> Role:
    return Role.OWNER if device.is_owner else Role.DEVICE


def shown_name(device: Device) -> str:
    """The name to show for a device: the owner's comes from its role, whatever is stored."""
    return OWNER_DEVICE_NAME if device.is_owner else device.name


def require_owner(device: Device, action: str, command: str) -> None:
    """Refuse `action` unless `device` holds the owner role.

    Args:
        action: what was asked, as a phrase ("issuing pairing codes").
        command: the CLI command that does it with the owner token, for the message.

    Raises:
        Forbidden: `owner_only`, naming the role the token lacks and the fix.
    """
    if device.is_owner:
        return
    raise Forbidden(
        f"{action} needs the owner role; this token belongs to device {device.name!r} "
        f"(id {device.id}), which has the device role. Run `{command}` on the controller's "
        "machine, whose CLI holds the owner token",
        code="owner_only",
    )


def _skeleton(name: str) -> str:
    """How a name reads: letters and digits only, compatibility-, confusable- and case-folded.

    Confusables come from Unicode's own table (UTS #39 confusables.txt, as the
    confusable-homoglyphs package ships it): Cyrillic U+043E reads as Latin `o`, `0` as `O`.
    """
    folded = []
    for ch in unicodedata.normalize("NFKC", name):
        found = confusables.is_confusable(ch, preferred_aliases=["latin"], greedy=True)
        folded.append(found[0]["homoglyphs"][0]["c"] if found else ch)
    return "".join(ch for ch in "".join(folded).casefold() if ch.isalnum())


def _mixed_script_word(name: str) -> str | None:
    """The first word mixing scripts whose letters pass for each other's, or None.

    Only Latin, Cyrillic and Greek are checked: Japanese, say, mixes Han and kana in one word
    by right, and no other scripts share so many glyphs.
    """
    for word in re.findall(r"\w+", unicodedata.normalize("NFKC", name)):
        scripts = {categories.alias(ch) for ch in word} & LOOKALIKE_SCRIPTS
        if len(scripts) > 1:
            return word
    return None


def check_device_name(name: str) -> str:
    """Return `name` stripped, or refuse one that hides text or could pass for the owner.

    Raises:
        Unprocessable: `invalid_device_name`, naming the field, the character or the clash.
    """
    name = name.strip()
    if not name:
        raise Unprocessable(
            "device_name is empty; name the device, e.g. 'phone'", code="invalid_device_name"
        )
    for ch in name:
        if unicodedata.category(ch) in HIDDEN_CATEGORIES:
            what = unicodedata.name(ch, "a control character")
            raise Unprocessable(
                f"device_name contains U+{ord(ch):04X} ({what}), which hides or reorders the "
                "text around it; choose a name of visible characters only",
                code="invalid_device_name",
            )
    word = _mixed_script_word(name)
    if word is not None:
        raise Unprocessable(
            f"device_name word {word!r} mixes Latin, Cyrillic or Greek letters, which can make "
            "one name look like another; write each word in one script",
            code="invalid_device_name",
        )
    skeleton = _skeleton(name)
    if skeleton.startswith("owner") or "thismachine" in skeleton:
        raise Unprocessable(
            f"device_name {name!r} could be taken for the owner, whom Dispatch shows by role "
            "(never by a name a device chose); choose another name, e.g. 'phone'",
            code="invalid_device_name",
        )
    return name


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_pairing_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def normalise_code(code: str) -> str:
    """Accept what a person types: any case, with or without the dash or spaces."""
    raw = "".join(ch for ch in code.upper() if ch.isalnum())
    return f"{raw[:4]}-{raw[4:]}"


class RateLimiter:
    """At most `limit` attempts that failed (or are under way) per `window_s` for each key.

    `reserve` checks and counts an attempt under one lock, so a burst of concurrent attempts
    cannot all pass the check before any is counted; an attempt that succeeds is given back
    with `release`. Thread-safe.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def reserve(self, key: str, now: float) -> float:
        """Count an attempt for `key` and return 0, or return the wait and count nothing."""
        with self._lock:
            hits = self._prune(key, now)
            wait = self._wait(hits, now)
            if not wait:
                hits.append(now)
            return wait

    def release(self, key: str, now: float) -> None:
        """Give back an attempt `reserve(key, now)` counted: it did not fail."""
        with self._lock:
            hits = self._hits.get(key)
            if hits is not None and now in hits:
                hits.remove(now)

    def _wait(self, hits: deque[float], now: float) -> float:
        if len(hits) < self.limit:
            return 0.0
        return max(hits[0] + self.window_s - now, 0.001)

    def _prune(self, key: str, now: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        return hits

    def forget_idle(self, now: float) -> None:
        """Drop keys with no recent failure, so the table does not grow with every address."""
        with self._lock:
            for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window_s]:
                del self._hits[key]


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: float


@dataclass(frozen=True)
class Revocation:
    device: Device
    # Work the revoked token had queued that was cancelled with it (see `Auth.revoke`).
    cancelled_task_ids: tuple[int, ...] = ()


# Called inside the revoking transaction with the device and the time: what else to undo.
RevokeCascade = Callable[[Session, Device, float], Sequence[int]]


class Auth:
    """Issues and checks tokens and pairing codes against the database."""

    def __init__(
        self,
        db: Database,
        *,
        per_client: RateLimiter | None = None,
        overall: RateLimiter | None = None,
        shared: bool | None = None,
        owner_host: str = OWNER_HOST,
    ) -> None:
        """Check tokens against `db`.

        Args:
            shared: whether other controllers use the database too (default: unless SQLite).
            owner_host: whose owner tokens this controller rotates (default: this host's name).
        """
        self.db = db
        self.owner_host = owner_host
        self.per_client = per_client or RateLimiter(limit=5, window_s=60.0)
        self.overall = overall or RateLimiter(limit=30, window_s=60.0)
        self._seen: dict[int, float] = {}
        # token hash -> device, for tokens checked recently. Only with SQLite, whose database
        # belongs to this one process: a revocation happens here and clears it. A database
        # shared by several controllers is asked on every request.
        self._known: dict[str, Device] = {}
        self._cache = db.is_sqlite if shared is None else not shared
        # Guards `_known` against `generation`: a check may only cache what it read if no
        # revocation committed since it started reading.
        self._lock = threading.Lock()
        self.generation = 0
        self._revoke_hooks: list[Callable[[], None]] = []

    @property
    def shared(self) -> bool:
        """Whether other controllers may revoke devices in this database behind our back."""
        return not self._cache

    def on_revoke(self, hook: Callable[[], None]) -> None:
        """Call `hook()` (from any thread) after a revocation commits."""
        self._revoke_hooks.append(hook)

    def _revoked(self) -> None:
        """After a revocation commits: drop the cached devices and tell long-lived requests."""
        with self._lock:
            self.generation += 1
            self._known.clear()
        for hook in self._revoke_hooks:
            hook()

    def is_revoked(self, device_id: int) -> bool:
        """Whether the device is revoked (or gone), read from the database."""
        with self.db.read() as session:
            row = session.execute(
                select(Device.revoked_at).where(Device.id == device_id)
            ).one_or_none()
        return row is None or row.revoked_at is not None

    def watch(self, device_id: int) -> DeviceWatch:
        """A watch that tells a long-lived request when `device_id` loses access."""
        return DeviceWatch(self, device_id)

    def cached(self, token: str | None) -> Device | None:
        """The device for `token` without touching the database, when that is safe."""
        if not token or not self._cache:
            return None
        device = self._known.get(hash_secret(token))
        if device is None or time.time() - self._seen.get(device.id, 0.0) > LAST_SEEN_RESOLUTION_S:
            return None  # the slow path refreshes last_seen
        return device

    def authenticate(self, token: str | None) -> Device:
        """Return the device holding `token`.

        Raises:
            Unauthorized: no token, an unknown one, or a revoked one.
        """
        if not token:
            raise Unauthorized(
                "this route needs a token: send `Authorization: Bearer TOKEN` "
                "(pair a device with `dispatch pair`)"
            )
        # Taken before reading: a revocation that commits after this may not be cached over.
        generation = self.generation
        with self.db.read() as session:
            device = session.scalars(
                select(Device).where(Device.token_hash == hash_secret(token))
            ).one_or_none()
        if device is None or device.revoked_at is not None:
            raise Unauthorized(
                "the token is unknown or was revoked; pair this device again with `dispatch pair`"
            )
        now = time.time()
        if now - self._seen.get(device.id, 0.0) > LAST_SEEN_RESOLUTION_S:
            self._seen[device.id] = now
            try:
                with self.db.write() as session:
                    session.execute(
                        update(Device).where(Device.id == device.id).values(last_seen_at=now)
                    )
            except (OperationalError, OSError) as exc:
                # Bookkeeping only: a full disk (or a locked database) must not turn a read into
                # an error. The next request after LAST_SEEN_RESOLUTION_S tries again.
                log.warning("could not record that device %d was seen: %s", device.id, exc)
        if self._cache:
            with self._lock:
                if self.generation == generation:
                    self._known[device.token_hash] = device
        return device

    def issue_pairing_code(self, now: float | None = None) -> IssuedCode:
        now = time.time() if now is None else now
        code = new_pairing_code()
        with self.db.write() as session:
            session.add(
                PairingCode(
                    code_hash=hash_secret(code),
                    created_at=now,
                    expires_at=now + PAIRING_CODE_TTL_S,
                )
            )
        return IssuedCode(code=code, expires_at=now + PAIRING_CODE_TTL_S)

    def pair(
        self, code: str, device_name: str, client: str, now: float | None = None
    ) -> tuple[Device, str]:
        """Trade a pairing code for a new device and its token (shown only here).

        Raises:
            Unprocessable: the name hides text or could pass for the owner (the code is kept).
            RateLimited: this client (or everyone together) guessed wrong too often.
            Unauthorized: the code is wrong, used, or expired.
        """
        device_name = check_device_name(device_name)
        now = time.time() if now is None else now
        # The attempt is counted before the code is looked at, and given back if it was right.
        wait = self.per_client.reserve(client, now)
        if not wait:
            wait = self.overall.reserve("*", now)
            if wait:
                self.per_client.release(client, now)
        if wait:
            raise RateLimited(
                f"too many wrong pairing codes; wait {int(wait) + 1} s and type the code again",
                retry_after_s=int(wait) + 1,
            )
        token = new_token()
        try:
            with self.db.write() as session:
                claimed = session.scalars(
                    select(PairingCode).where(
                        PairingCode.code_hash == hash_secret(normalise_code(code)),
                        PairingCode.used_at.is_(None),
                        PairingCode.expires_at > now,
                    )
                ).one_or_none()
                if claimed is not None:
                    device = Device(name=device_name, token_hash=hash_secret(token), created_at=now)
                    session.add(device)
                    session.flush()
                    claimed.used_at = now
                    claimed.device_id = device.id
        except BaseException:
            # Not a wrong guess: the database failed. It must not count against the client.
            self.per_client.release(client, now)
            self.overall.release("*", now)
            raise
        if claimed is None:
            self.per_client.forget_idle(now)
            raise Unauthorized(
                "the pairing code is wrong, already used, or expired; run `dispatch pair` "
                "for a new one",
                code="invalid_pairing_code",
            )
        self.per_client.release(client, now)
        self.overall.release("*", now)
        return device, token

    def devices(self) -> list[Device]:
        with self.db.read() as session:
            return list(session.scalars(select(Device).order_by(Device.id)))

    def devices_by_id(self, ids: Iterable[int | None]) -> dict[int, Device]:
        """The devices with these ids (revoked ones too); None and unknown ids are skipped."""
        wanted = {i for i in ids if i is not None}
        if not wanted:
            return {}
        with self.db.read() as session:
            found = session.scalars(select(Device).where(Device.id.in_(wanted)))
            return {d.id: d for d in found}

    def revoke(
        self, device_id: int, now: float | None = None, *, cascade: RevokeCascade | None = None
    ) -> Revocation:
        """Revoke a device; its token fails from the next request on.

        Args:
            cascade: run in the same transaction, to undo what the token set in motion (the
                API cancels the device's queued tasks); returns the ids of what it undid.

        Raises:
            NotFound: no such device.
            Conflict: it is the owner token (rotate that by deleting the file instead).
        """
        now = time.time() if now is None else now
        undone: Sequence[int] = ()
        with self.db.write() as session:
            device = session.get(Device, device_id)
            if device is None:
                raise NotFound(f"no device {device_id}; list devices with `dispatch devices`")
            if device.is_owner:
                raise Conflict(
                    "the owner token of this machine cannot be revoked over the API; to rotate "
                    f"it, delete {OWNER_TOKEN_FILE} in the data directory and restart the "
                    "controller",
                    code="owner_device",
                )
            if device.revoked_at is None:
                device.revoked_at = now
            if cascade is not None:
                undone = cascade(session, device, now)
        self._revoked()
        return Revocation(device, tuple(undone))

    def ensure_owner_token(self, data_dir: Path) -> str:
        """Return the local CLI's token, creating (or replacing a revoked) one in `data_dir`.

        A token that is new to the database (the file was deleted, or replaced by hand) makes
        this controller's previous owner tokens stop working, in the same transaction: deleting
        the file is how the owner token is rotated.
        """
        path = data_dir / OWNER_TOKEN_FILE
        token = read_owner_token(data_dir)
        with self.db.write() as session:
            device = None
            if token is not None:
                device = session.scalars(
                    select(Device).where(Device.token_hash == hash_secret(token))
                ).one_or_none()
                if device is not None and device.revoked_at is None:
                    # Adopt it, so that a later rotation on this host finds it.
                    device.owner_host = self.owner_host
                    return token
            # No file, or its token was revoked: mint one. A token the database has never seen
            # (the file was replaced by hand) is taken as the new owner token.
            if token is None or device is not None:
                token = new_token()
                write_private(path, token + "\n")
            retired = self._retire_owners(session)
            session.add(
                Device(
                    name=OWNER_DEVICE_NAME,
                    token_hash=hash_secret(token),
                    is_owner=True,
                    owner_host=self.owner_host,
                    created_at=time.time(),
                )
            )
        if retired:
            self._revoked()
        return token

    def _retire_owners(self, session: Session) -> int:
        """Revoke the owner tokens a new one replaces; returns how many."""
        query = update(Device).where(Device.is_owner.is_(True), Device.revoked_at.is_(None))
        if self.shared:
            # Other controllers' owners are theirs; ones from before hosts were recorded
            # cannot be told apart, and a controller re-adopts its own at every start.
            query = query.where(
                (Device.owner_host == self.owner_host) | Device.owner_host.is_(None)
            )
        result = session.execute(query.values(revoked_at=time.time()))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


class DeviceWatch:
    """Tells a long-lived request (an event stream) that its device was revoked.

    `due()` is cheap and says when to ask `revoked()`, which reads the database: at the first
    check, after any revocation in this process, and, on a shared database, every few seconds.
    """

    def __init__(self, auth: Auth, device_id: int) -> None:
        self.auth = auth
        self.device_id = device_id
        self._generation: int | None = None
        self._checked_at = 0.0

    def due(self) -> bool:
        if self._generation != self.auth.generation:
            return True
        return self.auth.shared and time.monotonic() - self._checked_at > SHARED_RECHECK_S

    def revoked(self) -> bool:
        # The generation is noted before reading, so a revocation committing meanwhile makes
        # the next `due()` true.
        self._generation = self.auth.generation
        self._checked_at = time.monotonic()
        return self.auth.is_revoked(self.device_id)
