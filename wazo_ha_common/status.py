"""wazo-ha-status: one screen on either node, and an exit status for monitoring."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

from . import jobs, role, schedule
from .adapters import probes
from .decisions.origin import failback_held, kept_serving, refusal
from .failover import master_origin, services
from .files import failback
from .errors import HaConfError
from .decisions.stream import FIXES, LAG_WAIT
from .settings import CONTINUOUS, Settings
from .adapters.system import printable, read_state

OK, WARNING, CRITICAL = 0, 1, 2
LEVEL_NAMES = {OK: 'OK', WARNING: 'WARNING', CRITICAL: 'CRITICAL'}
REPLICATION_MAX_AGE = 2 * 3600


@dataclass
class Facts:
    role: str                       # master, slave, disabled, not configured, corrupt
    peer: str = ''
    peer_reachable: bool | None = None
    decision: dict = field(default_factory=dict)     # slave: the check's memory
    services: dict = field(default_factory=dict)     # slave: state, since
    replication: jobs.LastRun | None = None          # master: last run
    verification: dict = field(default_factory=dict)  # master: last verification by content
    sync: jobs.LastRun | None = None                 # master: last run
    sync_key: bool | None = None
    paused: str | None = None       # wazo-ha-config pause: when, by whom
    mode: str = 'hourly'            # [database] mode
    stream: jobs.LastRun | None = None               # continuous slave: last wazo-ha-stream run
    stream_cause: dict = field(default_factory=dict)  # continuous slave: why it does not stream
    access: jobs.LastRun | None = None               # any role: last converge of node access
    error: str = ''
    settings_problems: list = field(default_factory=list)  # mistakes in the settings files
    peer_record: dict = field(default_factory=dict)  # master: the slave's record (failback)
    origin_record: bool | None = None  # slave: it keeps the master cluster's identifier
    foreign_master: str = ''        # continuous slave: its master is not the cluster it copied


def gather(settings: Settings) -> Facts:
    """Read the state files and probe the peer once (side effects live here)."""
    problems = [p.text for p in settings.problems]
    try:
        config = role.load(settings.paths.ha_conf)
    except HaConfError as e:
        what = 'not configured' if not os.path.exists(settings.paths.ha_conf) else 'corrupt'
        return Facts(role=what, error=str(e), settings_problems=problems)
    facts = Facts(role=config.node_type, peer=config.remote_address,
                  paused=schedule.paused_since(settings.paths.state_dir),
                  mode=settings.database.mode, settings_problems=problems,
                  access=jobs.load_last_run(settings.paths.state_dir, jobs.CONVERGE))
    if config.node_type == 'disabled':
        return facts
    facts.peer_reachable = probes.ping(config.remote_address, settings.check.probe_timeout)
    if config.node_type == 'slave':
        facts.decision = read_state(settings.paths.state_dir, jobs.CHECK.state_file)
        recorded = services.load_state(settings)
        facts.services = {'state': services.current(settings),
                          **{k: v for k, v in recorded.items() if k != 'state'},
                          'last_action': recorded.get('state')}
        facts.stream = jobs.load_last_run(settings.paths.state_dir, jobs.STREAM)
        # the record (wazo_ha.origin) is made by the converge through [database] admin_psql
        facts.origin_record = bool(settings.database.admin_psql)
        if settings.continuous:
            look = master_origin.load(settings)
            if failback_held(look, config.remote_address):
                facts.foreign_master = kept_serving(config.remote_address) \
                    if facts.services['state'] == services.STARTED \
                    else refusal(config.remote_address)
            from .stream.control import load_control  # continuous mode only
            control = load_control(settings)
            if control.cause:
                facts.stream_cause = {'cause': control.cause, 'said': control.cause_said,
                                      'since': control.cause_since}
    else:
        facts.replication = jobs.load_last_run(settings.paths.state_dir, jobs.REPLICATION)
        facts.verification = read_state(settings.paths.state_dir, jobs.VERIFICATION_FILE)
        facts.sync = jobs.load_last_run(settings.paths.state_dir, jobs.SYNC)
        facts.sync_key = os.path.exists(settings.sync.ssh_key)
        facts.peer_record = failback.slave_view(settings)
    return facts


def evaluate(facts: Facts, now: float) -> tuple[int, list[str]]:
    """Warnings and the worst level, from the facts alone."""
    out: list[tuple[int, str]] = []
    for problem in facts.settings_problems:
        out.append((CRITICAL, f'settings: {problem} (the key keeps its default; commands that '
                              'use it refuse to run: wazo-ha-config check)'))
    if facts.paused and facts.role in ('master', 'slave'):
        out.append((WARNING, f'the HA cron jobs are paused since {facts.paused}: no replication, '
                             'file sync or failover until wazo-ha-config resume'))
    if facts.role == 'corrupt':
        out.append((CRITICAL, facts.error))
    elif facts.role == 'not configured':
        out.append((WARNING, facts.error))
    elif facts.role == 'master':
        rep = facts.replication
        if not rep:
            out.append((WARNING, 'no replication has run yet'))
        elif rep.result == 'held':  # the slave serves (or may): no copy, no failure
            copied = (rep.details or {}).get('last_copied_at')
            if not isinstance(copied, (int, float)) or now - copied > REPLICATION_MAX_AGE:
                out.append((WARNING, 'no actual database copy for more than 2 hours: '
                                     f'{rep.sentence}'))
        else:
            fallback = (rep.details or {}).get('fallback') if facts.mode == CONTINUOUS else None
            if rep.ok and isinstance(fallback, dict):
                out.append((WARNING, f'continuous replication is not in force: {_in_force(fallback)}'))
            if not rep.ok:
                out.append((CRITICAL, f'last replication failed: {rep.sentence}'))
            if not rep.ok or now - rep.finished_at > REPLICATION_MAX_AGE:
                out.append((WARNING, 'no successful replication for more than 2 hours'))
            if rep.error_kind == jobs.SCHEMA_MISMATCH:
                out.append((CRITICAL, 'the two nodes run different Wazo schema versions'))
        if not facts.sync_key:
            out.append((WARNING, 'file sync is not set up: run wazo-sync -i'))
        elif facts.sync and facts.sync.result == 'failed':
            out.append((WARNING, f'last file sync failed: {facts.sync.sentence}'))
        if facts.peer_reachable is False:
            out.append((WARNING, f'the slave {facts.peer} does not answer ping'))
        if facts.peer_record.get('serving'):
            out.append((WARNING, f'the slave {facts.peer} served telephony at the last wazo-sync '
                                 f"({facts.peer_record.get('episode')})"))
    elif facts.role == 'slave':
        decision = facts.decision.get('decision', 'unknown')
        running = facts.services.get('state') == services.STARTED
        if facts.foreign_master:
            out.append((CRITICAL, facts.foreign_master))
        elif running and facts.peer_reachable and decision != 'down':
            out.append((CRITICAL, f'both nodes active: the master {facts.peer} answers and the '
                                  'slave services run'))
        critical = facts.services.get('critical')
        if facts.services.get('pending') and isinstance(critical, list):
            what = 'failover' if facts.services.get('last_action') == services.STARTED \
                else 'failback'
            out.append((CRITICAL, f'{what} failed: ' + '; '.join(map(str, critical))
                        + ' (xivo-check-master-status tries again every minute)'))
        if decision == 'down':
            out.append((WARNING, f'failover: the master {facts.peer} is down, this slave serves '
                                 'telephony'))
        if facts.origin_record is False:
            out.append((WARNING, '[database] admin_psql is empty: this slave keeps no record of '
                                 'the master cluster it copies from, a rebuilt master is not '
                                 'refused (README: Replacing a master)'))
        if facts.mode == CONTINUOUS and decision != 'down' and not facts.paused:
            out += _stream_warnings(facts.stream, now, facts.stream_cause)
        if facts.paused:
            pass  # said above
        elif 'decision' not in facts.decision:  # none yet, or dropped by a role change
            out.append((WARNING, 'xivo-check-master-status has not run yet (is cron running?)'))
        elif not _is_time(facts.decision.get('written_at')) or \
                now - facts.decision['written_at'] > 180:
            out.append((WARNING, 'xivo-check-master-status has not run for more than 3 minutes'))
    out += _access_warnings(facts.access, now, bool(facts.paused))
    level = max((lvl for lvl, _ in out), default=OK)
    return level, [f'{LEVEL_NAMES[lvl]}: {text}' for lvl, text in out]


def _access_warnings(run: jobs.LastRun | None, now: float,
                     paused: bool = False) -> list[tuple[int, str]]:
    if run is None:
        return []
    out = []
    if not paused and (not _is_time(run.finished_at) or now - run.finished_at > 180):
        out.append((WARNING, 'wazo-ha-config converge has not run for more than 3 minutes '
                             '(is cron running?)'))
    if not run.ok:
        return out + [(CRITICAL, f'node access does not follow ha.conf: {run.sentence} '
                                 '(wazo-ha-config converge tries again every minute)')]
    pending = (run.details or {}).get('pending_restart')
    if pending and isinstance(pending, list):
        out.append((WARNING, 'PostgreSQL must be restarted for ' + ', '.join(map(str, pending))
                             + ' to take effect (written by wazo-ha; systemctl restart '
                             'postgresql)'))
    return out


# causes under which the master's hourly copies keep the slave no worse than hourly mode: a
# warning, not a failure of the replication
FALLBACK_WARNINGS = ('unreachable', 'not paired', 'wal_level')


def _in_force(cause: dict) -> str:
    """What is in force when the stream is not, and why: 'hourly copies: ... since T (to
    stream: fix)'."""
    since = cause.get('since')
    since = _when(since) if _is_time(since) else since
    fix = cause.get('fix') or FIXES.get(cause.get('cause'), '')
    return (f"hourly copies: {cause.get('said')}" + (f' since {since}' if since else '')
            + (f' (to stream: {fix})' if fix else ''))


