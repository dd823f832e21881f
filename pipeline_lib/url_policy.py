"""Which attachment URLs the pipeline may fetch (invariant 6). Shared by ingest (static checks on
every URL of an event) and download (the same checks plus resolved addresses, on every hop).

A refusal raises UrlRefused with a `rule` a human can act on; no check here opens a connection.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline_lib.config import UrlPolicySettings
from pipeline_lib.errors import PipelineError

# Instance metadata and platform endpoints of the clouds the pipeline runs in (credentials live
# there): AWS/Azure/GCP IMDS, AWS ECS task metadata, AWS IMDS over IPv6, Azure's wire server,
# Alibaba, Oracle. Refused whatever the local exemptions say.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "168.63.129.16", "100.100.100.200", "192.0.0.192")
)


class UrlRefused(PipelineError, ValueError):
    """The URL is not allowed; `rule` names the check (scheme, host, credentials, address, syntax)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class UrlPolicy:
    allowed_schemes: frozenset[str] = frozenset({"https"})
    # "files.example.com" exact, ".example.com" it and its subdomains, "*.example.com" its subdomains
    # only (any depth); () = any. config.py refuses entries that could never match.
    allowed_hosts: tuple[str, ...] = ()
    allow_private_addresses: bool = False
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: UrlPolicySettings) -> UrlPolicy:
        return cls(
            frozenset(settings.allowed_schemes),
            tuple(h.lower() for h in settings.allowed_hosts),
            settings.allow_private_addresses,
            tuple(ipaddress.ip_network(n) for n in settings.allowed_networks),
        )

    def host_allowed(self, host: str) -> bool:
        if not self.allowed_hosts:
            return True
        host = host.lower().rstrip(".")
        for pattern in self.allowed_hosts:
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]):
                    return True
            elif pattern.startswith("."):
                if host.endswith(pattern) or host == pattern[1:]:
                    return True
            elif host == pattern:
                return True
        return False

    def check_url(self, url: str) -> tuple[str, int]:
        """Static checks (no DNS): returns (host, port) or raises UrlRefused."""
        if not isinstance(url, str) or not url.strip():
            raise UrlRefused("syntax", "the attachment URL is empty or not a string")
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise UrlRefused("syntax", f"the URL cannot be parsed: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in self.allowed_schemes:
            allowed = ", ".join(sorted(self.allowed_schemes))
            raise UrlRefused(
                "scheme", f"scheme {scheme or '(none)'!r} is not allowed (url_policy.allowed_schemes: {allowed})"
            )
        if parts.username is not None or parts.password is not None:
            raise UrlRefused("credentials", "the URL carries credentials (user:password@host); they are never sent")
        host = parts.hostname
        if not host:
            raise UrlRefused("syntax", "the URL has no host")
        if not self.host_allowed(host):
            raise UrlRefused("host", f"host {host!r} is not in url_policy.allowed_hosts")
        # An IP literal ends with a digit (IPv4) or holds a colon (IPv6); a name never parses as one.
        if host[-1].isdigit() or ":" in host:
            try:
                literal = ipaddress.ip_address(host)
            except ValueError:
                literal = None
            if literal is not None:
                self.check_address(literal)
        return host, port or (443 if scheme == "https" else 80)

    def check_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> None:
        """Refuse private, loopback, link-local, multicast, reserved and IPv4-mapped addresses.

        Unspecified addresses (0.0.0.0, ::) and cloud metadata endpoints are refused always, even
        under allow_private_addresses or an allowed network: they are never an attachment source.
        """
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            raise UrlRefused("address", f"address {ip} is an IPv4-mapped IPv6 address")
        if ip.is_unspecified or ip in METADATA_ADDRESSES:
            raise UrlRefused("address", f"address {ip} is unspecified or a cloud metadata endpoint; never fetched")
        if any(ip in network for network in self.allowed_networks):
            return
        # The local exemption covers loopback and private ranges, never link-local (cloud metadata).
        if self.allow_private_addresses and not ip.is_link_local and (ip.is_private or ip.is_loopback):
            return
        if ip.is_multicast or ip.is_unspecified or ip.is_reserved or ip.is_link_local or not ip.is_global:
            raise UrlRefused(
                "address",
                f"address {ip} is private, loopback, link-local, multicast or reserved "
                "(only url_policy.allowed_networks or, locally, allow_private_addresses exempt one)",
            )

    def resolve(
        self,
        host: str,
        port: int,
        resolver: Callable[..., list] = socket.getaddrinfo,
    ) -> list[str]:
        """Resolve `host` and check every address it maps to; returns the addresses."""
        try:
            infos = resolver(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UrlRefused("dns", f"host {host!r} does not resolve: {exc}") from None
        addresses = sorted({info[4][0] for info in infos})
        for address in addresses:
            self.check_address(address)
        return addresses
