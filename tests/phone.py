"""SIP phones with a primary and a backup registrar, as Wazo provisions them, for the tests and
bench/phones.py: every timer a parameter, Yealink's defaults by default.

What Wazo's provisioning plugins give the phones (wazo-platform/wazo-provd-plugins):
- Yealink (plugins/wazo_yealink/v86/templates/base.tpl): `sip_server.1` = master,
  `sip_server.2` = slave (backup_proxy_ip), `fallback.redundancy_type = 1` (successive: one
  server at a time); everything else at Yealink's defaults: `retry_counts` 3 (retransmissions
  of a request before the next server is tried), `failback_mode` 0 (every new request tries the
  primary first), `fallback.timeout` 120 s (while on the backup, the primary is tried again this
  often), `reg_fail_retry_interval` 30 s (both servers failed: try again after this);
- Polycom (plugins/wazo_polycom/common/templates/base.tpl): `reg.N.server.1/2`, expires 3600
  asked (the server grants at most its maximum expiry); it renews 60 s before expiry
  (`refresh_margin` here);
- Snom (plugins/wazo_snom/common/templates/base.tpl): a failover identity on the backup; it
  switches only after a failed re-registration, as the model below does.

The model (one process, any number of phones, one UDP socket each):
- REGISTER to the primary; renewed `refresh_margin` seconds before the granted expiry (at most
  half of it); a request unanswered after `retry_counts` retransmissions (T1, 2T1, 4T1...,
  RFC 3261 timer A) fails: a failed registration moves to the other server; both failed: again
  from the primary after `reg_fail_retry_interval`;
- registered on the backup: every `fallback_timeout` a REGISTER to the primary; answered, the
  phone is registered there again (and leaves the backup registration to expire unless
  `unregister_on_return`);
- calls in: answered 200 at once (then the caller's ACK and BYE); calls out (every
  `call_every` seconds when set): INVITE to the primary first (failback_mode 0), then to the
  backup when the primary does not answer.

Run as `phone.py CONFIG.json`: it writes what each phone did as JSON lines (the phones' own
word; the benchmark measures from a capture instead) and stops on SIGTERM.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import random
import selectors
import signal
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Timers:
    """A phone's timers, seconds; Yealink defaults (see the module's docstring)."""
    expiry: int = 3600                  # asked in REGISTER (Yealink, Polycom: 3600)
    refresh_margin: float = 60          # renew this long before the granted expiry
    t1: float = 0.5                     # RFC 3261 T1: first retransmission interval
    retry_counts: int = 3               # retransmissions before a request fails
    fallback_timeout: float = 120       # on the backup: try the primary this often
    reg_fail_retry_interval: float = 30  # both servers failed: try again after this
    unregister_on_return: bool = False  # back on the primary: Expires: 0 to the backup
    call_every: float = 0               # place a call this often (0: never)

    @property
    def request_timeout(self) -> float:
        """Seconds after which an unanswered request fails (sent at 0, T1, 3T1, 7T1...)."""
        return self.t1 * (2 ** (self.retry_counts + 1) - 1)

    def scaled(self, factor: float) -> Timers:
        """Every duration times `factor` (retry_counts and the asked expiry are counts)."""
        values = asdict(self)
        for key in ('refresh_margin', 't1', 'fallback_timeout', 'reg_fail_retry_interval',
                    'call_every'):
            values[key] = values[key] * factor
        return Timers(**values)


# --- minimal SIP messages ------------------------------------------------------------------

@dataclass
class Message:
    first: str
    headers: list[tuple[str, str]]

    @property
    def is_response(self) -> bool:
        return self.first.startswith('SIP/2.0 ')

    @property
    def status(self) -> int:
        return int(self.first.split()[1]) if self.is_response else 0

    @property
    def method(self) -> str:
        return self.first.split()[0] if not self.is_response else self.header('cseq').split()[1]

    def header(self, name: str) -> str:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return ''

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def parse(data: bytes) -> Message | None:
    try:
        text = data.decode('utf-8', 'replace')
        head = text.split('\r\n\r\n', 1)[0]
        first, *lines = head.split('\r\n')
        headers = []
        for line in lines:
            key, sep, value = line.partition(':')
            if sep:
                headers.append((key.strip(), value.strip()))
        return Message(first, headers)
    except (ValueError, IndexError):
        return None


def render(first: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [first] + [f'{k}: {v}' for k, v in headers] + ['Content-Length: 0', '', '']
    return '\r\n'.join(lines).encode()


def uri_host_port(uri: str) -> tuple[str, int]:
    """('198.18.0.10', 5100) of `<sip:user@198.18.0.10:5100;...>`."""
    inner = uri.split('<', 1)[-1].split('>', 1)[0]
    if inner.startswith(('sip:', 'sips:')):
        inner = inner.split(':', 1)[1]
    hostport = inner.split('@', 1)[-1].split(';', 1)[0]
    host, _, port = hostport.partition(':')
    return host, int(port or 5060)


def granted_expiry(msg: Message, contact: str, asked: int) -> int:
    """The expiry a REGISTER's 200 grants to our contact (its `expires` parameter), else
    the Expires header, else what was asked."""
    for value in msg.all('contact'):
        for item in value.split(','):
            if contact in item and 'expires=' in item:
                return int(item.split('expires=', 1)[1].split(';', 1)[0].strip())
    header = msg.header('expires')
    return int(header) if header.isdigit() else asked


# --- one thread, timers and sockets ----------------------------------------------------------

class Engine:
    def __init__(self, log_path: str | None = None):
        self.selector = selectors.DefaultSelector()
        self.timers: list = []
        self.counter = itertools.count()
        self.running = True
        self.log_file = open(log_path, 'a', buffering=1) if log_path else None

    def at(self, when: float, callback) -> list:
        entry = [when, next(self.counter), callback, True]
        heapq.heappush(self.timers, entry)
        return entry

    def later(self, delay: float, callback) -> list:
        return self.at(time.monotonic() + delay, callback)

    @staticmethod
    def cancel(entry) -> None:
        if isinstance(entry, list):
            entry[3] = False

    def log(self, **event) -> None:
        if self.log_file:
            self.log_file.write(json.dumps({'t': round(time.time(), 4), **event}) + '\n')

    def run(self, until: float | None = None) -> None:
        while self.running and (until is None or time.monotonic() < until):
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                entry = heapq.heappop(self.timers)
                if entry[3]:
                    entry[2]()
            wait = self.timers[0][0] - time.monotonic() if self.timers else 0.5
            if until is not None:
                wait = min(wait, until - time.monotonic())
            for key, _ in self.selector.select(max(0.0, min(wait, 0.5))):
                key.data()


class Endpoint:
    """A UDP socket with client transactions (retransmitted, timed out) and a request handler."""

    def __init__(self, engine: Engine, ip: str, port: int, timers: Timers):
        self.engine, self.ip, self.port, self.timers = engine, ip, port, timers
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.sock.setblocking(False)
        engine.selector.register(self.sock, selectors.EVENT_READ, self._readable)
        self.transactions: dict[str, dict] = {}

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        # an error may be the one an earlier packet left on the socket (a host that did not
        # answer ARP): this packet is then not sent, so once again; a second error is its own
        # (no route: the link is down), as lost on the wire
        for _ in range(2):
            try:
                self.sock.sendto(data, dest)
                return
            except OSError:
                continue

    def request(self, dest: tuple[str, int], method: str, ruri: str, headers: list,
                on_final, retransmit: bool = True) -> None:
        """Send a request; on_final(msg or None) once: the final response or the timeout."""
        branch = 'z9hG4bK' + uuid.uuid4().hex[:16]
        data = render(f'{method} {ruri} SIP/2.0',
                      [('Via', f'SIP/2.0/UDP {self.ip}:{self.port};branch={branch};rport'),
                       ('Max-Forwards', '70')] + headers)
        tx = {'on_final': on_final, 'timer': None}
        self.transactions[branch] = tx
        interval = self.timers.t1

        def retransmit_later(delay):
            def fire():
                nonlocal interval
                if branch in self.transactions:
                    self.send(data, dest)
                    interval *= 2
                    tx['timer'] = retransmit_later(interval)
            return self.engine.later(delay, fire)

        self.send(data, dest)
        if retransmit and method != 'ACK':
            tx['timer'] = retransmit_later(interval)
        tx['deadline'] = self.engine.later(self.timers.request_timeout,
                                           lambda: self._timeout(branch))

    def _timeout(self, branch: str) -> None:
        tx = self.transactions.pop(branch, None)
        if tx:
            Engine.cancel(tx['timer'])
            tx['on_final'](None)

    def _readable(self) -> None:
        while True:
            try:
                data, source = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error of an earlier send: as lost
                continue
            msg = parse(data)
            if msg is None:
                continue
            if msg.is_response:
                if msg.status < 200:
                    continue
                via = msg.header('via')
                branch = via.split('branch=', 1)[1].split(';', 1)[0] if 'branch=' in via else ''
                tx = self.transactions.pop(branch, None)
                if tx:
                    Engine.cancel(tx['timer'])
                    Engine.cancel(tx['deadline'])
                    tx['on_final'](msg)
            else:
                self.on_request(msg, source)

    def respond(self, msg: Message, source: tuple[str, int], status: str,
                contact: str | None = None) -> None:
        headers = [('Via', v) for v in msg.all('via')]
        to = msg.header('to')
        if 'tag=' not in to:
            to += ';tag=' + uuid.uuid4().hex[:8]
        headers += [('From', msg.header('from')), ('To', to),
                    ('Call-ID', msg.header('call-id')), ('CSeq', msg.header('cseq'))]
        if contact:
            headers.append(('Contact', contact))
        self.send(render(f'SIP/2.0 {status}', headers), source)

    def on_request(self, msg: Message, source: tuple[str, int]) -> None:
        if msg.first.startswith('ACK '):
            return
        self.respond(msg, source, '200 OK', self.contact)

    @property
    def contact(self) -> str:
        return f'<sip:{self.user}@{self.ip}:{self.port}>'


class Phone(Endpoint):
    """One phone line: primary and backup registrar (successive redundancy)."""

    def __init__(self, engine: Engine, user: str, ip: str, port: int,
                 servers: list[tuple[str, int]], timers: Timers):
        super().__init__(engine, ip, port, timers)
        self.user, self.servers = user, servers
        self.current: int | None = None        # server index registered on
        self.call_id = uuid.uuid4().hex
        self.cseq = itertools.count(1)
        self.refresh_timer = self.probe_timer = None
        self.calls = itertools.count(1)

    def _register(self, index: int, purpose: str, expires: int | None = None) -> None:
        host, port = self.servers[index]
        asked = self.timers.expiry if expires is None else expires
        headers = [('From', f'<sip:{self.user}@{host}>;tag={self.call_id[:8]}'),
                   ('To', f'<sip:{self.user}@{host}>'),
                   ('Call-ID', f'{self.call_id}-{index}'),
                   ('CSeq', f'{next(self.cseq)} REGISTER'),
                   ('Contact', self.contact), ('Expires', str(asked)),
                   ('User-Agent', 'wazo-ha-phone-model')]
        self.request((host, port), 'REGISTER', f'sip:{host}:{port}', headers,
                     lambda msg: self._registered(index, purpose, asked, msg))

    def start(self, delay: float = 0.0) -> None:
        self.engine.later(delay, lambda: self._register(0, 'first'))
        if self.timers.call_every:
            self.engine.later(delay + random.uniform(0, self.timers.call_every), self._call_loop)

    def _registered(self, index: int, purpose: str, asked: int, msg: Message | None) -> None:
        host = self.servers[index][0]
        if asked == 0:  # the backup's registration dropped on return: nothing to follow
            return
        if msg is not None and msg.status == 200:
            granted = granted_expiry(msg, f'{self.ip}:{self.port}', asked)
            previous, self.current = self.current, index
            self.engine.log(phone=self.user, event='registered', server=host, expires=granted,
                            purpose=purpose)
            if previous is not None and previous != index and self.timers.unregister_on_return:
                self._register(previous, 'unregister', expires=0)
            Engine.cancel(self.refresh_timer)
            margin = min(self.timers.refresh_margin, granted / 2)
            self.refresh_timer = self.engine.later(granted - margin, self._refresh)
            if index == 0:
                Engine.cancel(self.probe_timer)
                self.probe_timer = None
            elif self.probe_timer is None:
                self._schedule_probe()
            return
        why = 'no answer' if msg is None else msg.first
        self.engine.log(phone=self.user, event='register failed', server=host, why=why,
                        purpose=purpose)
        if purpose == 'probe':  # the primary still does not answer: stay on the backup
            self._schedule_probe()
        elif purpose in ('first', 'refresh', 'retry') and len(self.servers) > 1:
            self._register(1 - index, 'other')
        else:  # both servers failed
            self.current = None
            Engine.cancel(self.probe_timer)
            self.probe_timer = None
            self.refresh_timer = self.engine.later(self.timers.reg_fail_retry_interval,
                                                   lambda: self._register(0, 'retry'))

    def _refresh(self) -> None:
        self._register(0 if self.current is None else self.current, 'refresh')

    def _schedule_probe(self) -> None:
        def probe():
            self.probe_timer = None
            if self.current == 1:
                self.probe_timer = 'out'  # a probe is out: none scheduled meanwhile
                self._register(0, 'probe')
        self.probe_timer = self.engine.later(self.timers.fallback_timeout, probe)

    def _call_loop(self) -> None:
        self.call()
        self.engine.later(self.timers.call_every, self._call_loop)

    def call(self, target: str = 'echo') -> None:
        """A call out (failback_mode 0: the primary first, then the backup)."""
        # when the call was placed, in its Call-ID: its first INVITE, to a dead primary, may
        # never reach the wire (no ARP answer), and the capture then shows the backup's only
        call_id = f'out-{self.user}-{next(self.calls)}-{round(time.time() * 1000)}'
        began = time.time()

        def attempt(index: int) -> None:
            host, port = self.servers[index]
            headers = [('From', f'<sip:{self.user}@{host}>;tag={call_id[-6:]}'),
                       ('To', f'<sip:{target}@{host}>'), ('Call-ID', call_id),
                       ('CSeq', '1 INVITE'), ('Contact', self.contact)]

            def final(msg: Message | None) -> None:
                if msg is not None and msg.status == 200:
                    self.engine.log(phone=self.user, event='call out answered', server=host,
                                    setup=round(time.time() - began, 3), call_id=call_id)
                    ack = [(k, v) for k, v in headers if k != 'CSeq'] + [('CSeq', '1 ACK')]
                    ack[1] = ('To', msg.header('to'))
                    self.request((host, port), 'ACK', f'sip:{target}@{host}', ack,
                                 lambda m: None, retransmit=False)
                elif msg is None and index + 1 < len(self.servers):
                    attempt(index + 1)
                else:
                    self.engine.log(phone=self.user, event='call out failed', call_id=call_id,
                                    why='no answer' if msg is None else msg.first)
            self.request((host, port), 'INVITE', f'sip:{target}@{host}', headers, final)
        attempt(0)

    def on_request(self, msg: Message, source: tuple[str, int]) -> None:
        if msg.first.startswith('INVITE '):
            self.engine.log(phone=self.user, event='call in', call_id=msg.header('call-id'),
                            via=source[0])
        super().on_request(msg, source)


class Caller(Endpoint):
    """Calls every phone through every server each `every` seconds: a call into a phone works
    when one of the servers routes it to the phone and the phone answers."""

    user = 'caller'

    def __init__(self, engine: Engine, ip: str, port: int, servers: list[tuple[str, int]],
                 users: list[str], every: float, timers: Timers):
        super().__init__(engine, ip, port, timers)
        self.servers, self.users, self.every = servers, users, every
        self.tick = itertools.count(1)

    def start(self, delay: float = 0.0) -> None:
        self.engine.later(delay, self._round)

    def _round(self) -> None:
        n = next(self.tick)
        for user in self.users:
            for host, port in self.servers:
                self._invite(user, host, port, f'in-{user}-{n}-{host}')
        self.engine.later(self.every, self._round)

    def _invite(self, user: str, host: str, port: int, call_id: str) -> None:
        headers = [('From', f'<sip:caller@{self.ip}>;tag={uuid.uuid4().hex[:6]}'),
                   ('To', f'<sip:{user}@{host}>'), ('Call-ID', call_id),
                   ('CSeq', '1 INVITE'), ('Contact', self.contact)]

        def final(msg: Message | None) -> None:
            if msg is None or msg.status != 200:
                return
            self.engine.log(phone=user, event='call in answered', via=host, call_id=call_id)
            # ACK and BYE straight to the phone (no Record-Route: the proxy left the dialog)
            phone = uri_host_port(msg.header('contact'))
            dialog = [('From', headers[0][1]), ('To', msg.header('to')), ('Call-ID', call_id)]
            self.request(phone, 'ACK', f'sip:{user}@{phone[0]}:{phone[1]}',
                         dialog + [('CSeq', '1 ACK')], lambda m: None, retransmit=False)
            self.request(phone, 'BYE', f'sip:{user}@{phone[0]}:{phone[1]}',
                         dialog + [('CSeq', '2 BYE')], lambda m: None)
        # no retransmission: one probe, answered or not (the bridge loses nothing)
        self.request((host, port), 'INVITE', f'sip:{user}@{host}:{port}', headers, final,
                     retransmit=False)


def main(config_path: str) -> int:
    """Run the phones (and the caller) of a JSON configuration until SIGTERM."""
    with open(config_path) as f:
        config = json.load(f)
    known = {f.name for f in fields(Timers)}
    timers = Timers(**{k: v for k, v in config.get('timers', {}).items() if k in known})
    servers = [tuple(s) for s in config['servers']]
    engine = Engine(config.get('log'))
    random.seed(config.get('seed'))
    signal.signal(signal.SIGTERM, lambda *_: setattr(engine, 'running', False))
    phones = []
    for i in range(config['phones']):
        phone = Phone(engine, f'{config.get("prefix", "phone")}{i + 1}', config['ip'],
                      config.get('first_port', 5100) + i, servers, timers)
        phone.start(random.uniform(0, config.get('spread', 0)))
        phones.append(phone)
    if config.get('call_in_every'):
        users = [p.user for p in phones] + config.get('call_users', [])
        Caller(engine, config['ip'], config.get('caller_port', 5099), servers,
               users, config['call_in_every'], timers).start(
                   config.get('spread', 0))
    engine.log(event='started', phones=len(phones), pid=os.getpid())
    engine.run()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
