"""Network mode `allowlist` in a real Docker sandbox: only the allowed names, through the proxy.

Local servers on 127.0.0.1 stand in for the internet; `allowed.test` reaches them through the
`resolve` mapping (the owner's explicit permission), with `allowed.test:PORT` on the list.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Network, SandboxSpec
from sandbox.docker import DockerSandbox
from sandbox.egress import EgressRecord
from tests.sandbox.conftest import MakeSandbox
from tests.sandbox.egress_sites import SECRET, SMALL, WHEEL_NAME, Site, make_cert, serve

pytestmark = pytest.mark.docker
CA = "/tmp/allowed-ca.pem"
# NO_PROXY keeps loopback names direct (a task's own local servers); these probes go to the proxy.
VIA_PROXY = "NO_PROXY= no_proxy= "


@pytest.fixture(scope="module")
def tls_files() -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory(prefix="dispatch-egress-cert-") as folder:
        yield make_cert(Path(folder), "allowed.test")


@pytest.fixture(scope="module")
def http_site() -> Iterator[Site]:
    with serve() as site:
        yield site


@pytest.fixture(scope="module")
def https_site(tls_files: tuple[Path, Path]) -> Iterator[Site]:
    with serve(tls=tls_files) as site:
        yield site


@pytest.fixture
def box(
    make_sandbox: MakeSandbox, http_site: Site, https_site: Site, tls_files: tuple[Path, Path]
) -> DockerSandbox:
    spec = SandboxSpec(
        network=Network.ALLOWLIST,
        allow=(
            f"allowed.test:{http_site.port}",
            f"allowed.test:{https_site.port}",
            # On the list, but it resolves to 127.0.0.1 and is not mapped: still refused.
            f"localhost:{http_site.port}",
        ),
        resolve={"allowed.test": "127.0.0.1"},
    )
    sandbox = make_sandbox("docker", spec)
    assert isinstance(sandbox, DockerSandbox)
    sandbox.write_file(Path(CA), tls_files[0].read_bytes())
    return sandbox


def sh(box: DockerSandbox, script: str, timeout_s: float = 60) -> tuple[int, str, str]:
    result = box.exec(["sh", "-c", script], timeout_s=timeout_s)
    return result.exit_code, result.stdout.decode(), result.stderr.decode()


def records(box: DockerSandbox, count: int) -> list[EgressRecord]:
    assert box.egress is not None
    return box.egress.wait_records(count)


def test_http_and_https_to_an_allowed_name_go_through(
    box: DockerSandbox, http_site: Site, https_site: Site
) -> None:
    code, out, err = sh(
        box,
        f"curl -fsS http://allowed.test:{http_site.port}/small && "
        f"curl -fsS --cacert {CA} https://allowed.test:{https_site.port}/small",
    )
    assert code == 0, err
    assert out == SMALL.decode() * 2
    first, second = records(box, 2)
    assert (first.domain, first.port, first.method, first.allowed) == (
        "allowed.test",
        http_site.port,
        "GET",
        True,
    )
    assert (second.domain, second.port, second.method, second.allowed) == (
        "allowed.test",
        https_site.port,
        "CONNECT",
        True,
    )
    for record in (first, second):
        assert record.bytes_up > 0 and record.bytes_down > len(SMALL)


def test_pip_download_through_the_proxy(box: DockerSandbox, https_site: Site) -> None:
    index = f"https://allowed.test:{https_site.port}/simple/"
    code, out, err = sh(
        box,
        "python3 -m venv /tmp/venv >/dev/null && "
        f"/tmp/venv/bin/python3 -m pip download --no-deps --cert {CA} --index-url {index} "
        "--dest /tmp/dl demo-pkg && ls /tmp/dl",
        timeout_s=180,
    )
    assert code == 0, out + err
    assert WHEEL_NAME in out


def test_a_name_off_the_list_gets_403_with_the_way_to_allow_it(box: DockerSandbox) -> None:
    _, out, _ = sh(box, "curl -sS -w '\\n%{http_code}' http://other.test/page")
    body, _, status = out.rpartition("\n")
    assert status == "403"
    assert "other.test:80 is not on this task's network allowlist" in body
    assert "--allow other.test" in body
    code, _, err = sh(box, "curl -sS https://pypi.org/")
    assert code != 0 and "403" in err
    refused = [r for r in records(box, 2) if not r.allowed]
    assert {(r.domain, r.port) for r in refused} == {("other.test", 80), ("pypi.org", 443)}


def test_ip_literals_are_refused(box: DockerSandbox, http_site: Site, https_site: Site) -> None:
    for url in (
        f"http://127.0.0.1:{http_site.port}/secret",
        f"http://[::1]:{http_site.port}/secret",
        f"http://2130706433:{http_site.port}/secret",
        f"https://127.0.0.1:{https_site.port}/secret",
    ):
        _, out, _ = sh(box, f"{VIA_PROXY}curl -sS -k {url}")
        assert SECRET.decode() not in out, url
    assert "/secret" not in http_site.paths + https_site.paths
    log = records(box, 4)
    assert len(log) == 4 and not any(r.allowed for r in log)
    assert all("is an IP address" in r.reason for r in log)


def test_a_listed_name_resolving_to_loopback_is_refused(
    box: DockerSandbox, http_site: Site
) -> None:
    _, out, _ = sh(
        box, f"{VIA_PROXY}curl -sS -w '\\n%{{http_code}}' http://localhost:{http_site.port}/secret"
    )
    assert out.endswith("403")
    assert "resolves to 127.0.0.1, a loopback address" in out
    assert "/secret" not in http_site.paths


def test_a_redirect_to_a_refused_name_is_not_followed(box: DockerSandbox, http_site: Site) -> None:
    for target in ("http://other.test/secret", f"http://localhost:{http_site.port}/secret"):
        _, out, _ = sh(
            box,
            f"{VIA_PROXY}curl -sSL -w '\\n%{{http_code}}' 'http://allowed.test:{http_site.port}/redirect?to={target}'",
        )
        assert out.endswith("403") and SECRET.decode() not in out, target
    assert http_site.paths.count("/redirect") == 2 and "/secret" not in http_site.paths


SNI_PROBE = r"""
import socket, ssl, sys
host, port, sni = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sock = socket.create_connection(("127.0.0.1", 3128))
sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
print(sock.recv(1024).split(b"\r\n")[0].decode())
context = ssl.create_default_context(cafile=sys.argv[4])
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
try:
    tls = context.wrap_socket(sock, server_hostname=sni)
    tls.sendall(b"GET /sni-probe HTTP/1.1\r\nHost: x\r\n\r\n")
    print("answer", tls.recv(4096))
