"""Review 3: IPv6 spellings of private and loopback IPv4 addresses pass the egress policy.

`EgressPolicy.forbidden` unwraps IPv4-mapped addresses (::ffff:a.b.c.d) but not 6to4
(2002:AABB:CCDD::/48 embeds the IPv4 address AA.BB.CC.DD) and not the deprecated site-local
fec0::/10, and leans on `ipaddress`'s is_private/is_global, whose tables differ between Python
releases (3.11.7, this venv's, has 2002::/16 as global). A name on the allowlist (or below an
allowed wildcard whose DNS the attacker controls, e.g. *.github.io) that answers AAAA
2002:7f00:1:: or 2002:a00:1:: is connected to; on a host with a 6to4 route that is the
host's loopback or its private network, and fec0:: is routed on some internal networks.
"""

from __future__ import annotations

import ipaddress

import pytest

from sandbox.egress.policy import EgressPolicy


@pytest.mark.parametrize(
    "address",
    [
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254 (cloud metadata)
        "fec0::1",  # site-local
    ],
)
def test_v6_forms_of_local_addresses_are_forbidden(address: str) -> None:
    policy = EgressPolicy.build(["allowed.test"])
    assert policy.forbidden(ipaddress.ip_address(address)), address
