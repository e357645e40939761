"""Which `Host` names the server answers to: the DNS-rebinding guard.

A web page can make the browser resolve its own name (`attacker.example`) to 127.0.0.1 and then
talk to a local server as a "same-origin" site: the Origin and the Host then agree, so an Origin
check alone lets it through. A server bound to a loopback address therefore answers only
requests that name it by a loopback name (`localhost`, `127.x.x.x`, `[::1]`), or by a name the
user allowed (`graphgen serve --allow-host NAME`). A server the user bound to a network address
answers to any name (it is reachable under names graphgen cannot know).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """`localhost`, or an IPv4/IPv6 loopback address (brackets allowed)."""
    name = host.strip().rstrip(".").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The name in a `Host` header, without the port (`[::1]:8188` → `::1`); None when malformed."""
    try:
        parsed = urlsplit("//" + header.strip())
        name = parsed.hostname
        parsed.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return None
    return name.rstrip(".") if name else None


def host_allowed(header: str | None, bound: str, allowed: Iterable[str] = ()) -> bool:
    """Whether a request naming `header` may be answered by a server bound to `bound`.

    Args:
        header: The request's `Host` header (None when absent).
        bound: The address the server listens on.
        allowed: Extra names the user allowed (case-insensitive).
    """
    if not is_loopback(bound):
        return True
    name = host_name(header) if header else None
    if name is None:
        return False
    return is_loopback(name) or name.lower() in {a.strip().rstrip(".").lower() for a in allowed}
