"""Never worse than hourly: which replication is in force for the slave, decided on the master
from what it reads (decisions.stream.in_force), and the slave's own causes (slave_cause)."""

import pytest

from wazo_ha_common.decisions.stream import (AWAITING, BROKEN, FIXES, NO_SLOT, NOT_PAIRED,
                                             NOT_STREAMING, SLOT_LOST, UNMAILED_CAUSES,
                                             UNREACHABLE, WAL_LEVEL, MasterView,
                                             first_hand_off, in_force, slave_cause, slave_slot)


def slot(active=True, wal_status='reserved'):
    return {'active': active, 'wal_status': wal_status, 'retained': 0, 'confirmed': 100}


def view(wal_level="logical", paired=True, slots=None, dropped=None, awaiting=False):
    return MasterView(wal_level=wal_level, paired=paired,
                      slots={"wazo_ha_slot_1": slot()} if slots is None else slots, dropped=dropped,
                      awaiting=awaiting)


def test_an_active_slot_means_the_stream_is_in_force():
    verdict = in_force(view())
    assert verdict.streaming and verdict.cause is None and verdict.slot == 'wazo_ha_slot_1'
    assert verdict.said == 'continuous' and verdict.fix == ''


@pytest.mark.parametrize('facts, cause, said, fix', [
    (view(wal_level='replica'), WAL_LEVEL, 'wal_level is replica on the master: the stream '
     'waits for a PostgreSQL restart', 'systemctl restart postgresql'),
    (view(paired=False), NOT_PAIRED, 'not paired for the stream', 'wazo-sync -i'),
    (view(slots={}), NO_SLOT, 'has no slot on the master', 'open TCP 5432'),
    (view(slots={'wazo_ha_slot_1': slot(wal_status='lost')}), SLOT_LOST,
     'wazo_ha_slot_1 lost WAL', 'hands off afresh'),
    (view(slots={'wazo_ha_slot_1': slot(active=False)}), NOT_STREAMING,
     "the slave's slot wazo_ha_slot_1 is inactive", 'open TCP 5432'),
])
def test_every_cause_is_named_with_its_fix(facts, cause, said, fix):
    verdict = in_force(facts)
    assert not verdict.streaming and verdict.cause == cause
    assert said in verdict.said and fix in verdict.fix


def test_wal_level_comes_first_as_nothing_streams_without_it():
    """An unpaired master with no slot and wal_level replica: the restart is what it waits for
    first (no slot can be made before it)."""
    assert in_force(view(wal_level='replica', paired=False, slots={})).cause == WAL_LEVEL
    assert in_force(view(paired=False, slots={})).cause == NOT_PAIRED


def test_the_slave_slot_is_the_active_one_else_the_newest():
    slots = {'wazo_ha_slot_1': slot(active=True), 'wazo_ha_slot_2': slot(active=False)}
    assert slave_slot(slots) == 'wazo_ha_slot_1'
    slots['wazo_ha_slot_1'] = slot(active=False)
    assert slave_slot(slots) == 'wazo_ha_slot_2'
    assert slave_slot({}) is None
    # an inactive slot left beside an active one does not stop the stream from being in force
    assert in_force(view(slots={'wazo_ha_slot_1': slot(), 'wazo_ha_slot_2': slot(False)})).streaming


@pytest.mark.parametrize('error, cause, said', [
    ('no password for the stream role wazo_ha_stream of the master 198.18.0.1 in /root/.pgpass: '
     'run wazo-sync -i on the master', NOT_PAIRED, 'not paired for the stream'),
    ('password authentication failed for user "wazo_ha_stream": the master refuses the stream '
     'role wazo_ha_stream or its password: run wazo-sync -i on the master', NOT_PAIRED,
     'not paired'),
    ('the master database asterisk at 198.18.0.1:5432 as wazo_ha_stream: connection to server at '
     '"198.18.0.1", port 5432 failed: Connection refused', UNREACHABLE,
     "the slave cannot reach the master's 5432 (Connection refused)"),
    ('connection to server at "198.18.0.1", port 5432 failed: timeout expired', UNREACHABLE,
     "cannot reach the master's 5432 (timeout expired)"),
    ('logical decoding requires wal_level >= logical', WAL_LEVEL, 'waits for a PostgreSQL restart'),
    ('the subscription is enabled but its apply worker does not run', BROKEN,
     'the stream is broken: the subscription is enabled'),
])
def test_the_slave_names_its_own_cause(error, cause, said):
    got, text = slave_cause(error)
    assert got == cause and said in text
    assert FIXES[got]


def test_a_slot_dropped_by_the_fallback_copy_keeps_its_cause_until_the_slave_hands_off():
    """The fallback copy drops the slave's slots: at the next run the missing slot is the same
    cause still (mailed once, since kept), not a new one."""
    said = "the slave's slot wazo_ha_slot_1 is inactive"
    verdict = in_force(view(slots={}, dropped=(NOT_STREAMING, said)))
    assert verdict.cause == NOT_STREAMING and verdict.said.startswith(said)
    assert 'has not handed off since' in verdict.said
    # the slave handed off again: its new slot decides
    assert in_force(view(dropped=(NOT_STREAMING, said))).streaming


@pytest.mark.parametrize('old', [NOT_PAIRED, WAL_LEVEL, NO_SLOT])
def test_a_cause_that_dropped_no_slot_is_never_kept(old):
    """Paired, no slot, and an old record naming a cause that was not the slot's (the pair not
    paired then, wal_level, no slot at all): the current cause is said (the slave has no slot),
    never the old cause's fix (which would ask for wazo-sync -i forever)."""
    verdict = in_force(view(slots={}, dropped=(old, 'the pair is not paired for the stream yet')))
    assert verdict.cause == NO_SLOT
    assert 'not paired' not in verdict.said and verdict.fix == FIXES[NO_SLOT]


def test_right_after_the_pairing_the_first_hand_off_is_awaited_not_mailed():
    """The Quick Summary at human speed: the replication run right after wazo-sync -i, before
    the slave's first cron minute. The master's record starts when it first finds the pair
    paired; within [database] first_hand_off_wait and with no slot seen since, the missing slot
    is AWAITING (not mailed: UNMAILED_CAUSES), past it NO_SLOT; a slot once seen ends the wait
    for good; not paired: no record."""
    record, awaiting = first_hand_off({}, True, False, 1000.0, 900)
    assert awaiting and record == {'paired_since': 1000.0, 'slot_seen': False}
    verdict = in_force(view(slots={}, awaiting=awaiting))
    assert verdict.cause == AWAITING and AWAITING in UNMAILED_CAUSES
    assert 'first hand-off' in verdict.said and 'wazo-sync -i' not in verdict.fix
    assert first_hand_off(record, True, False, 1899.0, 900)[1]
    later, awaiting = first_hand_off(record, True, False, 1900.0, 900)
    assert not awaiting and in_force(view(slots={}, awaiting=awaiting)).cause == NO_SLOT
    seen, _ = first_hand_off(record, True, True, 1001.0, 900)
    assert seen['slot_seen'] and not first_hand_off(seen, True, False, 1002.0, 900)[1]
    assert first_hand_off(seen, False, False, 1003.0, 900) == ({}, False)
    assert in_force(view(awaiting=True)).streaming   # a slot decides
