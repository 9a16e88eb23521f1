"""Which destinations a sandbox in network mode `allowlist` may reach, and at which address.

An allowlist entry is a name (`pypi.org`), a wildcard for the names below a domain
(`*.pythonhosted.org`: `files.pythonhosted.org` and deeper, not `pythonhosted.org` itself), either
with a port (`allowed.test:8443`). Without a port a name is allowed on 80 (plain HTTP) and 443
(HTTPS through CONNECT); with one, on that port only.

Names are resolved here, never in the sandbox. An address that is loopback, link-local,
private, shared, reserved, multicast or one of this host's own is refused, whatever name led to
it, unless the name is mapped to it in `resolve` (the `network_resolve` setting, which works like
`curl --resolve`): that mapping is the owner's explicit permission.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sandbox.errors import SandboxError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = (80, 443)
# A DNS name: letters, digits and hyphens in dot-separated labels, the last one not all digits,
# so every spelling of an IP address (`127.1`, `0x7f.0.0.1`, `2130706433`) is refused as a name.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_NAME = re.compile(rf"^(?:{_LABEL}\.)*(?!\d+$){_LABEL}$")


class PolicyInvalid(SandboxError):
    """An allowlist entry or a `network_resolve` mapping cannot be used; the message says why."""


class Refused(Exception):
    """A request the policy refuses; `reason` says why in words a person can act on."""

    def __init__(self, reason: str, *, listable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # Whether adding the name to the allowlist would let it through.
        self.listable = listable


@dataclass(frozen=True)
class Rule:
    """One allowlist entry."""

    name: str
    wildcard: bool = False
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> Rule:
        """Read `name`, `*.domain` or either with `:port`.

        Raises:
            PolicyInvalid: the entry is an IP address, a malformed name or port.
        """
        text = entry.strip().lower().rstrip(".")
        port: int | None = None
        host = text
        if text.count(":") == 1:
            host, _, port_text = text.partition(":")
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise PolicyInvalid(
                    f"allowlist entry {entry!r} has port {port_text!r}; write a port from 1 to "
                    "65535, e.g. example.com:8443"
                )
            port = int(port_text)
        wildcard = host.startswith("*.")
        name = host[2:] if wildcard else host
        if _is_ip_literal(name.strip("[]")):
            raise PolicyInvalid(
                f"allowlist entry {entry!r} is an IP address; the allowlist takes domain names. "
                "To reach an address, give it a name in network_resolve (e.g. network_resolve = "
                '{"myhost.test" = "10.0.0.5"}) and allow that name'
            )
        if not _NAME.match(name) or ("." not in name and wildcard):
            raise PolicyInvalid(
                f"allowlist entry {entry!r} is not a domain name; write a name like example.com, "
                "*.example.com (the names below it) or example.com:8443"
            )
        return cls(name=name, wildcard=wildcard, port=port)

    def matches(self, host: str, port: int) -> bool:
        if self.port is None and port not in DEFAULT_PORTS:
            return False
        if self.port is not None and port != self.port:
            return False
        if self.wildcard:
            return host.endswith("." + self.name)
        return host == self.name

    def __str__(self) -> str:
        text = ("*." if self.wildcard else "") + self.name
        return text if self.port is None else f"{text}:{self.port}"


@dataclass(frozen=True)
class EgressPolicy:
    """The allowlist of one sandbox and the names the owner mapped to addresses."""

    rules: tuple[Rule, ...] = ()
    resolve: Mapping[str, IPAddress] = field(default_factory=dict)
    # Addresses of this host, refused like loopback (filled by `build` from the interfaces).
    own_addresses: frozenset[IPAddress] = frozenset()

    @classmethod
    def build(cls, allow: Iterable[str], resolve: Mapping[str, str] | None = None) -> EgressPolicy:
        """Parse entries and mappings.

        Raises:
            PolicyInvalid: naming the bad entry or mapping and the fix.
        """
        rules = tuple(Rule.parse(entry) for entry in allow)
        mapped: dict[str, IPAddress] = {}
        for name, address in (resolve or {}).items():
            key = name.strip().lower().rstrip(".")
            if not _NAME.match(key):
                raise PolicyInvalid(
                    f"network_resolve has {name!r}, which is not a domain name; map names like "
                    '"intranet.test" to addresses'
                )
            try:
                mapped[key] = ipaddress.ip_address(address.strip())
            except ValueError:
                raise PolicyInvalid(
                    f"network_resolve maps {name!r} to {address!r}, which is not an IP address; "
                    'write e.g. "10.0.0.5" or "::1"'
                ) from None
        return cls(rules=rules, resolve=mapped, own_addresses=host_addresses())

    def allowed(self, host: str, port: int) -> bool:
        return any(rule.matches(host, port) for rule in self.rules)

    def check_name(self, host: str, port: int) -> str:
        """Return the normalised name if `host:port` is on the list.

        Raises:
            Refused: an IP literal, a malformed name, or a name not on the list.
        """
        name = host.strip().lower().rstrip(".")
        if _is_ip_literal(name.strip("[]")):
            raise Refused(
                f"{host} is an IP address; this sandbox reaches the internet only by allowed "
                "domain names (an owner can name an address in network_resolve and allow the name)"
            )
        if not _NAME.match(name):
            raise Refused(f"{host!r} is not a valid domain name")
        if not self.allowed(name, port):
            raise Refused(f"{name}:{port} is not on this task's network allowlist", listable=True)
        return name

    def addresses(self, name: str, port: int) -> list[IPAddress]:
        """Resolve an allowed name to the addresses it may be reached at (blocking DNS).

        Raises:
            Refused: the name does not resolve, or resolves to an address that is refused.
        """
        if name in self.resolve:
            return [self.resolve[name]]
        try:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise Refused(f"{name} does not resolve ({exc})") from None
        found = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        # Every address must pass, not just one: a name that answers with a public and a
        # private address (DNS rebinding, split answers) is refused as a whole.
        for address in found:
            why = self.forbidden(address)
            if why:
                raise Refused(
                    f"{name} resolves to {address}, {why}; Dispatch does not let a sandbox reach "
                    "this host or its network by name (an owner can map the name in "
                    "network_resolve to allow it)"
                )
        if not found:
            raise Refused(f"{name} has no address")
        return found

    def forbidden(self, address: IPAddress) -> str:
        """Why an address may not be reached by a resolved name ("" if it may)."""
        if isinstance(address, ipaddress.IPv6Address):
            # IPv4 carried inside IPv6 is judged as the IPv4 it reaches: mapped, 6to4
            # (2002::/16) and Teredo (both ends); `ipaddress`'s own tables differ by release.
            if address.ipv4_mapped is not None:
                return self.forbidden(address.ipv4_mapped)
            embedded = [address.sixtofour, *(address.teredo or ())]
            for inner in embedded:
                if inner is not None and (why := self.forbidden(inner)):
                    return f"{why} inside an IPv6 address"
            if address in SITE_LOCAL:
                return "a site-local address"
        if address.is_loopback:
            return "a loopback address"
        if address in self.own_addresses:
            return "an address of this host"
        if address.is_link_local:
            return "a link-local address"
        if address.is_multicast:
            return "a multicast address"
        if address.is_unspecified or address.is_reserved:
            return "a reserved address"
        if address.is_private or not address.is_global:
            return "a private address"
        return ""

    def describe(self) -> str:
        return ", ".join(str(rule) for rule in self.rules) or "nothing"


# Deprecated (RFC 3879) but still routed on some networks; not in every release's tables.
SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")


def _is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def host_addresses() -> frozenset[IPAddress]:
    """This host's own addresses, as far as they can be found without extra libraries."""
    found: set[IPAddress] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
    except OSError:
        pass
    # The source address the host would use outward (no packet is sent for a UDP connect).
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((probe, 9))
                found.add(ipaddress.ip_address(sock.getsockname()[0].split("%")[0]))
        except OSError:
            pass
    try:
        with open("/proc/net/if_inet6") as lines:
            for line in lines:
                raw = line.split()[0]
                found.add(ipaddress.IPv6Address(int(raw, 16)))
    except (OSError, ValueError, IndexError):
        pass
    return frozenset(found)
