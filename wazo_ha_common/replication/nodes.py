"""The two connections of a run, held together: the master read from one REPEATABLE READ
snapshot, the slave written in one transaction."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from typing import Callable, ContextManager

from ..adapters.db import session
from ..access import pg_access
from ..settings import Settings

logger = logging.getLogger('wazo-ha')


class Nodes:
    """`master`/`slave`: the connections; `mcur`/`scur`: one cursor on each. Use as a
    context manager: both connections are closed at its end. `before_commit(scur)` runs in
    the slave's transaction just before its commit, `after_rollback(scur)` right after a
    rollback of it (the hand-off's subscription rides in the copy's transaction so);
    `commit_guard()` is held around the commit and may raise to roll it back instead (the
    hand-off's: a failover came first)."""

    before_commit: Callable | None = None
    after_rollback: Callable | None = None
    commit_guard: Callable[[], ContextManager] = contextlib.nullcontext

    def __init__(self, settings: Settings, slave_ip: str, application: str):
        self.slave_ip = slave_ip
        self.master = session.connect(settings.database.local_dsn,
                                      'the master database ([database] local_dsn)',
                                      application=application)
        try:
            try:
                # the replication role, its password file, TLS
                self.slave = session.connect(pg_access.slave_dsn(settings, slave_ip),
                                             f'the slave database {settings.database.name} at '
                                             f'{slave_ip}:{settings.database.remote_port} as '
                                             f'{settings.database.remote_user}',
                                             application=application)
            except session.DatabaseError as e:
                raise session.DatabaseError(pg_access.connection_hint(str(e), settings)) from None
            # only one run at a time holds the master's lock: any other session of ours on
            # the slave is stale, and its open transaction would hold its locks until the
            # slave notices the dead connection
            for pid in session.end_other_sessions(self.slave, application):
                logger.warning('ended session %s left on the slave by an interrupted replication',
                               pid)
            session.read_snapshot(self.master)
            self.mcur, self.scur = session.cursor(self.master), session.cursor(self.slave)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Nodes:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for conn in (getattr(self, 'master', None), getattr(self, 'slave', None)):
            if conn is not None:
                session.close(conn)

    def both(self, query: Callable, *args, master_args=None, slave_args=None):
        """query(cursor, *args) on both nodes at once: (the master's answer, the slave's).
        `master_args`/`slave_args` replace `args` for one side."""
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            on_master = pool.submit(query, self.mcur,
                                    *(args if master_args is None else master_args))
            on_slave = pool.submit(query, self.scur, *(args if slave_args is None else slave_args))
            return on_master.result(), on_slave.result()

    def commit_slave(self) -> None:
        if self.before_commit is not None:
            self.before_commit(self.scur)  # may wait for the master: before the guard
        with self.commit_guard():
            session.commit(self.slave)

    def rollback_slave(self) -> None:
        session.rollback(self.slave)
        if self.after_rollback is not None:
            self.after_rollback(self.scur)

    def end_read(self) -> None:
        """The snapshot was only read: losing the master's session now costs nothing."""
        try:
            session.rollback(self.master)
        except session.DatabaseError as e:
            logger.warning('ending the read on the master: %s', e)

    @classmethod
    def joined(cls, master, slave, slave_ip: str):
        """Two connections opened elsewhere (the slave's hand-off), held the same way."""
        nodes = cls.__new__(cls)
        nodes.slave_ip, nodes.master, nodes.slave = slave_ip, master, slave
        nodes.mcur, nodes.scur = session.cursor(master), session.cursor(slave)
        return nodes
