"""xivo-manage-slave-services: start (failover) or stop (failback) the slave's telephony.

Each step is an external program run through the runner; every outcome is logged.
Auxiliary steps (DHCP, agents) may fail without keeping telephony from starting."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import asdict, dataclass, replace

from ..errors import WazoHaError
from ..jobs import SERVICES
from ..settings import Settings
from ..adapters.system import (KeyStore, find_program, read_state, run, single_instance,
                               write_state)

logger = logging.getLogger('wazo-ha')

STARTED, STOPPED = 'started', 'stopped'
DHCP = 'isc-dhcp-server'  # the unit Wazo's original starts and stops with the telephony


@dataclass(frozen=True)
class Step:
    what: str
    argv: tuple[str, ...]
    auxiliary: bool = False
    timeout: float = 300


def start_steps() -> list[Step]:
    return [
        Step('apply the replicated configuration', ('xivo-create-config',)),
        Step('update the configuration', ('xivo-update-config',)),
        Step('refresh the DHCP phone prefixes', ('dhcpd-update', '-dr'), auxiliary=True),
        Step('start DHCP', ('systemctl', 'start', DHCP), auxiliary=True),
        Step('enable DHCP at boot', ('systemctl', 'enable', DHCP), auxiliary=True),
        Step('regenerate the PJSIP configuration', ('wazo-confgen', 'asterisk/pjsip.conf',
                                                    '--invalidate')),
        Step('enable the Wazo services at boot', ('wazo-service', 'enable')),
        Step('start the Wazo services', ('wazo-service', 'start'), timeout=600),
        Step('log the agents back in', ('wazo-agentd-cli', '-c', 'relog all --timeout 60'),
             auxiliary=True, timeout=120),
    ]


def stop_steps() -> list[Step]:
    return [
        Step('stop the telephony services', ('wazo-service', 'stop', 'wazo'), timeout=600),
        Step('keep them stopped at boot', ('wazo-service', 'disable')),
        Step('stop DHCP', ('systemctl', 'stop', DHCP), auxiliary=True),
        Step('disable DHCP at boot', ('systemctl', 'disable', DHCP), auxiliary=True),
        Step('start the base services (disabled mode)', ('wazo-service', 'start'), timeout=600),
    ]


@dataclass
class Outcome:
    action: str
    done: bool                 # False: already in that state, nothing run
    failed: list[str]          # 'what: why' of every failed step
    critical: list[str]        # the same, of the steps without which it is not done
    duration: float

    @property
    def critical_failed(self) -> bool:
        return bool(self.critical)

    def sentence(self) -> str:
        if not self.done:
            return f'slave services already {self.action}: nothing to do'
        if not self.failed:
            return f'slave services {self.action} in {self.duration:.1f} s'
        return (f'slave services {"NOT " if self.critical else ""}{self.action} in '
                f'{self.duration:.1f} s, with failures: ' + '; '.join(self.failed))


# `asterisk -rx 'core show channels count'` (Asterisk's main/cli.c): "N active channels",
# then "N active calls" or, with maxcalls set, "N of M max active calls (...)"
ACTIVE_CALLS = re.compile(r'^\s*(\d+) (?:of \d+ max )?active calls?\b', re.MULTILINE)


def calls_in(output: str) -> int | None:
    """The number of calls up in Asterisk's answer; None when it says no such thing."""
    match = ACTIVE_CALLS.search(output)
    return int(match.group(1)) if match else None


def active_calls() -> int | None:
    """Calls up on this node's Asterisk, None when it cannot be asked (not running...)."""
    try:
        result = run(('asterisk', '-rx', 'core show channels count'), timeout=15)
    except WazoHaError as e:
        logger.warning('cannot count the calls: %s', e)
        return None
    return calls_in(result.stdout)


@dataclass(frozen=True)
class Drain:
    calls: int | None       # calls up when the drain began (None: could not ask Asterisk)
    waited: float           # seconds
    left: int | None        # calls still up at the end: cut by the stop

    def sentence(self, limit: float) -> str:
        if self.calls is None:
            return 'failback drain: cannot count the calls up: telephony stopped without waiting'
        if not self.calls:
            return 'failback drain: no call up: nothing to wait for'
        if not self.left:
            return (f'failback drain: waited {self.waited:.0f} s for {self.calls} calls to '
                    'end: none cut')
        return (f'failback drain: waited {self.waited:.0f} s (failback_drain {limit:g} s) for '
                f'{self.calls} calls: {self.left} still up, cut by the stop')


def drain(limit: float, count=active_calls, sleep=time.sleep, clock=time.monotonic,
          every: float = 2.0) -> Drain:
    """Wait up to `limit` seconds while calls are up on this node (before a failback)."""
    began = clock()
    calls = left = count()
    while left and clock() - began < limit:
        sleep(min(every, max(0.0, limit - (clock() - began))))
        now = count()
        left = left if now is None else now
    return Drain(calls, clock() - began, left)


def flag_path(settings: Settings) -> str:
    """wazo-service disable creates this file; units do not start while it exists."""
    return os.path.join(settings.paths.sentinel_dir, 'disabled')


def available() -> bool:
    """This is a Wazo node: its services are managed by wazo-service."""
    return find_program('wazo-service') is not None


def running() -> bool:
    """All Wazo services run (`wazo-service status all` exits 0)."""
    return run(('wazo-service', 'status', 'all'), timeout=60, check=False).returncode == 0


def current(settings: Settings) -> str:
    if running():
        return STARTED
    return STOPPED if os.path.exists(flag_path(settings)) else STARTED


