"""The one owner of our PostgreSQL configuration files, on every role and in both modes:
- pg_hba.conf: the slave's block (the master may replicate in: pg_access.hba_lines) and the
  continuous master's block (the slave may stream: stream_access.hba_lines), each first in the
  file so that its lines match before anything wazo-sysconfd appends;
- conf.d/wazo-ha.conf: listen_addresses on a slave; wal_level, max_slot_wal_keep_size and
  listen_addresses on a continuous master; in continuous mode wal_level = logical on every role
  (a slave too, and a node not yet configured: the installation's file), so that the
  PostgreSQL restart of Wazo's own PUT /ha activates it; no file in hourly mode on a node that
  is not a slave. render_conf() is its one renderer.

render() is pure; apply() writes what differs and reloads PostgreSQL once when anything did.
A setting that needs a restart (listen_addresses, wal_level) is then pending: see pending()."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from ..adapters.system import (ChangedMeanwhile, read_no_follow, read_state, run,
                               unlink_no_follow, write_state)
from ..errors import WazoHaError
from ..settings import Settings
from . import pg_access, stream_access

CONF_NAME = pg_access.CONF_NAME
# the settings of conf.d/wazo-ha.conf that only a restart applies (max_slot_wal_keep_size is
# applied by a reload)
RESTART_SETTINGS = ('listen_addresses', 'wal_level')
# what PostgreSQL says, in pg_file_settings, of a changed setting that needs a restart
NEEDS_RESTART = 'setting could not be applied'
# a reload that failed on a running PostgreSQL: owed until one succeeds (the files are already
# as they should be at the next run, which would otherwise find nothing to reload)
RELOAD_OWED = 'pg-reload-owed.json'
PENDING_SQL = ("SELECT json_build_object('pending', (SELECT coalesce(json_agg(DISTINCT name), "
               f"'[]'::json) FROM pg_file_settings WHERE error = '{NEEDS_RESTART}' AND name IN "
               f"({', '.join(repr(n) for n in RESTART_SETTINGS)})))")


# wazo-sysconfd's own line for the master (it writes it on a slave, removes it on its next PUT
# /ha): on a node that is not a slave now, a line left by it (ha.conf written by other means, or
# a sed -i racing with us) would let the old master in as postgres without a password. While
# one is there, our guard block, first in the file, refuses postgres from that address; the
# line itself stays: it is wazo-sysconfd's.
SYSCONFD_TRUST = re.compile(r'host\s+asterisk\s+postgres\s+(\S+)/(?:32|128)\s+trust\s*')
GUARD_BEGIN = ("# BEGIN wazo-ha: postgres refused from the address of wazo-sysconfd's trust line "
               '(managed by wazo-ha-config)')
GUARD_END = '# END wazo-ha guard'


def guard_lines(hba: str, master_ip: str | None) -> list[str]:
    """The reject lines for wazo-sysconfd's trust lines left on a node that is not a slave."""
    if master_ip:
        return []
    found = []
    for line in hba.splitlines():
        m = SYSCONFD_TRUST.fullmatch(line.strip())
        if not m:
            continue
        try:
            net = pg_access.host_net(m.group(1))
        except ValueError:
            continue
        if f'host all postgres {net} reject' not in found:
            found.append(f'host all postgres {net} reject')
    return found


@dataclass(frozen=True)
class Wanted:
    """What this node's access should be: the master's address (a slave), the slave's address
    (a master in continuous mode), or neither (anything else)."""
    master_ip: str | None = None
    stream_slave_ip: str | None = None
    listen: str = ''          # listen_addresses, when either address is set (or continuous)
    keep_mb: int = 1024       # max_slot_wal_keep_size of a continuous master
    continuous: bool = False  # [database] mode = continuous: wal_level = logical on every role


@dataclass
class Applied:
    changes: list[str] = field(default_factory=list)
    hba_changed: bool = False
    conf_changed: bool = False


