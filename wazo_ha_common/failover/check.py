"""xivo-check-master-status: probe the master for about a minute, converge the slave.

Every run converges the slave's services to the decision (master up: stopped, master
down: started); services already in that state are left alone."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass

from typing import Callable

from .. import role
from ..adapters import probes
from ..adapters.system import (mail_once, read_state, read_text, send_mail, single_instance,
                               write_state)
from ..decisions import health, registrations
from ..decisions.origin import failback_held
from ..errors import WazoHaError
from ..files import failback
from ..jobs import CHECK
from ..settings import Settings
from . import master_origin, phones, services

logger = logging.getLogger('wazo-ha')


def _nothing(settings: Settings) -> list[str]:
    return []


@dataclass(frozen=True)
class Hooks:
    """What the check calls in the other domains, given by its command: the check imports
    neither the stream nor the file synchronisation, so it never fails for them."""
    # before the telephony starts (continuous mode: the stream stops applying the master's)
    before_serving: Callable[[Settings], object] = _nothing


def boot_id() -> str:
    return (read_text('/proc/sys/kernel/random/boot_id') or '').strip()


def load_memory(settings: Settings, master_ip: str,
                telephony_runs: Callable[[], bool] = services.running) -> health.Memory:
    """The probe history of the last runs about this master; a fresh one when it is about
    another master or was dropped on purpose (forget). Missing or wrong in any field (said in
    the log), it is in doubt: while telephony runs here, this slave is taken as serving."""
    path = os.path.join(settings.paths.state_dir, CHECK.state_file)
    data = read_state(settings.paths.state_dir, CHECK.state_file)
    try:
        memory = health.memory_from_dict(data) if data else None
    except ValueError as e:
        logger.warning('%s is not a valid failover memory (%s)', path, e)
        memory = None
    if memory is None:
        doubt = health.in_doubt(master_ip, telephony_runs())
        if doubt.decision == health.DOWN:
            logger.warning('no valid failover memory in %s while the telephony runs here: '
                           'this slave keeps it until the master has answered for %g s',
                           path, settings.check.up_after)
        else:
            logger.info('no failover memory in %s and the telephony is stopped: starting '
                        'afresh', path)
        return doubt
    fresh = health.watching(memory, master_ip)
    if fresh is not memory and memory != health.Memory():
        logger.warning('the failover memory was about the master %s, this slave now watches '
                       '%s: its decision (%s) is dropped, starting afresh',
                       memory.master or '(not recorded)', master_ip, memory.decision)
    return fresh


def last_decision(settings: Settings) -> str:
    """The decision of the last run (up, down, unknown), read from its record; unknown when
    there is none or it is not valid (the next run starts afresh then)."""
    try:
        return health.memory_from_dict(read_state(settings.paths.state_dir,
                                                  CHECK.state_file)).decision
    except ValueError:
        return health.UNKNOWN


def forget(settings: Settings) -> bool:
    """Drop the failover memory (the role or the master changed): an empty memory is kept in
    its place, so that the next check starts afresh rather than in doubt. True if there was a
    decision to drop."""
    dropped = 'decision' in read_state(settings.paths.state_dir, CHECK.state_file)
    write_state(settings.paths.state_dir, CHECK.state_file, {'forgotten_at': time.time()})
    return dropped


def save_memory(settings: Settings, memory: health.Memory, verdict: health.Verdict,
                waiting: registrations.Waiting | None = None) -> None:
    """The probe history, and the failback's wait for the phones when one is under way (so
    that its bound holds across runs)."""
    extra = {'failback_phones': waiting.as_dict()} if waiting else {}
    write_state(settings.paths.state_dir, CHECK.state_file,
                {**asdict(memory), 'sentence': verdict.sentence, 'written_at': time.time(),
                 **extra})


def load_waiting(settings: Settings, master_ip: str) -> registrations.Waiting | None:
    """The failback's wait for the phones begun by an earlier run about this master, if any."""
    data = read_state(settings.paths.state_dir, CHECK.state_file)
    if not isinstance(data, dict) or data.get('master') != master_ip:
        return None
    return registrations.waiting_from(data.get('failback_phones'))


