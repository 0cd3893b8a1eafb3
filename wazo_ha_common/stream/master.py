"""Continuous mode on the master, run by each hourly xivo-master-slave-db-replication: the
publication kept in step, the slave's sequences moved forward, the slave's slot checked."""

from __future__ import annotations

import logging

from ..adapters.db import catalog, logical, session
from ..replication.compare import copied_tables, sequences_forward
from ..replication.job import NAME, Result, guard_slave
from ..replication.nodes import Nodes
from ..settings import Settings
from . import SLOT_PREFIX, publication

logger = logging.getLogger('wazo-ha')


def reconcile(settings: Settings, slave_ip: str, result: Result) -> None:
    """Continuous mode: the slave's stream carries the rows (wazo-ha-stream on the slave hands
    off when needed); this run keeps the publication in step with the copied tables, moves the
    slave's sequences forward to the master's (logical replication does not carry them; never
    back: the slave may be serving), and checks that the slave has its slot here."""
    result.publication = publication.keep_in_step(settings)
    for line in result.publication:
        logger.info('publication: %s', line)
    with Nodes(settings, slave_ip, NAME) as nodes:
        guard_slave(settings, nodes, slave_ip, catalog.horizon(nodes.mcur)['system'],
                    result.replace_slave)   # recorded with the sequences' commit below
        tables, result.tables_excluded = copied_tables(nodes, settings.database.excluded_tables)
        result.tables_unchanged = len(tables)
        forward = sequences_forward(nodes, {t.name for t in tables})
        for seq, state in forward.items():
            catalog.restart_sequence(nodes.scur, seq, state)
        nodes.commit_slave()
        result.sequences_set = len(forward)
        slots = logical.slots(nodes.mcur, SLOT_PREFIX)
        nodes.end_read()
    if not slots and result.replace_slave:  # a rebuilt master has none: the slave hands off
        result.stream = {}
        return
    if not slots:
        raise session.DatabaseError(
            'continuous replication: the slave has no replication slot on this master: is '
            'wazo-ha-stream running on the slave, with [database] mode = continuous there? '
            '(the slave streams nothing until it hands off)')
    name = max(slots, key=lambda n: (slots[n]['active'], n))
    result.stream = {'slot': name, **slots[name]}
    if slots[name]['wal_status'] == 'lost':
        raise session.DatabaseError(
            f'continuous replication: the slot {name} of the slave lost WAL '
            '([database] slot_wal_keep_size): the slave copies afresh at its '
            'next wazo-ha-stream run')
