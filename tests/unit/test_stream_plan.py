"""The decisions of wazo-ha-stream (decisions/stream.py), from facts alone."""

import pytest

from wazo_ha_common.decisions import stream as plan
from wazo_ha_common.decisions.stream import (DISABLE, DROP, ENABLE, HAND_OFF, NOTHING, Facts,
                                             decide, re_enabled)

ON = {'enabled': True, 'slot': 'wazo_ha_slot_1', 'worker': 42, 'errors': 0}
OFF = {**ON, 'enabled': False, 'worker': None, 'errors': 3, 'applied': 7}
SLOT = {'active': True, 'wal_status': 'reserved', 'retained': 1000, 'confirmed': 5}


def facts(**kw):
    base = dict(continuous=True, serving=False, subscription=ON, slot=SLOT)
    return Facts(**{**base, **kw})


@pytest.mark.parametrize('given, kind, planned, said', [
    (facts(), NOTHING, True, 'streaming'),
    (facts(continuous=False, subscription=None), NOTHING, True, 'hourly'),
    (facts(continuous=False), DROP, True, 'left behind'),
    (facts(serving=True), DISABLE, True, 'serves'),
    (facts(serving=True, subscription=OFF), NOTHING, True, 'serves'),
    (facts(serving=True, subscription=None), NOTHING, True, 'serves'),
    (facts(schema_differences=('column x',)), DISABLE, False, 'column x'),
    (facts(schema_differences=('column x',), subscription=OFF), NOTHING, False, 'column x'),
    (facts(subscription=None, slot=None), HAND_OFF, True, 'first hand-off'),
    (facts(subscription=None, slot=None, handed_off_before=True), HAND_OFF, False, 'gone from the slave'),
    (facts(request='resumed after a pause'), HAND_OFF, True, 'resumed'),
    (facts(subscription=OFF, disabled_by=plan.BY_FAILOVER), HAND_OFF, True, 'failback'),
    (facts(subscription=OFF, disabled_by=plan.BY_PAUSE), HAND_OFF, True, 'pause'),
    (facts(subscription=OFF, disabled_by=plan.BY_SCHEMA), HAND_OFF, True, 'equal again'),
    (facts(subscription=OFF, disabled_by=plan.BY_FAILOVER, slot=None), HAND_OFF, True, 'failback'),
    (facts(subscription=OFF), ENABLE, True, 'its slot wazo_ha_slot_1 is kept'),
    (facts(subscription=OFF, re_enabled=re_enabled('wazo_ha_slot_1', 7)), HAND_OFF, False,
     'apply error or conflict (3 errors counted), again without progress'),
    (facts(subscription=OFF, re_enabled=re_enabled('wazo_ha_slot_1', 6)), ENABLE, True, 'kept'),
    (facts(subscription=OFF, slot={**SLOT, 'wal_status': 'lost'}), HAND_OFF, False, 'lost'),
    (facts(slot=None), HAND_OFF, False, 'gone from the master'),
    (facts(subscription=OFF, slot=None), HAND_OFF, False, 'gone from the master'),
    (facts(slot={**SLOT, 'wal_status': 'lost'}), HAND_OFF, False, 'slot_wal_keep_size'),
])
def test_decide(given, kind, planned, said):
    action = decide(given)
    assert (action.kind, action.planned) == (kind, planned)
    assert said in action.reason


def test_serving_wins_over_everything_else():
    """While the slave serves nothing is copied over it, whatever else is wrong."""
    action = decide(facts(serving=True, request='asked', schema_differences=('x',), slot=None))
    assert action.kind == DISABLE


def test_stale_slots_are_the_inactive_ones_not_in_use():
    slots = {'a': {'active': False}, 'b': {'active': True}, 'c': {'active': False}}
    assert plan.stale_slots(slots, 'c') == ['a']
    assert plan.stale_slots(slots, None) == ['a', 'c']


def test_slot_names_are_valid_and_ordered_in_time():
    first, later = plan.slot_name(1_800_000_000.0), plan.slot_name(1_800_000_000.5)
    assert first.startswith('wazo_ha_slot_') and first < later
    assert all(c.islower() or c.isdigit() or c == '_' for c in first) and len(first) <= 63


def test_a_change_of_the_published_tables_hands_off_after_the_failures_are_said():
    assert decide(facts(tables_changed=True)).reason == 'the published tables changed'
    assert decide(facts(tables_changed=True)).planned
    assert 'gone from the master' in decide(facts(tables_changed=True, slot=None)).reason


def test_a_subscription_disabled_on_an_error_is_enabled_again_once_per_position():
    """disable_on_error stops the subscription on any lost connection too (the master's
    PostgreSQL restarted, its walsender ended): with its slot kept and not lost it is enabled
    again, not copied afresh; disabled again with no transaction applied since (no progress: a
    real apply error), the next run hands off; after progress, enabled again."""
    first = decide(facts(subscription=OFF))
    assert first.kind == ENABLE and first.planned
    mark = re_enabled(OFF['slot'], OFF['applied'])
    assert decide(facts(subscription=OFF, re_enabled=mark)).kind == HAND_OFF
    moved = {**OFF, 'applied': OFF['applied'] + 1}
    assert decide(facts(subscription=moved, re_enabled=mark)).kind == ENABLE
    assert decide(facts(subscription=OFF, slot=None, re_enabled=None)).kind == HAND_OFF