except (OSError, ssl.SSLError) as exc:
    print("failed", type(exc).__name__)
"""


def test_connect_whose_sni_differs_from_its_host_is_closed(
    box: DockerSandbox, https_site: Site
) -> None:
    box.write_file(Path("/tmp/sni.py"), SNI_PROBE.encode())
    _, out, err = sh(box, f"python3 /tmp/sni.py allowed.test {https_site.port} evil.test {CA}")
    assert "200 Connection established" in out
    assert "failed" in out and "answer" not in out, out + err
    # The same probe with the matching name does get an answer: the check is what stopped it.
    _, out, err = sh(box, f"python3 /tmp/sni.py allowed.test {https_site.port} allowed.test {CA}")
    assert "answer" in out, out + err
    assert https_site.paths.count("/sni-probe") == 1
    mismatch = [r for r in records(box, 2) if r.reason.startswith("refused: the TLS server name")]
    assert len(mismatch) == 1 and not mismatch[0].allowed


RAW_PROBE = r"""
import socket, sys
results = []
def tcp(host, port):
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01 raw bytes, not HTTP\r\n\r\n")
            return "answered " + s.recv(200).split(b"\r\n")[0].decode(errors="replace")
    except OSError as exc:
        return "error " + type(exc).__name__
def udp(host, port):
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            query = bytes.fromhex("123401000001000000000000076578616d706c6503636f6d0000010001")
            s.sendto(query, (host, port))
            return "answered " + repr(s.recv(512))
    except OSError as exc:
        return "error " + type(exc).__name__