def start(settings: Settings) -> Outcome:
    """Failover: start and enable the telephony (nothing when it already runs, enabled)."""
    with _exclusive(settings):
        return _start(settings)


def _start(settings: Settings) -> Outcome:
    pending = _pending(settings, STARTED, start_steps())
    if pending:  # the last start left critical steps undone: those again, whatever runs
        return _run_steps(settings, STARTED, pending)
    if running():
        if not os.path.exists(flag_path(settings)):
            return _record(settings, Outcome(STARTED, False, [], [], 0.0))
        # running but still disabled at boot (started by hand or by wazo-upgrade): only
        # the boot flag is wrong, and a reboot would leave telephony down
        return _run_steps(settings, STARTED, [step for step in start_steps()
                                              if step.argv == ('wazo-service', 'enable')])
    return _run_steps(settings, STARTED, start_steps())


def stop(settings: Settings) -> Outcome:
    """Failback: stop and disable the telephony (nothing when already so)."""
    with _exclusive(settings):
        return _stop(settings)


def _stop(settings: Settings) -> Outcome:
    pending = _pending(settings, STOPPED, stop_steps())
    if pending:
        return _run_steps(settings, STOPPED, pending)
    if os.path.exists(flag_path(settings)) and not running():
        return _record(settings, Outcome(STOPPED, False, [], [], 0.0))
    return _run_steps(settings, STOPPED, stop_steps())


# a start and a stop never interleave, whoever asks (the check, wazo-sysconfd through
# xivo-manage-slave-services, wazo-ha-config set): each waits for the other to finish
STEPS_WAIT = 900


def _exclusive(settings: Settings):
    return single_instance(settings.paths.lock_dir, SERVICES.name, wait=STEPS_WAIT)


@dataclass(frozen=True)
class Record:
    """services.json, written by this module alone: the state the last start or stop reached
    (or tried to), since when, and while critical steps failed which ones (run again by the
    next start or stop) and which failure the check last mailed root about."""
    state: str | None = None              # STARTED, STOPPED, or None: never recorded
    since: float | None = None
    failed: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    critical: tuple[str, ...] = ()
    mailed: tuple[str, ...] | None = None

    def as_dict(self) -> dict:
        data = asdict(self)
        for key in ('failed', 'pending', 'critical'):
            data[key] = list(data[key])
        if self.mailed is None:
            del data['mailed']
        else:
            data['mailed'] = list(self.mailed)
        return data


def record_from_dict(data) -> Record:
    """The record as written; a field of the wrong shape is dropped (said by the caller's
    log), never trusted: a state file informs, it never stops a start or a stop."""
    if not isinstance(data, dict):
        return Record()
    state = data.get('state') if data.get('state') in (STARTED, STOPPED) else None
    since = data.get('since')
    if isinstance(since, bool) or not isinstance(since, (int, float)):
        since = None

    def texts(value) -> tuple[str, ...]:
        return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()

    mailed = data.get('mailed')
    return Record(state, since, texts(data.get('failed')), texts(data.get('pending')),
                  texts(data.get('critical')),
                  texts(mailed) if isinstance(mailed, list) else None)


def load_record(settings: Settings) -> Record:
    return record_from_dict(read_state(settings.paths.state_dir, SERVICES.state_file))


def _save(settings: Settings, record: Record) -> None:
    write_state(settings.paths.state_dir, SERVICES.state_file, record.as_dict())


def _pending(settings: Settings, action: str, steps: list[Step]) -> list[Step]:
    """The critical steps the last run of this action left undone (services.json)."""
    record = load_record(settings)
    if record.state != action:
        return []
    return [step for step in steps if step.what in record.pending]


def _run_steps(settings: Settings, action: str, steps: list[Step]) -> Outcome:
    began = time.monotonic()
    failed, critical, pending = [], [], []
    for step in steps:
        try:
            run(step.argv, timeout=step.timeout)
            logger.info('%s: ok (%s)', step.what, ' '.join(step.argv))
        except WazoHaError as e:
            failed.append(f'{step.what}: {e}')
            if not step.auxiliary:
                critical.append(f'{step.what}: {e}')
                pending.append(step.what)
            logger.error('%s: FAILED%s: %s', step.what,
                         ' (auxiliary, going on)' if step.auxiliary else '', e)
    outcome = Outcome(action, True, failed, critical, time.monotonic() - began)
    logger.info('%s', outcome.sentence())
    return _record(settings, outcome, pending)


def _record(settings: Settings, outcome: Outcome, pending: list[str] | None = None) -> Outcome:
    """services.json: the state reached and, while critical steps failed, which ones (they
    are run again by the next start or stop: the state is not reached until they succeed)."""
    previous = load_record(settings)
    if outcome.done or previous.state != outcome.action:
        retried = previous.state == outcome.action and previous.pending
        since = previous.since if retried else time.time()
        _save(settings, Record(outcome.action, since, tuple(outcome.failed),
                               tuple(pending or ()), tuple(outcome.critical),
                               # which failure root was told about (check): kept while one lasts
                               previous.mailed if pending else None))
    return outcome


def load_state(settings: Settings) -> dict:
    """The record as a JSON object (what wazo-ha-status shows)."""
    record = load_record(settings)
    return record.as_dict() if record != Record() else {}


def mailed(settings: Settings) -> KeyStore:
    """The failed steps last mailed by the check, kept in this record ('mailed')."""
    def save(key) -> None:
        _save(settings, replace(load_record(settings),
                                mailed=None if key is None else tuple(key)))
    return KeyStore(lambda: (lambda m: None if m is None else list(m))(
        load_record(settings).mailed), save)
