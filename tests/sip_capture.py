"""What the SIP traffic on the testbed's bridge says about the phones (bench/phones.py): a
pcap file written by tcpdump (Debian's) read here, and per phone how long calls failed.

The call probes name themselves in their Call-ID (tests/phone.py): `in-PHONE-ROUND-SERVER` for
the caller's calls into a phone (one per server each round), `out-PHONE-N-...` for a phone's
own calls. An attempt works when a 200 answers one of its INVITEs on the wire."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass

ETHERNET, LINUX_SLL = 1, 113


class Capture:
    """tcpdump on the hub's bridge, SIP only, into a file."""

    def __init__(self, bed, path: str):
        self.path = path
        self.proc = subprocess.Popen(['ip', 'netns', 'exec', bed.hub, 'tcpdump', '-i', 'br0',
                                      '-n', '-U', '-s', '2000', '-w', path, 'udp port 5060'],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (os.path.exists(path)
                                                   and os.path.getsize(path) >= 24):
            time.sleep(0.1)
        time.sleep(0.5)  # tcpdump has written its header: it captures

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass(frozen=True)
class Sip:
    t: float
    src: tuple[str, int]
    dst: tuple[str, int]
    first: str
    call_id: str
    cseq: str

    @property
    def status(self) -> int:
        return int(self.first.split()[1]) if self.first.startswith('SIP/2.0 ') else 0

    @property
    def method(self) -> str:
        return '' if self.status else self.first.split(' ', 1)[0]


def udp_packets(path: str):
    """(time, (src ip, port), (dst ip, port), payload) of every IPv4 UDP packet of a pcap."""
    with open(path, 'rb') as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1'):
        endian = '<'
    elif magic in (b'\xa1\xb2\xc3\xd4', b'\xa1\xb2\x3c\x4d'):
        endian = '>'
    else:
        raise ValueError(f'{path}: not a pcap file')
    nano = magic in (b'\x4d\x3c\xb2\xa1', b'\xa1\xb2\x3c\x4d')
    linktype = struct.unpack(endian + 'I', data[20:24])[0]
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + 'IIII', data[offset:offset + 16])
        if offset + 16 + incl > len(data):  # still being written
            break
        frame = data[offset + 16:offset + 16 + incl]
        offset += 16 + incl
        t = sec + frac / (1e9 if nano else 1e6)
        if linktype == ETHERNET:
            kind, at = struct.unpack('>H', frame[12:14])[0], 14
            if kind == 0x8100:
                kind, at = struct.unpack('>H', frame[16:18])[0], 18
        elif linktype == LINUX_SLL:
            kind, at = struct.unpack('>H', frame[14:16])[0], 16
        else:
            raise ValueError(f'{path}: link type {linktype} not understood')
        if kind != 0x0800 or len(frame) < at + 28:
            continue
        ip = frame[at:]
        header = (ip[0] & 0x0f) * 4
        if ip[9] != 17 or struct.unpack('>H', ip[6:8])[0] & 0x1fff:  # UDP, first fragment
            continue
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        sport, dport = struct.unpack('>HH', ip[header:header + 4])
        yield t, (src, sport), (dst, dport), ip[header + 8:]


def sip_messages(path: str) -> list[Sip]:
    out = []
    for t, src, dst, payload in udp_packets(path):
        head = payload.split(b'\r\n\r\n', 1)[0].decode('utf-8', 'replace').split('\r\n')
        if not head or not (head[0].endswith('SIP/2.0') or head[0].startswith('SIP/2.0 ')):
            continue
        fields = {}
        for line in head[1:]:
            key, sep, value = line.partition(':')
            if sep:
                fields.setdefault(key.strip().lower(), value.strip())
        out.append(Sip(t, src, dst, head[0], fields.get('call-id', fields.get('i', '')),
                       fields.get('cseq', '')))
    return out


def attempts(messages: list[Sip], kind: str,
             via: str | None = None) -> dict[str, list[tuple[float, bool]]]:
    """Per phone, its call attempts of `kind` ('in' or 'out') in time order: (when the first
    INVITE of the attempt crossed the bridge, or the call was placed when its Call-ID says so,
    whether a 200 answered one of its INVITEs on the bridge). A round of calls in is one
    attempt through every server (it works if one answers); with `via` (a server's address),
    only the calls in through that server count: the view of a caller who reaches that node
    only."""
    first: dict[tuple[str, str], float] = {}
    answered: set[tuple[str, str]] = set()
    for m in messages:
        parts = m.call_id.split('-')
        if len(parts) < 3 or parts[0] != kind or not m.cseq.endswith('INVITE'):
            continue
        if via is not None and (len(parts) < 4 or parts[3] != via):
            continue
        key = (parts[1], parts[2])
        if m.method == 'INVITE':
            # a call out carries the time it was placed (phone.py): its INVITE to a dead
            # primary may never reach the wire
            placed = int(parts[3]) / 1000 if len(parts) > 3 and parts[3].isdigit() else m.t
            first[key] = min(first.get(key, placed), placed, m.t)
        elif m.status == 200:
            answered.add(key)
    out: dict[str, list[tuple[float, bool]]] = {}
    for (phone, _), t in first.items():
        out.setdefault(phone, [])
    for key, t in first.items():
        out[key[0]].append((t, key in answered))
    for series in out.values():
        series.sort()
    return out


def failed_time(series: list[tuple[float, bool]], start: float, end: float) -> tuple[float, bool]:
    """Seconds during which attempts failed in [start, end): each run of failed attempts counts
    from its first failure to the next attempt that works (or `end`: then cut, True)."""
    total, since, cut = 0.0, None, False
    for t, ok in series:
        if t < start or t >= end:
            continue
        if not ok and since is None:
            since = t
        elif ok and since is not None:
            total += t - since
            since = None
    if since is not None:
        total += end - since
        cut = True
    return total, cut


def first_from(messages: list[Sip], host: str, after: float, port: int = 5060) -> float | None:
    """When `host`:`port` first sent SIP after `after` (a registrar answering again)."""
    times = [m.t for m in messages if m.src == (host, port) and m.t > after]
    return min(times) if times else None


def last_from(messages: list[Sip], host: str, before: float, after: float,
              port: int = 5060) -> float | None:
    """When `host`:`port` last sent SIP in (after, before) (a registrar that stopped)."""
    times = [m.t for m in messages if m.src == (host, port) and after < m.t < before]
    return max(times) if times else None


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (linear between ranks); nan for no value."""
    ordered = sorted(values)
    if not ordered:
        return float('nan')
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
