"""The guard on every request the service makes on a user's behalf (webhooks, ``url`` inputs).

A user names the address; without a guard that is server-side request forgery: the service would
fetch its own Redis, the cloud metadata endpoint (169.254.169.254) or an intranet page for them. So
every outbound request resolves the host first and is refused unless every address it resolves to is
a public one, or the host or address is named in ``outbound_allow`` (host names, addresses or CIDR
networks: ``["127.0.0.1", "10.0.0.0/8", "hooks.internal"]``). The connection then goes to the
address that was checked, never to a second lookup (no DNS rebinding), with the host name kept in
``Host`` and in TLS's SNI. Redirects are not followed here: the caller re-checks each hop.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRefused(Exception):
    """The URL may not be requested: bad scheme, unresolvable host, or a non-public address."""


@dataclass(frozen=True)
class Allow:
    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allow:
        hosts, networks = set(), []
        for entry in entries:
            entry = entry.strip()
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def permits(self, host: str, address: IPAddress) -> bool:
        return host in self.hosts or any(address in net for net in self.networks)


def is_public(address: IPAddress) -> bool:
    """A global unicast address: not loopback, private, link-local, shared (CGNAT), multicast or reserved."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress

    def pinned_url(self) -> str:
        """The URL with the checked address in place of the host name."""
        parts = urlsplit(self.url)
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return urlunsplit((parts.scheme, f"{host}:{self.port}", parts.path or "/", parts.query, ""))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def check_url(url: str, allow: Allow) -> Target:
    """Resolve ``url``'s host and check every address; the first one to connect to, or AddressRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise AddressRefused(f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    if parts.username or parts.password:
        raise AddressRefused("URLs with a user name or password are not allowed")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise AddressRefused("the URL has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise AddressRefused(f"the host {host!r} does not resolve: {exc}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    if not addresses:
        raise AddressRefused(f"the host {host!r} does not resolve")
    for address in addresses:
        if not is_public(address) and not allow.permits(host, address):
            raise AddressRefused(
                f"{host} resolves to {address}, a loopback, private or link-local address; such targets "
                "need SRGAN_OUTBOUND_ALLOW")
    return Target(url, parts.scheme, host, port, addresses[0])


def send(client: httpx.Client, method: str, url: str, allow: Allow, **kwargs: object) -> httpx.Response:
    """One request to a checked, pinned address (redirects are the caller's); raises AddressRefused."""
    target = check_url(url, allow)
    headers = {**dict(kwargs.pop("headers", None) or {}), "Host": target.host_header}  # type: ignore[call-overload]
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    request = client.build_request(method, target.pinned_url(), headers=headers, extensions=extensions,
                                   **kwargs)  # type: ignore[arg-type]
    return client.send(request, stream=True, follow_redirects=False)
