"""Converge this node's access to ha.conf and the settings, whoever wrote ha.conf (wazo-sysconfd
on PUT /ha, wazo-ha-config set, an administrator): run every minute on every role
(`wazo-ha-config converge` from cron), at the end of wazo-ha-config set, and first thing in
the slave's pairing session.

- slave: the replication role (no login until paired), our pg_hba.conf block first,
  listen_addresses, the rsync daemon modules; in continuous mode its subscription may stay;
- master: in continuous mode the publication, the stream role and its block, wal_level;
- any role: what it should not have is taken away: the replication role (its sessions ended),
  the blocks, conf.d/wazo-ha.conf, the rsync daemon configuration, the stream role, the
  publication and our slots, and a subscription (with its slot on the old master when that
  answers), found in PostgreSQL's catalog, never from a state file;
- fail2ban: the master's jail.d drop-in puts its slave in ignoreip; any other role has none
  (see fail2ban). A failure there is reported (not_applied) after the rest is done.

Idempotent: nothing is written, reloaded or restarted when everything is as it should be.
PostgreSQL is reloaded when a file changed; a setting that needs a restart is pending until
the next restart (wazo-ha-status shows it); only a slave that serves no telephony is restarted
by the converge itself, once per change of the file."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from . import jobs, role
from .adapters.system import (KeyStore, mail_once, read_text, run,
                               single_instance)
from .decisions import health
from .decisions.stream import PUBLICATION, SLOT_PREFIX, SUBSCRIPTION
from .errors import CommandError, HaConfError, WazoHaError
from .failover import check, services
from .files import rsyncd
from .settings import CONTINUOUS, Settings
from .stream import publication
from .access import fail2ban, pg_access, pg_files, stream_access

logger = logging.getLogger('wazo-ha')

JOB = jobs.CONVERGE
MAIL_SUBJECT = 'HA node access does not follow ha.conf'
ALWAYS, IDLE_SLAVE = 'always', 'idle-slave'     # who may restart PostgreSQL (see converge)

# what this node holds of ours, from the catalog (one psql session when nothing is to do)
CATALOG_SQL = """
SELECT json_build_object(
  'replication_role', EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'replication_role'),
  'stream_role', EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'stream_role'),
  'subscription_owner', EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'subscription_owner'),
  'slots', (SELECT count(*) FROM pg_replication_slots WHERE starts_with(slot_name, :'prefix')
              AND (database IS NULL OR database = current_database())),
  'publication', EXISTS (SELECT 1 FROM pg_publication WHERE pubname = :'publication'),
  'subscription', (SELECT json_build_object('slot', s.subslotname, 'conninfo', s.subconninfo)
                   FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid
                   WHERE s.subname = :'subscription' AND d.datname = current_database()))
"""


@dataclass(frozen=True)
class Target:
    """What this node's access should be, from ha.conf and [database] mode (pure)."""
    node_type: str
    remote_address: str
    slave: bool              # the master may replicate and sync into this node
    stream_master: bool      # a continuous master: the slave may stream from it
    subscription: bool       # a continuous slave: its subscription may stay


def target(config: role.HaConfig, mode: str) -> Target:
    """mode: [database] mode."""
    slave = config.node_type == 'slave' and bool(config.remote_address)
    master = config.node_type == 'master' and bool(config.remote_address)
    continuous = mode == CONTINUOUS
    return Target(config.node_type, config.remote_address, slave, master and continuous,
                  slave and continuous)


def keeps_subscription(t: Target, sub: dict) -> bool:
    """A subscription found in the catalog stays only on a continuous slave, and only when it
    streams from this slave's master."""
    return t.subscription and _host(sub.get('conninfo') or '') == t.remote_address


@dataclass
class Outcome:
    changes: list[str] = field(default_factory=list)
    pending_restart: list[str] = field(default_factory=list)   # settings waiting for a restart
    restarted: bool = False
    conf_digest: str = ''        # of conf.d/wazo-ha.conf: a restart is done once per content
    not_applied: list[str] = field(default_factory=list)   # what failed beside the rest

    def sentence(self, node_type: str) -> str:
        said = (f'{len(self.changes)} changes' if self.changes else 'nothing to change')
        said = f'node access converged to ha.conf ({node_type}): {said}'
        if self.pending_restart:
            said += ('; PostgreSQL must be restarted for ' + ', '.join(self.pending_restart)
                     + ' to take effect')
        if self.not_applied:
            said += '; not applied: ' + '; '.join(self.not_applied)
        return said


def load_config(settings: Settings) -> role.HaConfig:
    """ha.conf; a node without one is not configured for HA: disabled. Corrupt: HaConfError."""
    return role.load_or_disabled(settings.paths.ha_conf)


