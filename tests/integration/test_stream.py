"""wazo-ha-stream: continuous replication from the master to the slave (issue 16), on two
real PostgreSQL 15 clusters in network namespaces."""

import pytest

from datagen import installation_sql
from stream_helpers import (assert_equal_copies, create_user, our_slots, setup_streaming,
                            stream_ok, subscription, users_named, wait_until)


@pytest.fixture
def streaming(pair):
    master, slave = pair
    master.psql(installation_sql(users=30, history=40))
    setup_streaming(master, slave)
    return master, slave


def test_first_hand_off_copies_then_streams(streaming):
    """The first run copies the master's tables from the slot's snapshot and subscribes on that
    slot: the slave equals the master, and a user created on the master appears within
    seconds without another run."""
    master, slave = streaming
    assert_equal_copies(master, slave)
    assert wait_until(lambda: subscription(slave) == (True, True))
    create_user(master, 'Streamed')
    assert wait_until(lambda: users_named(slave, 'Streamed'), 10)
    out = stream_ok(slave)
    assert 'streaming from the master' in out and 'lag' in out, out
    assert len(our_slots(master)) == 1
