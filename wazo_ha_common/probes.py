"""Probes of the master (side effects): ICMP, optional TCP ports and HTTP status URL."""

from __future__ import annotations

import socket
import time

import requests

from .health import Probe
from .settings import Settings
from .system import run


def ping(ip: str, timeout: float) -> bool:
    """Three echo requests 0.2 s apart; one reply is enough (a lossy link is not a dead one)."""
    wait = max(1, round(timeout))
    result = run(('ping', '-n', '-q', '-c', '3', '-i', '0.2', '-W', str(wait), ip),
                 timeout=timeout + 5, check=False)
    return result.returncode == 0


def tcp(ip: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def http(url: str, timeout: float) -> bool:
    try:
        return requests.get(url, timeout=timeout, verify=False).status_code < 400
    except requests.RequestException:
        return False


def probe(settings: Settings, master_ip: str, clock=time.monotonic) -> Probe:
    """One probe: the master is up only if every configured check answers."""
    c = settings.check
    at = clock()
    failed = []
    if not ping(master_ip, c.probe_timeout):
        failed.append('no ping reply')
    for port in c.tcp_ports:
        if not tcp(master_ip, port, c.probe_timeout):
            failed.append(f'TCP {port} closed')
    if c.http_url and not http(c.http_url, c.probe_timeout):
        failed.append(f'{c.http_url} not OK')
    witness = None
    if failed and c.witness:
        witness = ping(c.witness, c.probe_timeout)
    return Probe(at=at, master=not failed, witness=witness, detail=', '.join(failed))
