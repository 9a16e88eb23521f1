"""Review 3: the local CA a phone is told to install can vouch for every site on the internet.

`dispatch tls init` makes a CA (BasicConstraints ca=True, key usage keyCertSign) with no Name
Constraints, and `/ca` walks a phone through installing it as a trusted root. Its private key
stays in the data directory (`tls/ca.key`) so that later certificates can be issued. Whoever
reads that file (a backup, someone with access to the data directory, a task given the data
directory as a folder by mistake) can then issue a certificate for any name, which every phone
paired this way trusts: its bank, its mail. A CA limited to the controller's own names and
addresses (Name Constraints, critical) would vouch for nothing else.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller.cli.tls import CA_CERT, CA_KEY, issue


def test_the_local_ca_cannot_vouch_for_other_sites(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    issue(folder, ["dispatch.home.arpa"], [ipaddress.ip_address("192.168.1.10")])
    ca = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
    ca_key = load_pem_private_key((folder / CA_KEY).read_bytes(), password=None)
    # What anyone holding ca.key can do: a certificate for someone else's site.
    forged_key = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank.example")]))
        .issuer_name(ca.subject)
        .public_key(forged_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca.not_valid_before_utc)
        .not_valid_after(ca.not_valid_after_utc)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank.example")]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[arg-type]
            False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    store = x509.verification.Store([ca])
    verifier = (
        x509.verification.PolicyBuilder()
        .store(store)
        .build_server_verifier(x509.DNSName("bank.example"))
    )
    try:
        verifier.verify(forged, [])
    except x509.verification.VerificationError:
        return  # refused: the CA is limited to the controller's names
    raise AssertionError(
        "a certificate for bank.example signed with tls/ca.key verifies against the CA a phone "
        "installs: the CA has no Name Constraints"
    )