def converge(settings: Settings, config: role.HaConfig | None = None,
             restart: str = IDLE_SLAVE, restarted_for: str = '',
             before_restart: Callable[[str], None] | None = None) -> Outcome:
    """Bring this node's access in line with `config` (default: ha.conf); what changed.

    On a node that is not a slave, the master's ways in are closed first and each on its own
    (the rsync daemon configuration, our pg_hba.conf block, the replication role's login and
    sessions, then the role), so that neither a refusing role nor an old master that does not
    answer keeps one open; the subscription is dropped last. Every failure is collected and
    raised at the end (WazoHaError), after the rest was done.

    restart: ALWAYS restarts PostgreSQL when this run changed conf.d/wazo-ha.conf and a setting
    of it waits for a restart (wazo-ha-config set, asked by the administrator); IDLE_SLAVE only
    on a slave that serves no telephony, and not again for the conf.d content it was already
    restarted for (`restarted_for`); before_restart(digest) is called first, to record it."""
    config = config or load_config(settings)
    t = target(config, settings.database.mode)
    d = settings.database
    out = Outcome()
    errors: list[str] = []
    try:
        catalog = _catalog(settings) if d.admin_psql else {}
        unread = None
    except WazoHaError as e:  # PostgreSQL stopped (at installation): the files still written
        catalog, unread = {}, str(e).split('\n', 1)[0][:200]

    def step(action: Callable[[], list[str]]) -> None:
        try:
            out.changes.extend(action())
        except (WazoHaError, OSError) as e:
            errors.append(str(e))
            logger.warning('node access: %s', e)

    conf_changed = False

    def files() -> list[str]:
        nonlocal conf_changed
        applied = pg_files.apply(settings, pg_files.wanted(settings, t.node_type,
                                                           t.remote_address),
                                 stopped=unread is not None)
        conf_changed = conf_changed or applied.conf_changed
        return applied.changes

    if unread is not None:
        # nothing of the database can be done: the files only (conf.d's wal_level then is in
        # place for PostgreSQL's next start, e.g. the one of PUT /ha), the rest at the next run
        step(files)
        if not t.slave:
            step(lambda: rsyncd.apply_daemon_config(settings, False))
        raise WazoHaError(f'PostgreSQL cannot be read ({unread}): '
                          + ('; '.join(out.changes) + '; ' if out.changes else '')
                          + ('; '.join(errors) + '; ' if errors else '')
                          + 'the roles and the publication are made at the next run, once '
                          'PostgreSQL runs')
    # the continuous master's side: created before its pg_hba.conf block, taken away before
    if t.stream_master:
        if not d.admin_psql:
            raise WazoHaError('continuous mode needs [database] admin_psql on the master (the '
                              'stream role is made as the superuser)')
        step(lambda: stream_access.apply_role(settings, wanted=True))
        step(lambda: publication.keep_in_step(settings))
    elif catalog.get('publication') or catalog.get('stream_role') or catalog.get('slots'):
        if catalog.get('publication'):
            step(lambda: publication.drop(settings))
        step(lambda: stream_access.apply_role(settings, wanted=False))
    if t.slave:  # the role first, so that a refusal changes no file
        out.changes += pg_access.apply_role(settings, slave=True)
        out.changes += files()
        out.changes += rsyncd.apply_daemon_config(settings, True)
    else:  # the master's ways in closed each whatever the others do, the files first
        step(lambda: rsyncd.apply_daemon_config(settings, False))
        step(files)
        if catalog.get('replication_role'):
            step(lambda: close_replication_role(settings))
        step(lambda: pg_access.lock_subscription_owner(settings))
    sub = catalog.get('subscription')
    if sub and not keeps_subscription(t, sub):  # last: the old master may not answer
        step(lambda: _drop_subscription(settings, sub))
    if not t.slave and catalog.get('subscription_owner') and not errors:
        # a former slave: once no subscription is left, its owner role is not needed at all
        step(lambda: pg_access.drop_subscription_owner(settings))
    conf = read_text(os.path.join(settings.paths.postgresql_conf_dir, 'conf.d',
                                  pg_files.CONF_NAME)) or ''
    out.conf_digest = hashlib.sha256(conf.encode()).hexdigest()[:16]
    if errors:
        raise WazoHaError('; '.join(errors) + (' (done: ' + '; '.join(out.changes) + ')'
                                               if out.changes else ''))
    out.pending_restart = pg_files.pending(settings)
    # serving() read last, right before the restart: the check may just have decided
    if out.pending_restart and _may_restart(t, restart, restarted_for, out.conf_digest,
                                            conf_changed) and \
            (restart == ALWAYS or not serving(settings)):
        if before_restart:
            before_restart(out.conf_digest)   # a failed restart is not retried every minute
        run(d.restart_command, timeout=120)
        out.changes.append('PostgreSQL restarted (' + ', '.join(out.pending_restart) +
                           (' changed)' if restart == ALWAYS else
                            ' changed; this slave serves no telephony)'))
        out.restarted = True
        out.pending_restart = pg_files.pending(settings)
    try:  # last: fail2ban is not PostgreSQL's nor the rsync daemon's business
        out.changes += fail2ban.apply(settings, t.remote_address if t.node_type == 'master'
                                      and t.remote_address else None)
    except (OSError, WazoHaError) as e:
        out.not_applied.append(f'fail2ban drop-in for the slave: {e}')
    return out