def run(settings: Settings, argument: str | None, sleep=time.sleep,
        hooks: Hooks = Hooks(), by_hand: bool = False) -> str:
    """Returns the closing sentence of the run. `by_hand`: a run started by the administrator
    converges too (paused or not); it warns before starting telephony beside a master that
    answers."""
    master_ip = role.resolve_peer(settings, argument, 'slave', 'the master check')
    policy = health.Policy(settings.check.probe_interval, settings.check.down_after,
                           settings.check.up_after)
    with single_instance(settings.paths.lock_dir, CHECK.name, wait=settings.check.probe_interval + 5):
        boot = boot_id()
        deadline = time.monotonic() + settings.check.run_for
        memory = load_memory(settings, master_ip)
        waiting = load_waiting(settings, master_ip)
        converged = False
        sentence = ''
        held: str | None = None     # why no failback (a foreign master); '' nothing holds it
        while True:
            probe = probes.probe(settings, master_ip)
            memory, verdict = health.observe(memory, probe, policy, boot)
            save_memory(settings, memory, verdict, waiting)
            if verdict.changed:
                logger.warning('decision: master %s: %s', verdict.decision, verdict.sentence)
            if not role.is_secondary(settings.paths.sentinel_dir):
                return 'this node stopped being a secondary during the run: nothing done'
            if by_hand and not converged and verdict.decision == health.DOWN and probe.master \
                    and not services.running():
                _warn(f'warning: the master {master_ip} answers, but the decision "master down" '
                      f'stands until it has answered for {settings.check.up_after:g} s: this run '
                      'starts the telephony of this slave beside it')
            began = waiting
            if verdict.decision == health.UP and held is None:  # once a run (it mails)
                held = _held_by_origin(settings, verdict, master_ip) or ''
            outcome, waiting = _converge(settings, verdict, hooks,
                                         force=not converged or waiting is not None,
                                         memory=memory, in_doubt=health.in_doubt_down(memory),
                                         waiting=None if held else waiting, held=bool(held))
            if waiting != began:  # a wait begun or ended: kept for the next run
                save_memory(settings, memory, verdict, waiting)
            converged = True
            action = f' -> {outcome.sentence()}' if outcome and outcome.done else ''
            if held:
                action = f' -> failback held: {held}'
            if waiting is not None:
                action = (f' -> failback waiting for the phones ({waiting.phones} registered '
                          'here when it began)')
            sentence = f'master {master_ip} {verdict.decision}: {verdict.sentence}{action}'
            logger.debug('%s', sentence)
            if outcome and outcome.critical_failed:
                logger.info('%s', sentence)
                raise _failed(settings, outcome)
            next_probe = probe.at + settings.check.probe_interval
            if next_probe > deadline:
                break
            sleep(max(0.0, next_probe - time.monotonic()))
        logger.info('%s', sentence)
        return sentence


def _warn(text: str) -> None:
    logger.warning('%s', text)
    print(f'{CHECK.name}: {text}', file=sys.stderr, flush=True)


def _held_by_origin(settings: Settings, verdict: health.Verdict, master_ip: str) -> str | None:
    """Continuous mode: the master answers, but the slave's last look (wazo-ha-stream) found
    another cluster there than the one it copied from (rebuilt at the same address): the
    failback is held while this slave serves, logged and mailed once. None: nothing holds it."""
    if not settings.continuous or verdict.decision != health.UP:
        return None
    held = failback_held(master_origin.load(settings), master_ip)
    store = master_origin.mailed(settings)
    if held is None or not services.running():
        if store.load() is not None:
            store.save(None)  # a later rebuilt master is mailed again
        return None
    logger.error('%s', held)
    look = master_origin.load(settings)
    host = socket.gethostname()
    mail_once(settings, store, f'{master_ip} {look.system if look else ""}',
              f'Failback held on {host}: the master {master_ip} is not the cluster this slave '
              'copied from',
              f'{held}.\n\nThe master at {master_ip} answers again, but its PostgreSQL cluster '
              f'(system identifier {look.system if look else "?"}) is not the one this slave '
              f'copied its data from ({look.recorded if look else "?"}): it was rebuilt or '
              'replaced. Giving telephony back to it would serve from an empty or stale box, and '
              'its copies would wipe the slave\'s data, the only good copy.\n\n'
              'Either promote this slave (wazo-ha-config set --node-type master ... here, and '
              'make the rebuilt node its slave), or, if the rebuilt master holds the data to '
              'keep, run xivo-master-slave-db-replication --replace-slave --force on it: once '
              'this slave\'s wazo-ha-stream has looked at the master again (every minute), it '
              'gives telephony back and copies that master afresh.\n'
              f'wazo-ha-status shows the state; see {settings.paths.log_file}.\n')
    return held


