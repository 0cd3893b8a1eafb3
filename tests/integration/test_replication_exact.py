"""Replication stays exact where row xmins cannot tell: a column added with a volatile
default, a master restored from a backup, rows of excluded tables left without their parent,
and the daily verification that compares every copied table by content."""

import time

import pytest

from datagen import installation_sql
from replication_helpers import configure, replicate, table_rows, tables_copied


@pytest.fixture
def ha(pair):
    master, slave = pair
    master.psql(installation_sql(users=200, history=200))
    configure(master, slave)
    assert replicate(master).returncode == 0
    return master, slave


def test_a_column_added_with_a_volatile_default_is_compared_by_content(ha):
    """A Wazo upgrade adds a column with DEFAULT now() on both nodes: PostgreSQL evaluates it
    once per node without rewriting a row, so the nodes differ while no xmin moved."""
    master, slave = ha
    for node in (master, slave):
        node.psql('ALTER TABLE userfeatures ADD COLUMN created_at timestamptz DEFAULT now()')
        time.sleep(0.01)
    assert table_rows(master, 'userfeatures') != table_rows(slave, 'userfeatures')
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert tables_copied(master) == ['userfeatures']
    assert table_rows(master, 'userfeatures') == table_rows(slave, 'userfeatures')
    result = replicate(master)
    assert 'already up to date' in result.stdout, result.stdout