def _stream_warnings(run: jobs.LastRun | None, now: float,
                     cause: dict | None = None) -> list[tuple[int, str]]:
    if run is None:
        return [(WARNING, 'continuous replication: wazo-ha-stream has not run yet (is cron '
                          'running?)')]
    out = []
    if not run.ok and cause and cause.get('cause') in FALLBACK_WARNINGS:
        out.append((WARNING, f'continuous replication is not in force: {_in_force(cause)}'))
    elif not run.ok:
        out.append((CRITICAL, f'continuous replication: last run failed: {run.sentence}'))
        if run.error_kind == jobs.SCHEMA_MISMATCH:
            out.append((CRITICAL, 'the two nodes run different Wazo schema versions'))
    elif (run.details or {}).get('lagging'):
        out.append((WARNING, f'continuous replication: the slave is more than {LAG_WAIT:.0f} s '
                             'behind the master'))
    if now - run.finished_at > 180:
        out.append((WARNING, 'continuous replication: wazo-ha-stream has not run for more than '
                             '3 minutes'))
    return out


def _is_time(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _when(ts) -> str:
    if not ts:
        return 'never'
    if not _is_time(ts):
        return repr(ts)
    return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))


def render(facts: Facts, level: int, warnings: list[str]) -> str:
    lines = [f'wazo-ha status: {LEVEL_NAMES[level]}', f'role: {facts.role}'
             + (' (HA cron jobs paused)' if facts.paused else '')]
    if facts.role in ('master', 'slave'):
        lines.append(f'replication mode: {facts.mode}')
    if facts.peer:
        reach = {True: 'answers ping', False: 'does NOT answer ping', None: 'not probed'}
        lines.append(f'peer: {facts.peer} ({reach[facts.peer_reachable]})')
    if facts.role == 'slave':
        d = facts.decision
        lines.append(f"failover decision: master {d.get('decision', 'unknown')}"
                     + (f" ({d.get('sentence')})" if d.get('sentence') else ''))
        s = facts.services
        lines.append(f"slave services: {s.get('state')}"
                     + (f" since {_when(s.get('since'))}" if s.get('since') else ''))
        if facts.mode == CONTINUOUS:
            lines.append('replication in force: ' + (_in_force(facts.stream_cause)
                                                     if facts.stream_cause else 'continuous'))
            lines += _stream_lines(facts.stream)
    if facts.role == 'master':
        r = facts.replication
        fallback = (r.details or {}).get('fallback') if r and facts.mode == CONTINUOUS else None
        if r and r.ok and facts.mode == CONTINUOUS:
            # what the last run found: the slave may have handed off since (its status says)
            lines.append('replication in force: ' + (
                _in_force(fallback) + f', as the replication run of {_when(r.finished_at)} '
                'found it (the slave\'s status tells whether it streams since)'
                if isinstance(fallback, dict) else 'continuous'))
        if r and (facts.mode == CONTINUOUS or r.result == 'held'):
            lines.append(f'last replication run: {_when(r.finished_at)} {r.result}: {r.sentence}')
        elif r:
            d = r.details or {}
            lines.append(f"last replication: {_when(r.finished_at)} {r.result}, "
                         f"{d.get('duration', 0):.1f} s, {len(d.get('tables_copied', []))} tables "
                         f"copied, {d.get('tables_unchanged', 0)} unchanged, "
                         f"{len(d.get('tables_excluded', []))} excluded")
        else:
            lines.append('last replication: never')
        lines.append(_verification(facts.verification))
        sy = facts.sync
        lines.append(f'last sync: {_when(sy.finished_at)} {sy.result}' if sy else 'last sync: never')
        lines.append(_slave_line(facts.peer_record))
    lines += warnings
    return printable('\n'.join(lines))   # sentences may quote the peer's own words


