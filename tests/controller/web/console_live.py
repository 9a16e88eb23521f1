"""A real `dispatch serve` over HTTPS with `dispatch tls init`'s certificate, and Chromium
(Debian's, through Playwright) at a phone's viewport signed in to it."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import wait_until, write_config

REPO = Path(__file__).parents[3]
CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}
# Screenshots of every page, kept after the run (git ignores the folder); the docs' console-*.png
# are copied from here.
ARTIFACTS = REPO / "test-artifacts" / "console"


def dispatch_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "controller", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def spki_pin(cert_pem: bytes) -> str:
    """The base64 SHA-256 of the first certificate's public key, as Chromium's pin flag wants."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificates(cert_pem)[0]
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@dataclass
class Console:
    """The controller under test; `owner` calls its API with the owner token."""

    url: str
    data_dir: Path
    ca: Path
    cert: Path
    log: Path
    process: subprocess.Popen[bytes]
    artifacts: Path
    owner: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        token = (self.data_dir / "owner-token").read_text().strip()
        self.owner = httpx.Client(
            base_url=self.url,
            verify=str(self.ca),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def pairing_code(self) -> str:
        issued = self.owner.post("/api/v1/pairing-codes")
        assert issued.status_code == 201, issued.text
        assert issued.json()["url"].startswith("https://")
        code: str = issued.json()["code"]
        return code

    def shot(self, page: Any, name: str) -> Path:
        """A screenshot of the page as a test artifact (test-artifacts/console/)."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / f"console-{name}.png"
        page.screenshot(path=str(path))
        return path

    def device_id(self, name: str) -> int:
        found = [d for d in self.owner.get("/api/v1/devices").json() if d["name"] == name]
        return int(found[-1]["id"])

    def task(self, task_id: int) -> dict[str, Any]:
        task: dict[str, Any] = self.owner.get(f"/api/v1/tasks/{task_id}").json()
        return task


def start_console(
    workspace: Path,
    artifacts: Path = ARTIFACTS,
    extra_env: dict[str, str] | None = None,
    config: str = "",
) -> Iterator[Console]:
    """`dispatch serve` over TLS; `config` is added to its config.toml."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data_dir = workspace / "data"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DISPATCH_DATA_DIR": str(data_dir),
        "DISPATCH_CONFIG": str(write_config(workspace, config)),
        "DISPATCH_PORT": str(port),
        "DISPATCH_SANDBOX_BACKEND": "fake",
        "DISPATCH_APPROVAL_TIMEOUT_S": "600",
        "XDG_CONFIG_HOME": str(workspace / "xdg-config"),
        **(extra_env or {}),
    }
    printed = dispatch_cli(env, "tls", "init")
    tls = data_dir / "tls"
    assert f'tls_cert = "{tls / "cert.pem"}"' in printed
    env["DISPATCH_TLS_CERT"] = str(tls / "cert.pem")
    env["DISPATCH_TLS_KEY"] = str(tls / "key.pem")
    log = workspace / "serve.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "controller", "serve", "--no-pair"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"https://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"dispatch serve exited: {log.read_text()[-3000:]}")
        try:
            # Verified against the local CA: the served certificate is the one tls init made.
            return httpx.get(f"{url}/healthz", verify=str(tls / "ca.crt")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 30, f"dispatch serve on {url} (log: {log})")
        yield Console(url, data_dir, tls / "ca.crt", tls / "cert.pem", log, process, artifacts)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        print(f"dispatch serve log ({log}):\n{log.read_text()[-3000:]}")


@dataclass
class Phones:
    """Chromium with one context per device (each its own cookies), at a phone's viewport."""

    console: Console
    browser: Any
    contexts: list[Any] = field(default_factory=list)

    def new_page(self) -> Any:
        context = self.browser.new_context(viewport=PHONE, device_scale_factor=1, is_mobile=True)
        context.set_default_timeout(20_000)
        self.contexts.append(context)
        return context.new_page()

    def paired(self, name: str = "phone") -> Any:
        """A page of a newly paired device, on the threads page."""
        page = self.new_page()
        page.goto(f"{self.console.url}/pair?code={self.console.pairing_code()}")
        page.fill("input[name=device_name]", name)
        page.click("button[type=submit]")
        page.wait_for_url(f"{self.console.url}/")
        return page


def open_chromium(console: Console) -> Iterator[Phones]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                # Trust exactly the certificate `dispatch tls init` made (by its key), as a
                # phone that installed the local CA would; any other certificate still fails.
                f"--ignore-certificate-errors-spki-list={spki_pin(console.cert.read_bytes())}",
            ],
        )
        phones = Phones(console, browser)
        try:
            yield phones
        finally:
            for context in phones.contexts:
                context.close()
            browser.close()