def close_replication_role(settings: Settings) -> list[str]:
    """The replication role of a node that is no longer a slave: no login and its sessions
    ended first (in their own statements, so that nothing after can keep them open), then what
    it owns or was granted (a hostile old master may have granted it privileges, which would
    make DROP ROLE fail) given to the tables' owner or revoked, and the role dropped. A role of
    that name that is a superuser or may create roles is not ours: left alone."""
    if not settings.database.admin_psql:
        return []
    d = settings.database
    state = pg_access.admin_json(settings, pg_access.ROLE_STATE_SQL, role=d.remote_user)
    current = state.get('role')
    if not current or current['super'] or current['createrole']:
        return []
    r = pg_access.ident(d.remote_user)
    said = []
    if current['login']:
        pg_access.admin_psql(settings, f'ALTER ROLE {r} NOLOGIN;\n')
        said.append(f'PostgreSQL: role {d.remote_user}: no login')
    ended = pg_access.admin_psql(settings, 'SELECT count(pg_terminate_backend(pid)) FROM '
                                 "pg_stat_activity WHERE usename = :'role';\n",
                                 role=d.remote_user).stdout.strip()
    if ended not in ('', '0'):
        said.append(f'PostgreSQL: ended the {ended} sessions of the role {d.remote_user}')
    owners = [o['name'] for o in state.get('owners') or []]
    reassign = f'REASSIGN OWNED BY {r} TO {pg_access.ident(owners[0])};\n' \
        if len(owners) == 1 else ''
    try:
        pg_access.admin_psql(settings, f'BEGIN;\n{reassign}DROP OWNED BY {r};\n'
                                       f'DROP ROLE {r};\nCOMMIT;\n')
    except CommandError as e:
        raise WazoHaError(f'the role {d.remote_user} could not be dropped (its login is off and '
                          f'its sessions ended; retried next minute): '
                          f'{str(e).rsplit(": ", 1)[-1]}') from None
    return said + [f'PostgreSQL: dropped the replication role {d.remote_user}' +
                   (f' (what it owned given to {owners[0]}, its privileges revoked)'
                    if reassign else ' (its privileges revoked)')]


def _may_restart(t: Target, restart: str, restarted_for: str, digest: str,
                 conf_changed: bool) -> bool:
    """Whether this run may restart PostgreSQL, serving() aside (read last by the caller)."""
    if restart == ALWAYS:  # only for what this run changed (set twice changes nothing)
        return conf_changed
    return t.slave and restarted_for != digest


def serving(settings: Settings) -> bool:
    """The slave took over: the check decided the master down, or its telephony runs."""
    if check.last_decision(settings) == health.DOWN:
        return True
    return services.available() and services.running()


def _catalog(settings: Settings) -> dict:
    d = settings.database
    return pg_access.admin_json(settings, CATALOG_SQL, replication_role=d.remote_user,
                                stream_role=d.stream_user,
                                subscription_owner=d.subscription_owner, prefix=SLOT_PREFIX,
                                publication=PUBLICATION, subscription=SUBSCRIPTION)


def _drop_subscription(settings: Settings, sub: dict) -> list[str]:
    """Disable the subscription found in the catalog (nothing more is applied from then on),
    then drop it with its slot on the master it names when that master answers in time and
    lets us; else without the slot (the master drops our slots itself when it stops being a
    continuous master, and keeps at most [database] slot_wal_keep_size for it)."""
    name = pg_access.ident(SUBSCRIPTION)
    master = _host(sub.get('conninfo') or '') or 'the old master'
    # wazo-ha-stream holds its lock while it hands off (it creates the subscription then)
    # [database] subscription_drop_timeout: an old master that accepts TCP but never answers
    # would hold DROP SUBSCRIPTION for psql's whole timeout
    timeout = settings.database.subscription_drop_timeout
    with single_instance(settings.paths.lock_dir, jobs.STREAM.name, wait=60):
        pg_access.admin_psql(settings, f'ALTER SUBSCRIPTION {name} DISABLE;\n')
        if not sub.get('slot'):
            pg_access.admin_psql(settings, f'DROP SUBSCRIPTION {name};\n')
            return [f'PostgreSQL: dropped the subscription {SUBSCRIPTION} (it had no slot)']
        try:
            pg_access.admin_psql(settings, f"SET statement_timeout = '{timeout}s';\n"
                                           f'DROP SUBSCRIPTION {name};\n')
            return [f'PostgreSQL: dropped the subscription {SUBSCRIPTION} and its slot '
                    f'{sub["slot"]} on {master}']
        except CommandError as e:
            pg_access.admin_psql(settings, f'ALTER SUBSCRIPTION {name} SET (slot_name = NONE);\n'
                                           f'DROP SUBSCRIPTION {name};\n')
            reason = str(e).rsplit(': ', 1)[-1]
            return [f'PostgreSQL: dropped the subscription {SUBSCRIPTION}; its slot '
                    f'{sub["slot"]} stays on {master}, which did not let us drop it in '
                    f'{timeout}s ({reason})']