def _converge(settings: Settings, verdict: health.Verdict, hooks: Hooks, force: bool,
              memory: health.Memory | None = None,
              in_doubt: bool = False, waiting: registrations.Waiting | None = None,
              held: bool = False
              ) -> tuple[services.Outcome | None, registrations.Waiting | None]:
    """Bring the services to the decided state on a change, and once per run anyway (at
    every probe while a failback waits for the phones); keep the failback record (what the
    master's next wazo-sync reads) in step. Root is mailed once per transition: the record
    opens or closes an episode once, and keeps whether its failover was announced. `held`: no
    failback (a foreign master, see _held_by_origin). Returns the outcome and the wait under
    way."""
    if verdict.decision == health.UNKNOWN or not (verdict.changed or force):
        return None, waiting
    if held and verdict.decision == health.UP:
        return None, None
    if verdict.decision == health.DOWN and waiting is not None:
        # the health rule's decision, not one lost probe
        logger.warning('failback phones: the master is down again after %.0f s of waiting '
                       'for %d phones: wait ended, telephony NOT stopped',
                       max(0.0, time.time() - waiting.began), waiting.phones)
        waiting = None
    if verdict.decision == health.DOWN and in_doubt:
        # a memory in doubt, not the probes: the telephony that runs is kept, but no episode
        # opens and the stream is not stopped until the probes declare the master down
        return services.start(settings), None
    if verdict.decision == health.DOWN:
        # the episode first: a master's copy under way reads it before its commit and rolls
        # back, so nothing it writes lands after the failover's first step
        change = failback.serving(settings)
        hooks.before_serving(settings)  # the slave's own writes from now on
        outcome = services.start(settings)
        # announced when the start first succeeds, at this run or at a retry of a failed step
        if not outcome.critical_failed and failback.announce(settings):
            _announce_failover(settings, memory)
    else:
        asked: list[bool] = []

        def serving() -> bool:  # telephony up: phones and calls may be here (asked once)
            if not asked:
                asked.append(services.running())
            return asked[0]
        # a standby slave (disabled at boot) has no phone: not asked, its stop finds it so
        enabled = not os.path.exists(services.flag_path(settings))
        if settings.check.failback_phones and enabled and serving():
            bound = registrations.wait_limit(settings.check.failback_phones_timeout,
                                             settings.check.failback_phones_margin)
            began = waiting
            waiting, ended = registrations.step(waiting, phones.registered(), time.time(),
                                                bound)
            if ended is None:
                if began is None:
                    logger.info('failback phones: %d registered here: the telephony stops '
                                'once none is left, at most %g s from now', waiting.phones,
                                bound)
                return None, waiting
            logger.info('%s', ended.sentence(bound))
        waiting = None
        limit = settings.check.failback_drain
        if limit and serving():
            logger.info('%s', services.drain(limit).sentence(limit))
        outcome = services.stop(settings)
        change = None if outcome.critical_failed else failback.gave_back(settings)
        if change:
            _announce_failback(settings)
    if change:
        logger.info('%s', change)
    return outcome, waiting


def _wall(monotonic_time: float | None) -> float | None:
    """A CLOCK_MONOTONIC time of this boot as a wall-clock time."""
    if monotonic_time is None:
        return None
    return time.time() - (time.monotonic() - monotonic_time)


def _stamp(ts: float | None) -> str:
    return time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(ts)) if ts else 'an unknown time'


def _announce_failover(settings: Settings, memory: health.Memory | None) -> None:
    host = socket.gethostname()
    episode = failback.parse_record(failback.record_path(settings))
    since = episode.started_at if episode else time.time()
    master = memory.master if memory else ''
    silent = _wall(memory.last_answer) if memory else None
    sentence = (f'slave {host} serves telephony since {_stamp(since)}: master {master} silent '
                f'since {_stamp(silent)}')
    send_mail(settings.mail.sendmail, settings.mail.recipient, f'Failover: {sentence}',
              f'{sentence}.\n\nThe slave took telephony over by itself '
              f'({CHECK.name}). It gives it back once the master answers again for '
              f'{settings.check.up_after:g} s; the master\'s next wazo-sync then brings the '
              'voicemail and recordings left on the slave back.\n'
              f'wazo-ha-status shows the state; see {settings.paths.log_file}.\n')


def _announce_failback(settings: Settings) -> None:
    host = socket.gethostname()
    episode = failback.parse_record(failback.record_path(settings))
    served = f' (it served {episode.describe()})' if episode and episode.ended_at else ''
    config = role.load(settings.paths.ha_conf)
    sentence = (f'slave {host} gave telephony back to the master {config.remote_address} at '
                f'{_stamp(episode.ended_at if episode else time.time())}{served}')
    send_mail(settings.mail.sendmail, settings.mail.recipient, f'Failback: {sentence}',
              f'{sentence}.\n\nThe master\'s next wazo-sync (hourly) brings the voicemail and '
              'recordings left on the slave back first, and mails root when done.\n'
              f'See {settings.paths.log_file}.\n')


class ConvergeError(WazoHaError):
    """A critical failover or failback step failed: exit 1; the next run tries it again."""


def _failed(settings: Settings, outcome: services.Outcome) -> ConvergeError:
    """Say it loudly: root is mailed (once per failure, not every minute), exit 1."""
    what = 'Failover' if outcome.action == services.STARTED else 'Failback'
    host = socket.gethostname()
    first = ' '.join(outcome.critical[0].split())
    subject = f'{what} failed on {host}: {first}'
    if len(subject) > 200:
        subject = subject[:197] + '...'
    # not the same failure as the last mail's
    key = [outcome.action, *(line.split(':', 1)[0] for line in outcome.critical)]
    mail_once(settings, services.mailed(settings), key, subject,
              f'{CHECK.name} on {host} could not bring the slave services to '
              f'"{outcome.action}". Failed steps:\n\n'
              + ''.join(f'- {line}\n' for line in outcome.critical)
              + f'\nEvery run of {CHECK.name} (every minute) tries these steps again; '
                f'this mail is not repeated while they keep failing the same way.\n'
                f'See {settings.paths.log_file}.\n')
    return ConvergeError(f'{what.lower()} failed on {host}: ' + '; '.join(outcome.critical)
                         + ' (tried again at the next run)')
