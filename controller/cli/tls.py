"""`dispatch tls init`: a local certificate authority and an HTTPS certificate for this machine.

A phone reaches the console over the network, and a browser offers an installable app, push
notifications and a service worker only to a secure context, so the console wants HTTPS even
on a home network. `tls init` makes a certificate authority kept in the data directory (reused
on later runs, so a phone installs it once) and a certificate for this machine's names and
addresses signed by it. The controller serves the authority's certificate at `/ca.crt`, with
install steps for Android and iOS at `/ca`.

Also here: `loopback_warning`, which `dispatch serve` and `dispatch pair` print when the
pairing address names this machine's loopback interface, which no phone can open.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from controller.cli.exit_codes import ExitCode
from controller.errors import ConfigError
from controller.local import write_private

TLS_DIR = "tls"
CA_CERT, CA_KEY = "ca.crt", "ca.key"
CERT, KEY = "cert.pem", "key.pem"
CA_DAYS = 10 * 365
# Apple refuses server certificates valid for longer than 825 days, even from a private CA;
# browsers cap publicly trusted ones at 398.
CERT_DAYS = 397
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def loopback_warning(url: str) -> str | None:
    """A plain warning when `url` (the pairing address) names a loopback host, else None."""
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return None
    return (
        f"warning: {url} names this machine's loopback address; a phone cannot open it.\n"
        "  Listen on the network with --host 0.0.0.0 (or DISPATCH_HOST), and set public_url "
        "(config.toml or DISPATCH_PUBLIC_URL) to the address the phone uses, e.g. "
        f'public_url = "https://{_example_address()}:{urlsplit(url).port or 8420}".\n'
        "  For HTTPS on the local network run `dispatch tls init`; or reach the controller "
        "through a reverse proxy or a VPN such as Tailscale (see the README)."
    )


def _example_address() -> str:
    found = [a for a in local_addresses() if not a.is_loopback and a.version == 4]
    return str(found[0]) if found else "192.168.1.20"


def local_addresses() -> list[IPAddress]:
    """This machine's addresses: loopback, its host name's, and the one its default route uses."""
    found: list[IPAddress] = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
    # A UDP "connection" sends nothing; it only picks the address of the outgoing interface.
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.connect((probe, 9))
            found.append(ipaddress.ip_address(udp.getsockname()[0].split("%")[0]))
    unique: list[IPAddress] = []
    for address in found:
        if address not in unique and not address.is_link_local:
            unique.append(address)
    return unique


def local_names() -> list[str]:
    names = ["localhost", socket.gethostname(), socket.getfqdn(), f"{socket.gethostname()}.local"]
    return list(dict.fromkeys(n.lower() for n in names if n and n != "localhost.localdomain"))


def _write_key(path: Path, key: object) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem.decode())


def _subtrees(names: list[str], addresses: list[IPAddress]) -> list[Any]:
    from cryptography import x509

    trees: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    trees += [x509.IPAddress(ipaddress.ip_network(a)) for a in addresses]
    return trees


def _load_or_make_ca(
    folder: Path, names: list[str], addresses: list[IPAddress]
) -> tuple[object, object, bool]:
    """The CA's (certificate, key), made if missing; and whether it was made now.

    The CA may vouch only for this controller's names and addresses (Name Constraints,
    critical): a phone trusts it as a root, and whoever reads `ca.key` (a backup, a task given
    the data directory by mistake) must not be able to impersonate any other site to it. A CA
    whose constraints do not cover the names asked for now is made again (the phone installs
    the new one).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    wanted = _subtrees(names, addresses)
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if cert_path.is_file() and key_path.is_file():
        ca_cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            limits = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value
            permitted = set(limits.permitted_subtrees or ())
        except x509.ExtensionNotFound:
            permitted = set()  # an older, unlimited CA: replaced
        if set(wanted) <= permitted:
            ca_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            return ca_cert, ca_key, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"Dispatch local CA ({socket.gethostname()})"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Dispatch local CA"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.NameConstraints(permitted_subtrees=wanted, excluded_subtrees=None), critical=True
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, True


def issue(folder: Path, names: list[str], addresses: list[IPAddress]) -> tuple[Path, Path, bool]:
    """Write a certificate for `names` and `addresses` signed by the local CA (made if missing).

    Returns the certificate's and key's paths, and whether the CA is new.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_cert, ca_key, new_ca = _load_or_make_ca(folder, names, addresses)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(a) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)  # type: ignore[attr-defined]
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[attr-defined]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = folder / CERT, folder / KEY
    _write_key(key_path, key)
    chain = cert.public_bytes(serialization.Encoding.PEM)
    chain += ca_cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined]
    cert_path.write_bytes(chain)
    return cert_path, key_path, new_ca


@click.group()
def tls() -> None:
    """HTTPS for the console: a local certificate authority and this machine's certificate."""


@tls.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the CA and certificate go (in tls/) [env DISPATCH_DATA_DIR].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file [env DISPATCH_CONFIG].",
)
@click.option(
    "--name",
    "extra",
    multiple=True,
    help="Another host name or address the phone uses (repeatable); this machine's are added.",
)
def init(data_dir: Path | None, config_file: Path | None, extra: tuple[str, ...]) -> None:
    """Make a local CA (once) and a certificate for this machine's names and addresses."""
    from controller.settings import load_settings

    try:
        settings = load_settings({"data_dir": data_dir}, config=config_file)
    except ConfigError as exc:
        click.echo(f"dispatch tls init: {exc}", err=True)
        sys.exit(ExitCode.USAGE)
    names, addresses = local_names(), local_addresses()
    for item in extra:
        try:
            address = ipaddress.ip_address(item)
        except ValueError:
            names.append(item.lower())
        else:
            addresses.append(address)
    if settings.public_url:
        host = urlsplit(settings.public_url).hostname or ""
        try:
            addresses.append(ipaddress.ip_address(host))
        except ValueError:
            if host:
                names.append(host.lower())
    names = list(dict.fromkeys(names))
    addresses = list(dict.fromkeys(addresses))
    folder = settings.data_dir / TLS_DIR
    cert, key, new_ca = issue(folder, names, addresses)
    made = "Made" if new_ca else "Reused"
    click.echo(f"{made} the local certificate authority {folder / CA_CERT}")
    click.echo(f"Certificate for: {', '.join([*names, *(str(a) for a in addresses)])}")
    click.echo(f"  {cert}\n  {key} (private)")
    click.echo("Add to config.toml (or set DISPATCH_TLS_CERT and DISPATCH_TLS_KEY):")
    click.echo(f'  tls_cert = "{cert}"\n  tls_key = "{key}"')
    example = _example_address()
    click.echo(
        "Then restart `dispatch serve --host 0.0.0.0` and, on the phone, open "
        f"https://{example}:{settings.port}/ca to install the authority (once)."
    )
