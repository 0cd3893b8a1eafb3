"""Someone takes the slave's address while the slave is down and answers with a PostgreSQL of
their own that lets anyone in (`trust`) and holds the Wazo schema: the master's hourly
replication must send it nothing (channel binding: libpq goes on only with a server that
proves it knows the role's password)."""

import os

from replication_helpers import configure, replicate
from datagen import installation_sql
from stream_helpers import create_user, users_named

ROLE = 'wazo_ha_replication'
BAIT = 'ImpostorBait'


def become_impostor(slave):
    """The slave's address, a cluster with the Wazo schema and the replication role, `trust`
    for everyone first in pg_hba.conf, every connection and statement logged with its user."""
    slave.stop_postgres()
    hba = os.path.join(slave.pgdata, 'pg_hba.conf')
    with open(hba) as f:
        text = f.read()
    with open(hba, 'w') as f:
        f.write('host all all 0.0.0.0/0 trust\n' + text)
    with open(os.path.join(slave.pgdata, 'conf.d', 'zz-impostor.conf'), 'w') as f:
        f.write("log_connections = on\nlog_disconnections = on\nlog_statement = 'all'\n"
                "log_line_prefix = '%m [%p] %u@%d '\n")
    slave.start_postgres()


def test_a_trust_cluster_on_the_slaves_address_receives_no_row(pair):
    master, slave = pair
    master.psql(installation_sql(3))
    configure(master, slave)
    assert replicate(master).returncode == 0
    become_impostor(slave)
    create_user(master, BAIT)
    log_start = os.path.getsize(slave.pglog)

    result = replicate(master)

    assert result.returncode == 1, result.stdout + result.stderr
    assert 'channel binding' in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert any('Slave replication failed' in m for m in master.mails())
    # the impostor let the role in, and got neither a statement nor a row from it
    with open(slave.pglog, errors='replace') as f:
        f.seek(log_start)
        log = f.read().splitlines()
    assert any(f'connection authorized: user={ROLE}' in line for line in log), log[-20:]
    assert not [line for line in log if f'{ROLE}@asterisk LOG:  statement' in line]
    assert users_named(master, BAIT) and not users_named(slave, BAIT)