def _slave_line(view: dict) -> str:
    """The slave's telephony as its record said at the last wazo-sync."""
    if not view:
        return 'slave telephony: unknown (wazo-sync has not read the slave\'s record yet)'
    as_of = f" (its record, read by wazo-sync at {_when(view.get('read_at'))})"
    if view.get('decision') == 'none':
        return 'slave telephony: never served, slave decision: master up' + as_of
    if view.get('serving'):
        return (f"slave telephony: SERVING {view.get('episode')}, slave decision: master down"
                + as_of)
    back = (f"voicemail and recordings brought back at {_when(view.get('brought_back_at'))} "
            f"({view.get('files')} files)" if view.get('brought_back') else
            'voicemail and recordings not brought back yet (the next wazo-sync does it)')
    return (f"slave telephony: stopped, slave decision: master up; it served "
            f"{view.get('episode')}; {back}" + as_of)


def _stream_lines(run: jobs.LastRun | None) -> list[str]:
    if run is None:
        return ['stream: wazo-ha-stream has not run yet']
    d = run.details or {}
    lag = d.get('lag_seconds')
    retained = d.get('retained_wal_bytes')
    lines = [f'stream: last run {_when(run.finished_at)} {run.result}'
             + (f", lag at most {lag:.1f} s" if isinstance(lag, (int, float)) else '')
             + (f", {retained / 1048576:.1f} MB of WAL held on the master"
                if isinstance(retained, (int, float)) else '')]
    h = d.get('last_hand_off')
    if isinstance(h, dict):
        lines.append(f"last hand-off: {_when(h.get('at'))} ({h.get('reason')}"
                     + ('' if h.get('planned') else ', unplanned') + f"): {h.get('sentence')}")
    else:
        lines.append('last hand-off: never')
    return lines


def _verification(v: dict) -> str:
    if not v:
        return 'last verification: never'
    found = (f"{len(v.get('differing', []))} tables differed, repaired"
             if v.get('differing') else 'every copied table equal')
    missed = v.get('missed_by_tracking')
    return (f"last verification: {_when(v.get('finished_at'))}"
            f"{' (by hand)' if v.get('by_hand') else ''}, {found}"
            + (f"; missed by tracking: {', '.join(missed)}" if missed else ''))


def as_json(facts: Facts, level: int, warnings: list[str]) -> str:
    return json.dumps({**asdict(facts), 'status': LEVEL_NAMES[level], 'exit_code': level,
                       'warnings': warnings}, indent=1)
