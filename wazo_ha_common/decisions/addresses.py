"""Addresses of the other node: what may be one (parsed from the settings, ha.conf or a command
line), and values shown short in error messages."""

from __future__ import annotations

import ipaddress

from ..errors import InputError


def shown(value: object, limit: int = 60) -> str:
    """A value quoted for an error message, cut short: a 100 kB argument gives one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + "...'"


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address usable as a peer; hostnames and special addresses are refused.

    An IPv4 address written IPv4-mapped (::ffff:a.b.c.d) is that IPv4 address."""
    if not isinstance(text, str):
        raise InputError(f'{shown(text)} is not an IP address')
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        raise InputError(f'{shown(text)} is not an IP address (a hostname is not '
                         'accepted)') from None
    if ip.version == 6 and ip.scope_id:
        raise InputError(f'{shown(text)}: a link-local address with a zone cannot be the '
                         'address of the other node')
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    broadcast = ip == ipaddress.IPv4Address('255.255.255.255')
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local or broadcast:
        raise InputError(f'{ip} (unspecified, loopback, multicast, link-local or broadcast) '
                         'cannot be the address of the other node')
    return ip
