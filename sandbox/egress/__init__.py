"""Restricted internet for network mode `allowlist`: a filtering proxy outside the sandbox.

policy.py   which names and ports are allowed, and the addresses they may resolve to
sni.py      the server name of a TLS ClientHello
proxy.py    the asyncio proxy itself (plain HTTP and CONNECT), run as a child process
process.py  starting and stopping that child, collecting its request records
relay.py    the sandbox side: 127.0.0.1:3128 in the container relayed to the proxy's socket
record.py   one request as recorded
"""

from __future__ import annotations

from sandbox.egress.policy import EgressPolicy, PolicyInvalid, Refused, Rule
from sandbox.egress.process import ProxyFailed, ProxyProcess
from sandbox.egress.record import EgressRecord

__all__ = [
    "EgressPolicy",
    "EgressRecord",
    "PolicyInvalid",
    "ProxyFailed",
    "ProxyProcess",
    "Refused",
    "Rule",
]