def _host(conninfo: str) -> str:
    for word in conninfo.split():
        if word.startswith('host='):
            return word[len('host='):]
    return ''


# the job (cron, every minute) and its record

def recorded(settings: Settings) -> jobs.LastRun | None:
    return jobs.load_last_run(settings.paths.state_dir, JOB)


def converge_and_record(settings: Settings, config: role.HaConfig | None = None,
                        restart: str = IDLE_SLAVE) -> Outcome:
    """converge(), its outcome recorded for wazo-ha-status (pending restart, failure). The
    caller holds the lock JOB.name."""
    last = recorded(settings)
    details = dict(last.details or {}) if last else {}
    def before_restart(digest: str) -> None:
        details['restarted_for'] = digest
        jobs.save_last_run(settings.paths.state_dir, JOB, jobs.LastRun(
            last.result, last.finished_at, last.sentence, last.error_kind, details) if last
            else jobs.LastRun('ok', time.time(), 'restarting PostgreSQL', None, details))

    try:
        outcome = converge(settings, config, restart, details.get('restarted_for', ''),
                           before_restart)
    except (WazoHaError, OSError) as e:
        jobs.save_last_run(settings.paths.state_dir, JOB,
                           jobs.LastRun('failed', time.time(), str(e), jobs.FAILED, details))
        raise
    if outcome.restarted:
        details['restarted_for'] = outcome.conf_digest
    details['pending_restart'] = outcome.pending_restart
    details.pop('mailed', None)
    node_type = (config or load_config(settings)).node_type
    failed = bool(outcome.not_applied)
    jobs.save_last_run(settings.paths.state_dir, JOB,
                       jobs.LastRun('failed' if failed else 'ok', time.time(),
                                    outcome.sentence(node_type), jobs.FAILED if failed else None,
                                    details))
    return outcome


def run_job(settings: Settings) -> Outcome:
    """`wazo-ha-config converge`: one log line per change; silent when nothing changed. When
    ha.conf changed meanwhile (wazo-sysconfd writes it on PUT /ha), run once more on the new
    one."""
    config = _load_for_job(settings)
    with single_instance(settings.paths.lock_dir, JOB.name, wait=30):
        outcome = converge_and_record(settings, config)
        now = _load_for_job(settings)
        if now != config:
            config = now
            again = converge_and_record(settings, config)
            again.changes[:0] = outcome.changes
            outcome = again
    for line in outcome.changes:
        logger.info('changed: %s', line)
    if outcome.not_applied:
        raise WazoHaError(outcome.sentence(config.node_type))
    if outcome.changes:
        logger.info('%s', outcome.sentence(config.node_type))
    return outcome


def _load_for_job(settings: Settings) -> role.HaConfig:
    try:
        return load_config(settings)
    except HaConfError as e:
        raise HaConfError(f'{e}: node access left as it is') from None


def mail_failure_once(settings: Settings, error: str) -> bool:
    """A failure of the cron run mails root once, not every minute while it lasts the same
    way (the key: the error's first words, kept in the converge record)."""
    def load() -> object:
        last = recorded(settings)
        return (last.details or {}).get('mailed') if last else None

    def save(key: object) -> None:
        last = recorded(settings) or jobs.LastRun('failed', time.time(), error, jobs.FAILED)
        jobs.save_last_run(settings.paths.state_dir, JOB, jobs.LastRun(
            last.result, last.finished_at, last.sentence, last.error_kind,
            {**(last.details or {}), 'mailed': key}))

    return mail_once(settings, KeyStore(load, save), error.split(':', 1)[0], MAIL_SUBJECT,
                     f'{JOB.name} failed on this node:\n\n{error}\n\nIt tries again every '
                     'minute; this mail is not repeated while it fails the same way.\nSee '
                     f'{settings.paths.log_file}.\n')