def wanted(settings: Settings, node_type: str, remote_address: str) -> Wanted:
    """Wanted for this role (reads the route toward the peer for listen_addresses)."""
    master_ip = remote_address if node_type == 'slave' and remote_address else None
    stream_slave = stream_access.continuous_slave(settings, node_type, remote_address)
    listen = ''
    if master_ip:
        listen = pg_access.listen_addresses(settings, master_ip)
    elif settings.continuous:
        listen = any_listen(settings)
    return Wanted(master_ip, stream_slave, listen, settings.database.slot_wal_keep_size,
                  settings.continuous)


def any_listen(settings: Settings) -> str:
    """listen_addresses of a continuous node that is not a slave: [database] listen_addresses,
    or every address. The same before and after PUT /ha makes it master (its restart comes
    before any converge of ours could name the slave's side), so that this restart is the last
    one; pg_hba.conf decides who gets in (the stream role from the slave's address only)."""
    return settings.database.listen_addresses or '*'


# the first line of conf.d/wazo-ha.conf says why the file is there
SLAVE_HEADER = '# Managed by wazo-ha-config: the master connects to this slave for replication.\n'
MASTER_HEADER = '# Managed by wazo-ha-config: the slave streams the changes of this master.\n'
INSTALL_HEADER = ('# Managed by wazo-ha-config: continuous mode, so that the next restart of '
                  'PostgreSQL\n# (the one PUT /ha does) makes it ready to stream to a slave.\n')


def render_conf(want: Wanted) -> str | None:
    """conf.d/wazo-ha.conf as `want` says, or None when the file should not exist:
    - a slave listens toward its master; in continuous mode with wal_level = logical too, ready
      for the day it is made master (PUT /ha restarts PostgreSQL);
    - a continuous master: wal_level = logical, the WAL a slot may hold back, listen_addresses;
    - a continuous node that is neither (yet): what a master needs that only a restart applies;
    - an hourly node that is not a slave: no file (wanted() names a stream slave only in
      continuous mode)."""
    listen = f"listen_addresses = '{want.listen}'\n"
    if want.master_ip:
        return SLAVE_HEADER + listen + ('wal_level = logical\n' if want.continuous else '')
    if want.stream_slave_ip:
        return (MASTER_HEADER + 'wal_level = logical\n'
                f'max_slot_wal_keep_size = {want.keep_mb}MB\n' + listen)
    if want.continuous:
        return INSTALL_HEADER + 'wal_level = logical\n' + listen
    return None


def render(hba: str, want: Wanted, database: str, remote_user: str,
           stream_user: str, local_user: str | None = None) -> tuple[str, str | None]:
    """(pg_hba.conf, conf.d/wazo-ha.conf or None) as they should be; every line that is not
    in one of our blocks kept in order. local_user: the subscription's owner (a slave's
    block admits it through the local socket, see stream.owner)."""
    text = pg_access.render_hba(hba, want.master_ip, database, remote_user, local_user)
    text = stream_access.render_hba(text, want.stream_slave_ip, database, stream_user)
    text = pg_access.with_block(text, GUARD_BEGIN, GUARD_END, guard_lines(text, want.master_ip))
    return text, render_conf(want)


