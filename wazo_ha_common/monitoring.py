"""What monitoring agents read without root: a summary of wazo-ha-status that root writes
into [paths] monitoring_dir (group-readable, no secrets), and the same figures in the text
exposition format of Prometheus (for node exporter's textfile collector)."""

from __future__ import annotations

import json
import math
import os
import re
import time

from .adapters.system import printable, write_atomic

UNKNOWN = 3
SUMMARY_FILE = 'status.json'
STALE_AFTER = 180          # seconds: written every minute by cron (wazo-ha-status --write-summary)
SUMMARY_VERSION = 1
ROLES = ('master', 'slave', 'disabled', 'not configured', 'corrupt')
DECISIONS = ('up', 'down', 'unknown')
JOBS = ('replication', 'sync', 'stream')

# what may look like a credential in a sentence (a libpq string, a URL's user:password@)
_SECRET = re.compile(r'(password\s*=\s*)\S+|(://[^/:@\s]+:)[^@\s]+@', re.IGNORECASE)


def scrub(text: object) -> str:
    """One line, without anything that looks like a password nor a control character."""
    line = printable(' '.join(str(text or '').split()))
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + '***' + ('@' if m.group(2) else ''),
                       line)[:500]


def _run(run) -> dict | None:
    if run is None:
        return None
    return {'result': scrub(run.result), 'finished_at': run.finished_at,
            'sentence': scrub(run.sentence),
            **({'lag_seconds': run.details['lag_seconds']}
               if isinstance((run.details or {}).get('lag_seconds'), (int, float)) else {})}


def summary(facts, level: int, warnings: list[str], now: float) -> dict:
    """The facts a monitoring agent needs, from status.Facts; nothing else of the state
    files (no probe history, no table names, no paths of keys)."""
    decision = facts.decision.get('decision') if facts.role == 'slave' else None
    services = facts.services.get('state') if facts.role == 'slave' else None
    critical = facts.services.get('critical') if facts.services.get('pending') else None
    return {
        'version': SUMMARY_VERSION,
        'written_at': now,
        'status': level,
        'warnings': [scrub(w) for w in warnings],
        'role': facts.role,
        'peer': facts.peer,
        'peer_reachable': facts.peer_reachable,
        'mode': facts.mode,
        'paused': bool(facts.paused),
        'decision': decision if decision in DECISIONS else ('unknown' if decision else None),
        'decision_sentence': scrub(facts.decision.get('sentence')) if decision else '',
        'serving': services == 'started' if services else None,
        'failed_steps': len(critical) if isinstance(critical, list) else 0,
        'replication': _run(facts.replication),
        'sync': _run(facts.sync),
        'stream': _run(facts.stream),
        'settings_problems': len(facts.settings_problems),
        'peer_record': getattr(facts, 'peer_record', None) or None,
    }


def write(monitoring_dir: str, data: dict) -> str:
    """The summary file, mode 0640: its group is the directory's (setgid, made by the
    package: root:wazo-ha-monitor 2750). The directory is root's; nothing else is changed."""
    path = os.path.join(monitoring_dir, SUMMARY_FILE)
    if not os.path.isdir(monitoring_dir):  # not made by the package: root's alone
        os.makedirs(monitoring_dir, mode=0o750)
    write_atomic(path, json.dumps(data, indent=1) + '\n', mode=0o640)
    return path


def write_textfile(path: str, text: str) -> bool:
    """node exporter's textfile collector reads *.prom files of its directory: written when
    that directory exists (the collector is installed), False otherwise."""
    if not path or not os.path.isdir(os.path.dirname(path)):
        return False
    write_atomic(path, text, mode=0o644)
    return True


class SummaryError(Exception):
    """The summary cannot be read or trusted: UNKNOWN."""


def read(monitoring_dir: str, now: float) -> dict:
    path = os.path.join(monitoring_dir, SUMMARY_FILE)
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except PermissionError:
        raise SummaryError(f'cannot read {path}: permission denied (run as root, or as a member '
                           'of the group wazo-ha-monitor)') from None
    except FileNotFoundError:
        raise SummaryError(f'{path} does not exist: root has not run wazo-ha-status yet (cron '
                           'runs wazo-ha-status --write-summary every minute)') from None
    except (OSError, ValueError) as e:
        raise SummaryError(f'cannot read {path}: {e}') from None
    if not isinstance(data, dict) or data.get('version') != SUMMARY_VERSION \
            or data.get('status') not in (0, 1, 2) or not _is_time(data.get('written_at')):
        raise SummaryError(f'{path} is not a summary of this version of wazo-ha-status')
    age = now - data['written_at']
    if age > STALE_AFTER:
        raise SummaryError(f'{path} was written {age:.0f} s ago: is cron running '
                           '(wazo-ha-status --write-summary every minute)?')
    return data


