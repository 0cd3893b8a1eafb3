"""Probes of the master (side effects): ICMP, optional TCP ports, HTTP status URL and SIP
OPTIONS requests (the telephony-native check: Asterisk answers OPTIONS whatever its
configuration, so any SIP response means it runs)."""

from __future__ import annotations

import re
import secrets
import socket
import time

import requests
import urllib3

from ..decisions.health import Probe
from ..settings import Settings
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
        # a health URL of the master, often with a self-signed certificate: its answer is
        # what counts, and urllib3's warning would be a second stderr line every minute
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return requests.get(url, timeout=timeout, verify=False).status_code < 400
    except requests.RequestException:
        return False


SIP_STATUS = re.compile(rb'^SIP/2\.0 [1-6][0-9][0-9] ')


def sip_request(master_ip: str, port: int, transport: str, local: tuple[str, int],
                call_id: str, branch: str, tag: str) -> bytes:
    """An OPTIONS request as RFC 3261 wants it (section 11: Via with a z9hG4bK branch, From
    with a tag, To, Call-ID, CSeq, Max-Forwards)."""
    host = f'[{master_ip}]' if ':' in master_ip else master_ip
    me = f'[{local[0]}]' if ':' in local[0] else local[0]
    uri = f'sip:{host}:{port}'
    lines = [
        f'OPTIONS {uri};transport={transport} SIP/2.0',
        f'Via: SIP/2.0/{transport.upper()} {me}:{local[1]};branch={branch};rport',
        'Max-Forwards: 70',
        f'From: <sip:wazo-ha@{me}>;tag={tag}',
        f'To: <{uri}>',
        f'Call-ID: {call_id}',
        'CSeq: 1 OPTIONS',
        f'Contact: <sip:wazo-ha@{me}:{local[1]};transport={transport}>',
        'Accept: application/sdp',
        'User-Agent: wazo-ha xivo-check-master-status',
        'Content-Length: 0',
    ]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('ascii')


def is_sip_response(data: bytes, call_id: str) -> bool:
    """A SIP response (any status) to our request: status line, and our Call-ID."""
    if not SIP_STATUS.match(data):
        return False
    head = data.split(b'\r\n\r\n', 1)[0].decode('utf-8', 'replace')
    for line in head.split('\r\n')[1:]:
        name, _, value = line.partition(':')
        if name.strip().lower() in ('call-id', 'i') and value.strip() == call_id:
            return True
    return False


def sip_options(ip: str, port: int, transport: str, timeout: float) -> bool:
    """Send one SIP OPTIONS request over udp or tcp; True on any SIP response within timeout."""
    family = socket.AF_INET6 if ':' in ip else socket.AF_INET
    call_id = f'{secrets.token_hex(12)}@wazo-ha'
    branch = 'z9hG4bK' + secrets.token_hex(8)
    tag = secrets.token_hex(6)
    deadline = time.monotonic() + timeout
    kind = socket.SOCK_DGRAM if transport == 'udp' else socket.SOCK_STREAM
    try:
        with socket.socket(family, kind) as s:
            s.settimeout(timeout)
            s.connect((ip, port))  # UDP: only fixes the peer (and our address for Via)
            request = sip_request(ip, port, transport, s.getsockname()[:2], call_id, branch, tag)
            s.sendall(request)
            received = b''
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                s.settimeout(left)
                data = s.recv(65535)
                if transport == 'udp':
                    if is_sip_response(data, call_id):
                        return True
                    continue  # a stray datagram: keep waiting for ours
                if not data:
                    return False
                received += data
                if b'\r\n\r\n' in received:
                    return is_sip_response(received, call_id)
    except OSError:  # refused (ICMP port unreachable, RST), timeout, unreachable
        return False


def probe(settings: Settings, master_ip: str, clock=time.monotonic) -> Probe:
    """One probe: the master is up only if every configured check answers."""
    c = settings.check
    at = clock()
    failed = []
    if not ping(master_ip, c.probe_timeout):
        # silent: the service checks would only add their timeouts to the probe
        failed.append('no ping reply')
    else:
        for port in c.tcp_ports:
            if not tcp(master_ip, port, c.probe_timeout):
                failed.append(f'TCP {port} closed')
        if c.http_url and not http(c.http_url, c.probe_timeout):
            failed.append(f'{c.http_url} not OK')
        for transport, port in c.sip_options:
            if not sip_options(master_ip, port, transport, c.probe_timeout):
                failed.append(f'no SIP answer to OPTIONS on {transport}:{port}')
    witness = None
    if failed and c.witness:
        witness = ping(c.witness, c.probe_timeout)
    return Probe(at=at, master=not failed, witness=witness, detail=', '.join(failed))
