"""Continuous replication ([database] mode = continuous): PostgreSQL logical replication of the
copied tables from the master to the slave.

The master publishes the copied tables (publication PUBLICATION, kept in step by
wazo-ha-config and the hourly replication run); the slave subscribes (subscription
SUBSCRIPTION) on a slot of its own on the master, named SLOT_PREFIX + the time of the hand-off
that made it."""

PUBLICATION = 'wazo_ha'
SUBSCRIPTION = 'wazo_ha'
# a hand-off's new subscription, disabled until the copy's commit makes it SUBSCRIPTION
PENDING = 'wazo_ha_pending'
SLOT_PREFIX = 'wazo_ha_slot_'