def apply(settings: Settings, want: Wanted, stopped: bool = False) -> Applied:
    """Write pg_hba.conf and conf.d/wazo-ha.conf as `want` says; reload PostgreSQL once when
    either changed. Nothing is written, nor reloaded, when both are as they should be; no link
    is followed in the configuration directory (its owner, postgres, could plant one).
    A failed reload raises, unless the caller found PostgreSQL `stopped` (it cannot be read:
    at installation): then it is said, and PostgreSQL reads the files when it starts. A
    reload that failed is owed (RELOAD_OWED): the next runs reload until one succeeds."""
    conf_dir = settings.paths.postgresql_conf_dir
    d = settings.database
    hba_path = os.path.join(conf_dir, 'pg_hba.conf')
    conf_path = os.path.join(conf_dir, 'conf.d', CONF_NAME)
    result = Applied()
    current = read_no_follow(hba_path)
    if current is None:
        if not (want.master_ip or want.stream_slave_ip):
            return result  # no PostgreSQL here (yet): nothing to get ready
        raise FileNotFoundError(f'{hba_path} does not exist (setting [paths] postgresql_conf_dir)')
    for attempt in range(3):  # wazo-sysconfd may sed -i the file meanwhile: again, on its text
        hba, conf = render(current, want, d.name, d.remote_user, d.stream_user,
                           d.subscription_owner)
        if hba == current:
            break
        try:  # read again just before the rename: a change in between is not lost
            pg_access.write_in_conf_dir(hba_path, hba, conf_dir, expect=current)
        except ChangedMeanwhile:
            if attempt == 2:
                raise ChangedMeanwhile(f'{hba_path} kept changing while it was being written '
                                       '(three times): left as it is, tried again at the next '
                                       'run') from None
            current = read_no_follow(hba_path)
            if current is None:
                raise FileNotFoundError(f'{hba_path} was removed while it was being written')
            continue
        result.hba_changed = True
        break
    if result.hba_changed:
        result.changes += _hba_sentences(hba_path, current, want, d.name, d.remote_user,
                                         d.stream_user, d.subscription_owner)
    current_conf = read_no_follow(conf_path)
    if conf != current_conf:
        if conf is None:
            unlink_no_follow(conf_path)
            result.changes.append(f'{conf_path}: removed')
        else:
            pg_access.write_in_conf_dir(conf_path, conf, conf_dir, mode=0o644)
            result.changes.append(f'{conf_path}: ' + '; '.join(
                line for line in conf.splitlines() if not line.startswith('#')))
        result.conf_changed = True
    owed = read_state(settings.paths.state_dir, RELOAD_OWED).get('since')
    if result.hba_changed or result.conf_changed or owed:
        try:
            run(d.reload_command, timeout=60)
            result.changes.append('PostgreSQL reloaded' if result.hba_changed or
                                  result.conf_changed else 'PostgreSQL reloaded (owed since a '
                                  'reload that failed)')
        except WazoHaError as e:
            if not stopped:
                write_state(settings.paths.state_dir, RELOAD_OWED, {'since': owed or time.time()})
                raise
            result.changes.append('PostgreSQL not reloaded (' + str(e).split('\n', 1)[0][:200]
                                  + '): it reads these files when it starts')
        if owed:
            unlink_no_follow(os.path.join(settings.paths.state_dir, RELOAD_OWED))
    return result


def _hba_sentences(path: str, before: str, want: Wanted, database: str, remote_user: str,
                   stream_user: str, local_user: str | None) -> list[str]:
    said = []
    slave_block = pg_access.render_hba(before, want.master_ip, database, remote_user,
                                       local_user)
    if slave_block != before:
        said.append(f'{path}: ' + (f'{want.master_ip} may connect to database {database} as '
                                   f'{remote_user} (TLS, scram-sha-256); postgres from that '
                                   'address refused' if want.master_ip
                                   else 'replication access removed'))
    if stream_access.render_hba(slave_block, want.stream_slave_ip, database, stream_user) \
            != slave_block:
        said.append(f'{path}: ' + (f'{want.stream_slave_ip} may stream database {database} as '
                                   f'{stream_user} (TLS, scram-sha-256); that role from '
                                   'elsewhere and for physical replication refused'
                                   if want.stream_slave_ip else 'stream access removed'))
    guard = guard_lines(stream_access.render_hba(slave_block, want.stream_slave_ip, database,
                                                 stream_user), want.master_ip)
    lines = before.splitlines()
    had = lines[lines.index(GUARD_BEGIN) + 1:lines.index(GUARD_END)] \
        if GUARD_BEGIN in lines and GUARD_END in lines else []
    if guard != had:
        said.append(f'{path}: ' + ('; '.join(guard) + " (wazo-sysconfd's trust line for that "
                                   'address is still there)' if guard else 'guard removed'))
    return said or [f'{path}: our blocks moved back to the top of the file']


def pending(settings: Settings) -> list[str]:
    """Those of RESTART_SETTINGS whose value in the configuration files waits for a PostgreSQL
    restart (the files are read again by this query: no reload needed to see them); whoever
    wrote them (wazo-sysconfd's listen_addresses = '*' counts too)."""
    if not settings.database.admin_psql:
        return []
    return sorted(pg_access.admin_json(settings, PENDING_SQL).get('pending') or [])
