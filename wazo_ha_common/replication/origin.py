"""A rebuilt master never wipes the slave.

A master rebuilt at the same address (disk lost, reinstalled, paired again) is an empty box:
its hourly copy would replace the slave's database, the only good copy, and wazo-sync would
delete the slave's files. So the slave remembers which master cluster its data came from:
the master's PostgreSQL system identifier (pg_control_system(), new at every initdb),
written into the slave's own database (wazo_ha.origin, outside the copied schema) in the same
transaction as each copy. A master whose cluster is another one is not trusted with the
slave's data: replication and wazo-sync refuse, until the administrator either promotes the
slave or runs them with --replace-slave. The first copy to a slave (nothing recorded yet)
proceeds and records. The decision is decisions/origin's; this module reads and writes the
record and finds the master's identity.
"""

from __future__ import annotations

import logging

from ..access import pg_access
from ..adapters.db import catalog, session
from ..adapters.network import source_address
from ..decisions.origin import (MISSING, NO_TABLE, ForeignMasterError, UnknownOriginError,
                                decide, unknown_origin)
from ..errors import WazoHaError
from ..settings import Settings

logger = logging.getLogger('wazo-ha')

__all__ = ['ForeignMasterError', 'UnknownOriginError', 'read', 'write', 'master_identity', 'guard', 'own_address',
           'check_before_sync']


def read(cur) -> str | None:
    """The recorded identifier; MISSING; NO_TABLE when the slave has no such record."""
    cur.execute("SELECT to_regclass('wazo_ha.origin') IS NOT NULL "
                "AND has_table_privilege(to_regclass('wazo_ha.origin'), 'SELECT, INSERT, DELETE')")
    if not cur.fetchone()[0]:
        return NO_TABLE
    cur.execute('SELECT system_identifier FROM wazo_ha.origin ORDER BY recorded_at DESC LIMIT 1')
    row = cur.fetchone()
    return row[0] if row else MISSING


def write(cur, master: str, by: str) -> None:
    """Inside the copy's transaction: committed with it, or not at all."""
    cur.execute('DELETE FROM wazo_ha.origin')
    cur.execute('INSERT INTO wazo_ha.origin (system_identifier, recorded_by) VALUES (%s, %s)',
                (master, by))


def write_at_commit(nodes, master: str, by: str) -> None:
    """The record rides in the slave's transaction, written just before its commit (after any
    retry of the write: a rolled-back attempt loses nothing)."""
    earlier = nodes.before_commit

    def before_commit(cur) -> None:
        write(cur, master, by)
        if earlier is not None:
            earlier(cur)
    nodes.before_commit = before_commit


def master_identity(settings: Settings, horizon_system: str) -> str:
    """The master's system identifier: from its own connection when it may read
    pg_control_system(), else through [database] admin_psql; the database's oid (weaker: a
    reinstall may give the same) only when neither can."""
    if not horizon_system.startswith('db-'):
        return horizon_system
    if settings.database.admin_psql:
        try:
            data = pg_access.admin_json(
                settings, "SELECT json_build_object('system', system_identifier::text) "
                          'FROM pg_control_system()')
            if isinstance(data.get('system'), str):
                return data['system']
        except WazoHaError as e:
            logger.warning("cannot read the master cluster's system identifier ([database] "
                           'admin_psql): %s', e)
    return horizon_system


def guard(cur, master_ip: str, master: str, replace: bool) -> bool:
    """Refuse (ForeignMasterError) or go on; True when the record is to be written in the
    caller's transaction (with write)."""
    decision = decide(read(cur), master, master_ip, replace)
    if not decision.proceed:
        raise ForeignMasterError(decision.sentence)
    if decision.sentence:
        logger.warning('%s', decision.sentence)
    return decision.record


def own_address(peer_ip: str) -> str:
    """This node's address toward the peer (the master's address, as the slave knows it)."""
    try:
        return source_address(peer_ip)
    except OSError:
        return 'this master'


def check_before_sync(settings: Settings, slave_ip: str, replace: bool, by: str,
                      dry_run: bool = False) -> str:
    """wazo-sync: the same guard, through the replication role's login to the slave (a
    short transaction of its own). ForeignMasterError, or a sentence for the log. A slave
    whose record cannot be read (its database does not answer) is not pushed to: a rebuilt
    master would delete its files (UnknownOriginError), unless `replace`. Only this master's
    own database not answering lets the files go (it cannot be told apart from a master
    without PostgreSQL: said in the log)."""
    try:
        master_conn = session.connect(settings.database.local_dsn,
                                      'the master database ([database] local_dsn)',
                                      application=by)
        try:
            master = master_identity(settings,
                                     catalog.horizon(session.cursor(master_conn))['system'])
        finally:
            session.close(master_conn)
    except WazoHaError as e:
        return (f'cannot tell which cluster this master is ({e}): files synced anyway')
    try:
        slave_conn = session.connect(pg_access.slave_dsn(settings, slave_ip),
                                     f'the slave database at {slave_ip}', application=by)
        try:
            cur = session.cursor(slave_conn)
            if guard(cur, own_address(slave_ip), master, replace) and not dry_run:
                write(cur, master, by)
            session.commit(slave_conn)
        finally:
            session.close(slave_conn)
    except ForeignMasterError:
        raise
    except WazoHaError as e:
        if replace:
            return (f'--replace-slave: cannot tell which cluster the slave copied from ({e}): '
                    'files pushed anyway, its record is written by the next replication')
        raise UnknownOriginError(unknown_origin(str(e))) from None
    return ''
