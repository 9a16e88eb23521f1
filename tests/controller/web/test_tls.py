"""`dispatch tls init`, the TLS settings, `/ca.crt` and the loopback warning."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import Api
from console_live import REPO, dispatch_cli, start_console
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from controller.cli import main
from controller.cli.tls import loopback_warning
from controller.errors import ConfigError
from controller.settings import Settings


def tls_init(data_dir: Path, *extra: str) -> str:
    result = CliRunner().invoke(main, ["tls", "init", "--data-dir", str(data_dir), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_tls_init_makes_a_ca_once_and_a_certificate_for_this_machine(tmp_path: Path) -> None:
    data = tmp_path / "data"
    printed = tls_init(data, "--name", "phone-gateway.example", "--name", "10.1.2.3")
    folder = data / "tls"
    assert f'tls_cert = "{folder / "cert.pem"}"' in printed
    assert f'tls_key = "{folder / "key.pem"}"' in printed
    ca = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    leaf, chained_ca = x509.load_pem_x509_certificates((folder / "cert.pem").read_bytes())
    assert chained_ca == ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Signed by the CA (raises if not).
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "phone-gateway.example"} <= set(names.get_values_for_type(x509.DNSName))
    addresses = set(names.get_values_for_type(x509.IPAddress))
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.1.2.3")} <= addresses
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 825  # Apple's limit
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    for key in ("ca.key", "key.pem"):
        assert stat.S_IMODE((folder / key).stat().st_mode) == 0o600

    # Again: the same CA (a phone installs it once), a new certificate.
    before = (folder / "ca.crt").read_bytes(), (folder / "cert.pem").read_bytes()
    assert "Reused the local certificate authority" in tls_init(data)
    assert (folder / "ca.crt").read_bytes() == before[0]
    assert (folder / "cert.pem").read_bytes() != before[1]


def test_tls_settings_need_both_files_and_make_the_url_https(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    tls_init(tmp_path / "data")
    cert, key = tmp_path / "data" / "tls" / "cert.pem", tmp_path / "data" / "tls" / "key.pem"
    settings = make_settings(tls_cert=str(cert), tls_key=str(key))
    assert settings.tls and settings.url.startswith("https://")
    with pytest.raises(ConfigError, match="tls_key is not set; HTTPS needs both"):
        make_settings(tls_cert=str(cert))
    with pytest.raises(ConfigError, match="is not a file"):
        make_settings(tls_cert=str(tmp_path / "nope.pem"), tls_key=str(key))


def test_the_ca_certificate_and_its_install_steps_are_public(api: Api) -> None:
    missing = api.client.get("/ca.crt")
    assert missing.status_code == 404 and "dispatch tls init" in missing.json()["error"]["message"]
    tls_init(api.controller.settings.data_dir)
    served = api.client.get("/ca.crt")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/x-x509-ca-cert"
    ca_file = api.controller.settings.data_dir / "tls" / "ca.crt"
    assert served.content == ca_file.read_bytes()
    steps = api.client.get("/ca").text
    assert "Android" in steps and "iPhone" in steps and "Certificate Trust Settings" in steps


@pytest.mark.parametrize(
    "url, warns",
    [
        ("http://127.0.0.1:8420", True),
        ("https://localhost:8420", True),
        ("http://[::1]:8420", True),
        ("https://192.168.1.20:8420", False),
        ("https://dispatch.tail1234.ts.net", False),
    ],
)
def test_a_loopback_pairing_url_is_called_out_with_the_fix(url: str, warns: bool) -> None:
    warning = loopback_warning(url)
    if not warns:
        assert warning is None
        return
    assert warning is not None
    assert "a phone cannot open it" in warning
    assert "--host 0.0.0.0" in warning and "public_url" in warning


def test_the_cli_trusts_this_machines_ca_when_the_controller_serves_https(
    workspace: Path, tmp_path: Path
) -> None:
    for console in start_console(workspace, tmp_path):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DISPATCH_DATA_DIR": str(console.data_dir),
            "XDG_CONFIG_HOME": str(workspace / "xdg-config"),
        }
        env.pop("SSL_CERT_FILE", None)
        paired = json.loads(dispatch_cli(env, "pair", "--json"))
        assert paired["url"].startswith("https://")
