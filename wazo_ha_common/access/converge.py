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

from .. import jobs, role
from ..adapters.system import read_state, read_text, run, single_instance
from ..decisions import health
from ..decisions.stream import PUBLICATION, SLOT_PREFIX, SUBSCRIPTION
from ..errors import CommandError, HaConfError, WazoHaError
from ..failover import services
from ..files import rsyncd
from ..settings import CONTINUOUS, Settings
from ..stream import publication
from . import fail2ban, pg_access, pg_files, stream_access

logger = logging.getLogger('wazo-ha')

JOB = jobs.CONVERGE
ALWAYS, IDLE_SLAVE = 'always', 'idle-slave'     # who may restart PostgreSQL (see converge)

# what this node holds of ours, from the catalog (one psql session when nothing is to do)
CATALOG_SQL = """
SELECT json_build_object(
  'replication_role', EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'replication_role'),
  'stream_role', EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'stream_role'),
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
    if not os.path.exists(settings.paths.ha_conf):
        return role.HaConfig('disabled', '')
    return role.load(settings.paths.ha_conf)


def converge(settings: Settings, config: role.HaConfig | None = None,
             restart: str = IDLE_SLAVE, restarted_for: str = '') -> Outcome:
    """Bring this node's access in line with `config` (default: ha.conf); what changed.

    restart: ALWAYS restarts PostgreSQL when one of its settings waits for it (wazo-ha-config
    set, asked by the administrator); IDLE_SLAVE only on a slave that serves no telephony, and
    not again for the conf.d content it was already restarted for (`restarted_for`)."""
    config = config or load_config(settings)
    t = target(config, settings.database.mode)
    d = settings.database
    out = Outcome()
    catalog = _catalog(settings) if d.admin_psql else {}
    sub = catalog.get('subscription')
    if sub and not keeps_subscription(t, sub):
        out.changes += _drop_subscription(settings, sub)
    # the continuous master's side: created before its pg_hba.conf block, taken away before
    if t.stream_master:
        if not d.admin_psql:
            raise WazoHaError('continuous mode needs [database] admin_psql on the master (the '
                              'stream role is made as the superuser)')
        out.changes += stream_access.apply_role(settings, wanted=True)
        out.changes += publication.keep_in_step(settings)
    elif catalog.get('publication') or catalog.get('stream_role') or catalog.get('slots'):
        if catalog.get('publication'):
            out.changes += publication.drop(settings)
        out.changes += stream_access.apply_role(settings, wanted=False)
    # the slave's side: the role first, so that a refusal changes no file
    if t.slave or catalog.get('replication_role'):
        out.changes += pg_access.apply_role(settings, slave=t.slave)
    applied = pg_files.apply(settings, pg_files.wanted(settings, t.node_type, t.remote_address))
    out.changes += applied.changes
    out.changes += rsyncd.apply_daemon_config(settings, t.slave)
    conf = read_text(os.path.join(settings.paths.postgresql_conf_dir, 'conf.d',
                                  pg_files.CONF_NAME)) or ''
    out.conf_digest = hashlib.sha256(conf.encode()).hexdigest()[:16]
    out.pending_restart = pg_files.pending(settings)
    if out.pending_restart and _may_restart(settings, t, restart, restarted_for, out.conf_digest):
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


def _may_restart(settings: Settings, t: Target, restart: str, restarted_for: str,
                 digest: str) -> bool:
    if restart == ALWAYS:
        return True
    return t.slave and restarted_for != digest and not serving(settings)


def serving(settings: Settings) -> bool:
    """The slave took over: the check decided the master down, or its telephony runs."""
    memory = read_state(settings.paths.state_dir, jobs.CHECK.state_file)
    if memory.get('decision') == health.DOWN:
        return True
    return services.available() and services.running()


def _catalog(settings: Settings) -> dict:
    d = settings.database
    return pg_access.admin_json(settings, CATALOG_SQL, replication_role=d.remote_user,
                                stream_role=d.stream_user, prefix=SLOT_PREFIX,
                                publication=PUBLICATION, subscription=SUBSCRIPTION)


def _drop_subscription(settings: Settings, sub: dict) -> list[str]:
    """Drop the subscription found in the catalog, with its slot on the master it names when
    that master lets us; else without it (the master drops our slots itself when it stops
    being a continuous master, and keeps at most [database] slot_wal_keep_size for it)."""
    name = pg_access.ident(SUBSCRIPTION)
    master = _host(sub.get('conninfo') or '') or 'the old master'
    # wazo-ha-stream holds its lock while it hands off (it creates the subscription then)
    with single_instance(settings.paths.lock_dir, jobs.STREAM.name, wait=60):
        if not sub.get('slot'):
            pg_access.admin_psql(settings, f'DROP SUBSCRIPTION {name};\n')
            return [f'PostgreSQL: dropped the subscription {SUBSCRIPTION} (it had no slot)']
        try:
            pg_access.admin_psql(settings, f'DROP SUBSCRIPTION {name};\n')
            return [f'PostgreSQL: dropped the subscription {SUBSCRIPTION} and its slot '
                    f'{sub["slot"]} on {master}']
        except CommandError as e:
            pg_access.admin_psql(settings, f'ALTER SUBSCRIPTION {name} DISABLE;\n'
                                           f'ALTER SUBSCRIPTION {name} SET (slot_name = NONE);\n'
                                           f'DROP SUBSCRIPTION {name};\n')
            reason = str(e).rsplit(': ', 1)[-1]
            return [f'PostgreSQL: dropped the subscription {SUBSCRIPTION}; its slot '
                    f'{sub["slot"]} stays on {master}, which did not let us drop it ({reason})']


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
    try:
        outcome = converge(settings, config, restart, details.get('restarted_for', ''))
    except (WazoHaError, OSError) as e:
        jobs.save_last_run(settings.paths.state_dir, JOB,
                           jobs.LastRun('failed', time.time(), str(e), jobs.FAILED, details))
        raise
    if outcome.restarted:
        details['restarted_for'] = outcome.conf_digest
    details['pending_restart'] = outcome.pending_restart
    node_type = (config or load_config(settings)).node_type
    failed = bool(outcome.not_applied)
    jobs.save_last_run(settings.paths.state_dir, JOB,
                       jobs.LastRun('failed' if failed else 'ok', time.time(),
                                    outcome.sentence(node_type), jobs.FAILED if failed else None,
                                    details))
    return outcome


def run_job(settings: Settings) -> Outcome:
    """`wazo-ha-config converge`: one log line per change; silent when nothing changed."""
    try:
        config = load_config(settings)
    except HaConfError as e:
        raise HaConfError(f'{e}: node access left as it is') from None
    with single_instance(settings.paths.lock_dir, JOB.name, wait=30):
        outcome = converge_and_record(settings, config)
    for line in outcome.changes:
        logger.info('changed: %s', line)
    if outcome.not_applied:
        raise WazoHaError(outcome.sentence(config.node_type))
    if outcome.changes:
        logger.info('%s', outcome.sentence(config.node_type))
    return outcome
