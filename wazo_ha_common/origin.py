"""A rebuilt master never wipes the slave.

A master rebuilt at the same address (disk lost, reinstalled, paired again) is an empty box:
its hourly copy would replace the slave's database, the only good copy, and wazo-sync would
delete the slave's files. So the slave remembers which master cluster its data came from:
the master's PostgreSQL system identifier (pg_control_system(), new at every initdb),
written into the slave's own database (wazo_ha.origin, outside the copied schema) in the same
transaction as each copy. A master whose cluster is another one is not trusted with the
slave's data: replication and wazo-sync refuse, until the administrator either promotes the
slave or runs them with --replace-slave. The first copy to a slave (nothing recorded yet)
proceeds and records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import WazoHaError

logger = logging.getLogger('wazo-ha')

MISSING = None          # nothing recorded: the first copy to this slave
NO_TABLE = 'no-table'   # a slave set up before this record existed


class ForeignMasterError(WazoHaError):
    """The master is not the cluster the slave copied from: exit 1, nothing changed."""


def refusal(master_ip: str) -> str:
    return (f'the master at {master_ip} is not the cluster this slave copied from (rebuilt?): '
            'promote the slave or run with --replace-slave')


@dataclass(frozen=True)
class Decision:
    proceed: bool
    record: bool        # write the master's identifier in the slave's record
    sentence: str


def decide(recorded: str | None, master: str, master_ip: str, replace: bool) -> Decision:
    """Pure: what to do with the slave's data, given its record and the master's identity."""
    if recorded == NO_TABLE:
        return Decision(True, False, 'the slave keeps no record of the master it copies from '
                                     '(set up by an older wazo-ha): run wazo-ha-config set '
                                     '--node-type slave ... on the slave')
    if recorded is MISSING:
        return Decision(True, True, f'first copy to this slave: it now remembers the master '
                                    f'cluster {master}')
    if recorded == master:
        return Decision(True, False, '')
    if replace:
        return Decision(True, True, f'--replace-slave: the slave copied from the cluster '
                                    f'{recorded}, it now takes the master cluster {master}')
    return Decision(False, False, refusal(master_ip))


# SQL, on a cursor of the replication role's connection to the slave (psycopg2, through db)

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


def master_identity(settings, horizon_system: str) -> str:
    """The master's system identifier: from its own connection when it may read
    pg_control_system(), else through [database] admin_psql; the database's oid (weaker: a
    reinstall may give the same) only when neither can."""
    if not horizon_system.startswith('db-'):
        return horizon_system
    if settings.database.admin_psql:
        from . import pg_access
        try:
            data = pg_access.admin_json(
                settings, "SELECT json_build_object('system', system_identifier::text) "
                          'FROM pg_control_system()')
            if isinstance(data.get('system'), str):
                return data['system']
        except WazoHaError as e:
            logger.warning('cannot read the master cluster\'s system identifier ([database] '
                           'admin_psql): %s', e)
    return horizon_system


def guard(settings, cur, master_ip: str, master: str, replace: bool, by: str) -> bool:
    """Refuse (ForeignMasterError) or go on; True when the record is to be written in the
    caller's transaction (with origin.write)."""
    decision = decide(read(cur), master, master_ip, replace)
    if not decision.proceed:
        raise ForeignMasterError(decision.sentence)
    if decision.sentence:
        logger.warning('%s', decision.sentence)
    return decision.record


def own_address(peer_ip: str) -> str:
    """This node's address toward the peer (the master's address, as the slave knows it)."""
    from .sync import source_address
    try:
        return source_address(peer_ip)
    except OSError:
        return 'this master'


def check_before_sync(settings, slave_ip: str, replace: bool, by: str,
                      dry_run: bool = False) -> str:
    """wazo-sync: the same guard, through the replication role's login to the slave (a
    short transaction of its own). ForeignMasterError, or a sentence for the log. A slave
    database that cannot be reached does not stop the file sync (said in the log)."""
    from . import db, pg_access
    try:
        master_conn = db.connect(settings.database.local_dsn,
                                 'the master database ([database] local_dsn)', application=by)
        try:
            master = master_identity(settings, db.horizon(db.cursor(master_conn))['system'])
        finally:
            db.close(master_conn)
        slave_conn = db.connect(pg_access.slave_dsn(settings, slave_ip),
                                f'the slave database at {slave_ip}', application=by)
    except WazoHaError as e:
        return (f'cannot tell which master cluster the slave copied from ({e}): files synced '
                'anyway')
    try:
        cur = db.cursor(slave_conn)
        if guard(settings, cur, own_address(slave_ip), master, replace, by) and not dry_run:
            write(cur, master, by)
        db.commit(slave_conn)
    finally:
        db.close(slave_conn)
    return ''