def _is_time(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def render(data: dict) -> str:
    """The summary as the lines of wazo-ha-status (what an unprivileged user sees)."""
    names = {0: 'OK', 1: 'WARNING', 2: 'CRITICAL'}
    lines = [f"wazo-ha status: {names[data['status']]}",
             f"role: {data['role']}" + (' (HA cron jobs paused)' if data.get('paused') else '')]
    if data.get('peer'):
        reach = {True: 'answers ping', False: 'does NOT answer ping', None: 'not probed'}
        lines.append(f"peer: {data['peer']} ({reach.get(data.get('peer_reachable'))})")
    if data.get('decision'):
        lines.append(f"failover decision: master {data['decision']}"
                     + (f" ({data['decision_sentence']})" if data.get('decision_sentence') else ''))
        lines.append(f"slave services: {'started' if data.get('serving') else 'stopped'}")
    for job in JOBS:
        run = data.get(job)
        if run:
            when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run['finished_at']))
            lines.append(f"last {job}: {when} {run['result']}")
    lines.append(f"summary written {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(data['written_at']))} "
                 'by root (this user reads the summary, not the state)')
    return printable('\n'.join(lines + [str(w) for w in data.get('warnings', [])]))


# Prometheus text exposition format (version 0.0.4)

def _value(v: float) -> str:
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def _label(value: str) -> str:
    return value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def prometheus(data: dict, now: float) -> str:
    """The metrics of a summary; `now` gives the ages (node exporter reads the file later:
    the *_timestamp_seconds are exact, the ages as of the writing)."""
    out: list[str] = []

    def metric(name: str, help_: str, samples: list[tuple[dict, float]]) -> None:
        samples = [(labels, v) for labels, v in samples if v is not None]
        if not samples:
            return
        out.append(f'# HELP {name} {help_}')
        out.append(f'# TYPE {name} gauge')
        for labels, v in samples:
            shown = ','.join(f'{k}="{_label(str(x))}"' for k, x in labels.items())
            out.append(f'{name}{{{shown}}} {_value(v)}' if shown else f'{name} {_value(v)}')

    metric('wazo_ha_status', 'wazo-ha-status level: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN',
           [({}, data['status'])])
    metric('wazo_ha_role', 'HA role of this node (1 for its role)',
           [({'role': r}, int(data['role'] == r)) for r in ROLES])
    metric('wazo_ha_peer_reachable', 'the other node answers ping (1) or not (0)',
           [({}, None if data.get('peer_reachable') is None else int(data['peer_reachable']))])
    metric('wazo_ha_paused', 'the HA cron jobs are paused (wazo-ha-config pause)',
           [({}, int(bool(data.get('paused'))))])
    if data.get('decision'):
        metric('wazo_ha_failover_decision', "slave: the failover check's decision about the "
               'master (1 for the current one)',
               [({'master': d}, int(data['decision'] == d)) for d in DECISIONS])
    metric('wazo_ha_serving', 'slave: its telephony runs (it serves in place of the master)',
           [({}, None if data.get('serving') is None else int(data['serving']))])
    metric('wazo_ha_failed_steps', 'failover or failback steps that failed and are retried',
           [({}, data.get('failed_steps', 0))])
    metric('wazo_ha_settings_problems', 'mistakes in the settings files (wazo-ha-config check)',
           [({}, data.get('settings_problems', 0))])
    runs = [(job, data[job]) for job in JOBS if data.get(job)]
    metric('wazo_ha_last_run_timestamp_seconds', 'when the last run of the job ended',
           [({'job': job}, run['finished_at']) for job, run in runs])
    metric('wazo_ha_last_run_age_seconds', 'seconds since the last run of the job ended, when '
           'the summary was written', [({'job': job}, max(0.0, round(now - run['finished_at'], 3)))
                                       for job, run in runs])
    metric('wazo_ha_last_run_failed', 'the last run of the job failed (1) or not (0)',
           [({'job': job}, int(run['result'] != 'ok')) for job, run in runs])
    metric('wazo_ha_stream_lag_seconds', 'continuous mode, slave: how far behind the master '
           'the slave was at most, at the last wazo-ha-stream run',
           [({}, (data.get('stream') or {}).get('lag_seconds'))])
    metric('wazo_ha_summary_timestamp_seconds', 'when root wrote this summary',
           [({}, data['written_at'])])
    return '\n'.join(out) + '\n'
