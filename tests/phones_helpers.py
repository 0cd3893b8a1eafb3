"""Phones (tests/phone.py) in their own node of the testbed, and what they said."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

from phone import Timers
from testbed import REPO, Node


class Phones:
    """A phone.py process in `node`, registering on `servers` (primary first)."""

    def __init__(self, node: Node, servers: list[Node], count: int, timers: Timers,
                 spread: float = 0.0, call_in_every: float = 0.0, seed: int = 1,
                 call_users: list[str] = ()):
        self.node = node
        self.log = os.path.join(node.root, f'phones-{time.monotonic_ns()}.jsonl')
        self.config = self.log.replace('.jsonl', '.json')
        with open(self.config, 'w') as f:
            json.dump({'ip': node.ip, 'servers': [[s.ip, 5060] for s in servers],
                       'phones': count, 'timers': timers.__dict__, 'spread': spread,
                       'call_in_every': call_in_every, 'log': self.log, 'seed': seed,
                       'call_users': list(call_users)}, f)
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Phones:
        with open(self.log + '.err', 'w') as errors:
            self.process = self.node.popen('/usr/bin/python3',
                                           os.path.join(REPO, 'tests', 'phone.py'), self.config,
                                           stdout=subprocess.DEVNULL, stderr=errors,
                                           start_new_session=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def events(self, event: str | None = None, phone: str | None = None) -> list[dict]:
        try:
            with open(self.log) as f:
                lines = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []
        return [e for e in lines if (event is None or e.get('event') == event)
                and (phone is None or e.get('phone') == phone)]

    def wait_for(self, predicate, timeout: float, what: str):
        """The first event satisfying `predicate`; AssertionError naming `what` at timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, 'the phones exited: see ' + self.log + '.err'
            for event in self.events():
                if predicate(event):
                    return event
            time.sleep(0.1)
        raise AssertionError(f'{what}: not within {timeout:g} s (see {self.log})')