def dns(name):
    try:
        return "resolved " + socket.gethostbyname(name)
    except OSError as exc:
        return "error " + type(exc).__name__
port = int(sys.argv[1])
print("proxy-raw", tcp("127.0.0.1", 3128))
print("bridge", tcp("172.17.0.1", port))
print("outside", tcp("1.1.1.1", 443))
print("udp-dns", udp("8.8.8.8", 53))
print("udp-bridge", udp("172.17.0.1", 53))
print("dns", dns("example.com"))
print("dns-allowed", dns("allowed.test"))
"""


def test_raw_tcp_udp_and_dns_from_inside_fail(box: DockerSandbox, http_site: Site) -> None:
    box.write_file(Path("/tmp/raw.py"), RAW_PROBE.encode())
    _, out, err = sh(box, f"python3 /tmp/raw.py {http_site.port}")
    seen = dict(line.split(" ", 1) for line in out.splitlines())
    assert seen["proxy-raw"] == "answered HTTP/1.1 400 Bad Request", out + err
    for probe in ("bridge", "outside", "udp-dns", "udp-bridge", "dns", "dns-allowed"):
        assert seen[probe].startswith("error"), (probe, seen[probe])


def test_the_request_log_is_complete(box: DockerSandbox, http_site: Site, https_site: Site) -> None:
    script = "; ".join(
        [
            f"curl -s -o /dev/null http://allowed.test:{http_site.port}/small",
            "curl -s -o /dev/null http://other.test/",
            f"curl -s -o /dev/null --cacert {CA} https://allowed.test:{https_site.port}/small",
            "curl -s -o /dev/null https://other.test/",
            f"{VIA_PROXY}curl -s -o /dev/null http://127.0.0.1:{http_site.port}/small",
        ]
    )
    sh(box, script)
    log = records(box, 5)
    assert [(r.domain, r.method, r.allowed) for r in log] == [
        ("allowed.test", "GET", True),
        ("other.test", "GET", False),
        ("allowed.test", "CONNECT", True),
        ("other.test", "CONNECT", False),
        ("127.0.0.1", "GET", False),
    ]
    assert all(r.time > 0 and r.port > 0 for r in log)
    assert log[0].bytes_down > len(SMALL) and log[2].bytes_down > len(SMALL)
    assert log[1].bytes_down == 0 and log[3].bytes_down == 0


def test_the_task_cannot_stop_the_relay(box: DockerSandbox, http_site: Site) -> None:
    sh(box, "kill -9 -1; true")
    code, out, _ = sh(box, f"curl -fsS http://allowed.test:{http_site.port}/small")
    assert code == 0 and out == SMALL.decode()


def test_killing_the_proxy_leaves_no_network(box: DockerSandbox, http_site: Site) -> None:
    url = f"http://allowed.test:{http_site.port}/small"
    assert sh(box, f"curl -fsS {url}")[0] == 0
    assert box.egress is not None
    box.egress.kill()
    box.egress.stop()
    assert not box.egress.running
    paths_before = len(http_site.paths)
    _, out, err = sh(box, f"curl -sS -m 10 {url}; curl -sS -m 10 --noproxy '*' {url}")
    assert SMALL.decode() not in out, out + err
    box.write_file(Path("/tmp/raw.py"), RAW_PROBE.encode())
    _, out, _ = sh(box, f"python3 /tmp/raw.py {http_site.port}")
    for line in out.splitlines():
        _, seen = line.split(" ", 1)
        # The relay still accepts, and closes at once: nothing answers.
        assert seen.startswith("error") or seen == "answered ", line
    assert len(http_site.paths) == paths_before
