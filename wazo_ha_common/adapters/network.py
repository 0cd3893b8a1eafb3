"""The network as this node sees it: which of its addresses reaches the peer."""

from __future__ import annotations

import socket

from ..errors import WazoHaError


def source_address(peer: str) -> str:
    """The local address this node uses to reach peer (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ':' in peer else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((peer, 9))
            return s.getsockname()[0]
    except OSError as e:
        raise WazoHaError(f'this node has no route to {peer}: {e.strerror}') from None
