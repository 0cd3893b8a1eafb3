"""Continuous replication ([database] mode = continuous): PostgreSQL logical replication of the
copied tables from the master to the slave.

The master publishes the copied tables (publication PUBLICATION, kept in step by
wazo-ha-config and the hourly replication run); the slave subscribes (subscription
SUBSCRIPTION) on a slot of its own on the master, named SLOT_PREFIX + the time of the hand-off
that made it."""

from ..decisions.stream import PUBLICATION, SLOT_PREFIX, SUBSCRIPTION

__all__ = ['PUBLICATION', 'SUBSCRIPTION', 'SLOT_PREFIX']
