"""Helpers for tests of the continuous replication: a pair in continuous mode, streaming."""

import baselines
from check_helpers import FAST
from datagen import installation_sql
from replication_helpers import configure, copied_table_names, table_digests
from testbed import wait_until

CONTINUOUS = {'database': {'mode': 'continuous'}}


def continuous_settings(node, **overrides):
    """The node's settings in continuous mode with the fast check (plus overrides)."""
    sections = {**FAST, **CONTINUOUS}
    for section, values in overrides.items():
        sections[section] = {**sections.get(section, {}), **values}
    node.write_settings(**sections)


def configure_continuous(master, slave):
    """Both nodes in continuous mode, roles set, paired (wazo-sync -i)."""
    continuous_settings(master)
    continuous_settings(slave)
    configure(master, slave)


def stream(slave, *args, timeout=300):
    return slave.wazo('wazo-ha-stream', *args, timeout=timeout)


def stream_ok(slave):
    r = stream(slave)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def subscription(slave):
    """(enabled, worker running) of the slave's subscription, None when there is none."""
    out = slave.psql("SELECT s.subenabled, w.pid IS NOT NULL FROM pg_subscription s "
                     "LEFT JOIN pg_stat_subscription w ON w.subid = s.oid AND w.relid IS NULL "
                     "WHERE s.subname = 'wazo_ha'")
    if not out:
        return None
    enabled, worker = out.split('|')
    return enabled == 't', worker == 't'


def our_slots(master):
    return master.psql("SELECT string_agg(slot_name || ':' || active, ' ' ORDER BY slot_name) "
                       "FROM pg_replication_slots WHERE slot_name LIKE 'wazo_ha_slot_%'").split()


def copied_digests(master, slave):
    tables = copied_table_names(master)
    return table_digests(master, tables), table_digests(slave, tables)


def assert_equal_copies(master, slave):
    on_master, on_slave = copied_digests(master, slave)
    differing = sorted(t for t in on_master if on_master[t] != on_slave.get(t))
    assert not differing, differing


def wait_equal(master, slave, timeout=20.0):
    """The slave's copied tables equal the master's within timeout seconds."""
    def same():
        a, b = copied_digests(master, slave)
        return a == b
    return wait_until(same, timeout, 0.3)


def create_user(node, firstname):
    """A user as wazo-confd makes one (its private function key template first); its id."""
    from datagen import TENANT
    return int(node.psql(
        "WITH t AS (INSERT INTO func_key_template (tenant_uuid, name, private) "
        f"VALUES ('{TENANT}', NULL, true) RETURNING id) "
        "INSERT INTO userfeatures (uuid, firstname, lastname, description, tenant_uuid, "
        f"func_key_private_template_id) SELECT uuid_generate_v4(), '{firstname}', 'Test', '', "
        f"'{TENANT}', id FROM t RETURNING id").split()[0])


def users_named(node, firstname):
    return node.psql(f"SELECT string_agg(id::text, ' ') FROM userfeatures WHERE firstname = '{firstname}'").split()


def setup_streaming(master, slave):
    """Continuous mode on both nodes, paired, and the slave's first hand-off done."""
    configure_continuous(master, slave)
    out = stream_ok(slave)
    assert 'hand-off done (first hand-off)' in out, out
    return out


def stream_password(slave):
    """The stream role's password, from the slave's password file (put there by wazo-sync -i)."""
    with open(slave.passfile) as f:
        return [line.rsplit(':', 1)[1].strip() for line in f if ':wazo_ha_stream:' in line][0]


def assert_password_kept_secret(master, slave):
    """The stream password is in no log of either node and not in the subscription."""
    secret = stream_password(slave)
    for path in (slave.pglog, master.pglog, slave.log_file, master.log_file):
        with open(path, errors='replace') as f:
            assert secret not in f.read(), path
    assert 'password' not in slave.psql("SELECT coalesce(string_agg(subconninfo, ' '), '') "
                                        "FROM pg_subscription")


def first_hand_off_done(master, slave, _other):
    master.psql(installation_sql(users=30, history=40))
    setup_streaming(master, slave)


def subscription_streams(_master, slave, _other):
    """the slave's subscription is enabled and its apply worker runs"""
    return wait_until(lambda: subscription(slave) == (True, True))


def streaming_baseline(request):
    """The shared 'streaming' baseline of a module's tests: continuous mode on both nodes,
    paired, the first hand-off done, the subscription streaming (reset before each test)."""
    master, slave, _ = baselines.shaped(request, baselines.PG, 'streaming', first_hand_off_done,
                                        subscription_streams)
    return master, slave
