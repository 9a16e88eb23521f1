"""Building Dispatch's images, offline when no registry can be reached.

The Dockerfiles in `images/` take their base as a build argument. On a normal machine the base is
pulled from a registry; where none answers, the base is bootstrapped with `debootstrap` from the
Debian mirror this machine's apt already uses, and `docker import`ed. A build is skipped when an
image built from the same Dockerfile, context and base already exists.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from sandbox.base import DEFAULT_IMAGE
from sandbox.errors import ImageBuildFailed

IMAGES_DIR = Path(__file__).resolve().parents[1] / "images"
DEFAULT_BASE = "debian:bookworm-slim"
BOOTSTRAP_BASE = "dispatch/base:bookworm"
SUITE = "bookworm"
HASH_LABEL = "dispatch.build-hash"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageDef:
    name: str
    tag: str
    # Another Dispatch image this one builds on (its tag), instead of the Debian base.
    on: str | None = None

    @property
    def context(self) -> Path:
        return IMAGES_DIR / self.name


DESKTOP_IMAGE = "dispatch/desktop:latest"
# In build order: the desktop image adds a screen to the sandbox image (its hardening included).
IMAGES = (
    ImageDef("sandbox", DEFAULT_IMAGE),
    ImageDef("desktop", DESKTOP_IMAGE, on=DEFAULT_IMAGE),
)


@dataclass(frozen=True)
class BuildOutcome:
    tag: str
    built: bool  # False: it was already up to date
    base: str


def _exists(client: docker.DockerClient, ref: str) -> docker.models.images.Image | None:
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def resolve_base(
    client: docker.DockerClient, *, offline: bool, base: str | None, progress: Progress
) -> str:
    """Return a base image present locally: the given one, the registry's, or a bootstrapped one."""
    if base is not None:
        if _exists(client, base) is None and not offline:
            progress(f"pulling {base}")
            try:
                client.images.pull(base)
            except docker.errors.DockerException as exc:
                raise ImageBuildFailed(
                    f"base image {base!r} is not here and cannot be pulled ({exc}); "
                    "omit --base to bootstrap one offline"
                ) from None
        return base
    if not offline:
        if _exists(client, DEFAULT_BASE) is not None:
            return DEFAULT_BASE
        progress(f"pulling {DEFAULT_BASE}")
        try:
            client.images.pull(DEFAULT_BASE)
            return DEFAULT_BASE
        except docker.errors.DockerException as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "no answer"
            progress(f"cannot pull {DEFAULT_BASE} ({first}); bootstrapping the base offline")
    if _exists(client, BOOTSTRAP_BASE) is not None:
        progress(f"using the bootstrapped base {BOOTSTRAP_BASE}")
        return BOOTSTRAP_BASE
    bootstrap_base(client, progress=progress)
    return BOOTSTRAP_BASE


def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses for the main archive (not security).

    Raises:
        ImageBuildFailed: no Debian mirror is configured.
    """
    uris: list[str] = []
    for file in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        for stanza in file.read_text().split("\n\n"):
            fields = dict(
                (k.strip(), v.strip())
                for k, _, v in (line.partition(":") for line in stanza.splitlines())
                if not k.startswith("#") and v
            )
            suites = fields.get("Suites", "").split()
            if SUITE in suites and fields.get("Enabled", "yes") != "no":
                uris += fields.get("URIs", "").split()
    legacy = [
        sources_dir / "sources.list",
        *sorted((sources_dir / "sources.list.d").glob("*.list")),
    ]
    for file in legacy:
        if file.exists():
            for line in file.read_text().splitlines():
                match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if match and match.group(2) == SUITE:
                    uris.append(match.group(1))
    for uri in uris:
        if "security" not in uri:
            return uri.rstrip("/")
    raise ImageBuildFailed(
        f"no Debian mirror for {SUITE} is configured in {sources_dir}; add one to apt's sources "
        "or pass --base IMAGE with a base image you already have"
    )


def _run(command: list[str], progress: Progress) -> None:
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        line = line.rstrip()
        tail = [*tail[-20:], line]
        if line.startswith(("I: Retrieving", "I: Extracting", "I: Installing", "I: Base")) or (
            not line.startswith("I:")
        ):
            progress(f"  {line}")
    if process.wait() != 0:
        raise ImageBuildFailed(f"`{' '.join(command[:2])}` failed:\n" + "\n".join(tail))


def bootstrap_base(client: docker.DockerClient, *, progress: Progress) -> None:
    """Build the base image from the Debian mirror with debootstrap, then `docker import` it.

    Raises:
        ImageBuildFailed: debootstrap is missing, not root, or the bootstrap failed.
    """
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin")
    if debootstrap is None:
        raise ImageBuildFailed("debootstrap is not installed; run `apt-get install debootstrap`")
    mirror = apt_mirror()
    progress(f"bootstrapping Debian {SUITE} from {mirror} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="dispatch-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run([debootstrap, "--variant=minbase", SUITE, str(rootfs), mirror], progress)
        tarball = Path(tmp) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], progress)
        progress(f"importing the base as {BOOTSTRAP_BASE}")
        repository, tag = BOOTSTRAP_BASE.split(":")
        client.api.import_image_from_file(str(tarball), repository=repository, tag=tag)


def build_hash(context: Path, base_id: str) -> str:
    """A digest of every file in the build context and the base image's id."""
    digest = hashlib.sha256(base_id.encode())
    for file in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(context)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def build_image(
    client: docker.DockerClient, image: ImageDef, *, base: str, progress: Progress
) -> BuildOutcome:
    """Build one image on `base`, or do nothing if it is up to date."""
    if not (image.context / "Dockerfile").exists():
        raise ImageBuildFailed(
            f"no Dockerfile at {image.context}; run from a Dispatch source checkout"
        )
    base_image = _exists(client, base)
    if base_image is None:
        raise ImageBuildFailed(f"base image {base!r} is missing; rerun `dispatch images build`")
    wanted = build_hash(image.context, base_image.id)
    current = _exists(client, image.tag)
    if current is not None and current.labels.get(HASH_LABEL) == wanted:
        progress(f"{image.tag} is up to date")
        return BuildOutcome(image.tag, built=False, base=base)
    progress(f"building {image.tag} on {base}")
    tail: list[str] = []
    try:
        for chunk in client.api.build(
            path=str(image.context),
            tag=image.tag,
            buildargs={"BASE": base},
            labels={HASH_LABEL: wanted},
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        ):
            if "error" in chunk:
                raise ImageBuildFailed(
                    f"building {image.tag} failed: {chunk['error'].strip()}\n" + "".join(tail)
                )
            line = chunk.get("stream", "")
            if line.strip():
                tail = [*tail[-20:], line]
                if line.startswith("Step ") or line.startswith("Successfully"):
                    progress(f"  {line.strip()}")
    except docker.errors.DockerException as exc:
        raise ImageBuildFailed(f"building {image.tag} failed: {exc}") from None
    return BuildOutcome(image.tag, built=True, base=base)


def build_all(
    client: docker.DockerClient,
    *,
    offline: bool = False,
    base: str | None = None,
    progress: Progress = print,
) -> list[BuildOutcome]:
    """Build every Dispatch image that is missing or out of date."""
    chosen = resolve_base(client, offline=offline, base=base, progress=progress)
    return [
        build_image(client, image, base=image.on or chosen, progress=progress) for image in IMAGES
    ]
