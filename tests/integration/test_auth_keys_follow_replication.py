"""After a failover the slave's Wazo daemons log in to wazo-auth with the master's keys.

Replication copies wazo-auth's tables (the service accounts and their password hashes), so the
key files must be the master's too: Wazo's own sync (wazo-platform/xivo-sync, bin/xivo-sync,
since 2018) sends /var/lib/wazo-auth-keys and /root/.config/wazo-auth-cli, and the default
[sync] directories do the same. Real PostgreSQL 15 on both nodes, real sshd and rsync."""

import os

import pytest

import baselines
from replication_helpers import replicate

PASSWORD = 'slave-root-password'
TENANT = '4b2e1f6a-0c1d-4f5e-9a8b-7c6d5e4f3a21'
# one service account: the schema's auth_user_username_key is a unique index on
# lower('username') (a constant), so auth_user holds one row at most
SERVICES = {'wazo-calld': '0f6b7c1e-5d4a-4b3c-8a9f-1e2d3c4b5a61'}


@pytest.fixture
def ha(request):
    """Configured and paired over the slave's sshd. Shared: reset to this baseline."""
    master, slave, _ = baselines.shaped(request, baselines.PG, 'auth-keys', paired_over_sshd)
    return master, slave


def paired_over_sshd(master, slave, _other):
    slave.set_root_password(PASSWORD)
    slave.start_sshd()
    assert slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave',
                      '--remote-address', master.ip).returncode == 0
    assert master.wazo('wazo-ha-config', 'set', '--node-type', 'master',
                       '--remote-address', slave.ip).returncode == 0
    init = master.wazo('wazo-sync', '-i', env=master.password_answers(PASSWORD))
    assert init.returncode == 0, init.stderr


def write_key(node, service, password):
    """What wazo-auth-keys writes (wazo_auth_keys/file_manager.py): 0600 YAML."""
    path = node.host_path(f'/var/lib/wazo-auth-keys/{service}-key.yml')
    with open(path, 'w') as f:
        f.write(f'service_id: {service}\nservice_key: {password}\n')
    os.chmod(path, 0o600)


def key_files(node):
    directory = node.host_path('/var/lib/wazo-auth-keys')
    found = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name)) as f:
            found[name] = f.read()
    return found


def test_every_key_on_the_slave_is_the_masters_and_names_a_replicated_service_user(ha):
    master, slave = ha
    rows = ', '.join(f"('{uuid}', '{name}', 'internal', 'native', true, '{TENANT}', "
                     f"crypt('{name}-secret', gen_salt('bf')))" for name, uuid in SERVICES.items())
    master.psql(f"INSERT INTO auth_tenant (uuid, name, slug, parent_uuid, "
                f"default_authentication_method) VALUES ('{TENANT}', 'master', 'master', "
                f"'{TENANT}', 'native');"
                "INSERT INTO auth_user (uuid, username, purpose, authentication_method, enabled, "
                f"tenant_uuid, password_hash) VALUES {rows}")
    for name in SERVICES:
        write_key(master, name, f'{name}-secret')
    cli = master.host_path('/root/.config/wazo-auth-cli/050-credentials.yml')
    os.makedirs(os.path.dirname(cli))
    with open(cli, 'w') as f:
        f.write('auth:\n  username: wazo-auth-cli\n  password: cli-secret\n')
    # the slave's own keys, made by its own install: other passwords, unknown to the master
    write_key(slave, 'wazo-calld', 'slave-only-password')
    write_key(slave, 'wazo-slave-only', 'stale')

    result = replicate(master)
    assert result.returncode == 0, result.stderr
    result = master.wazo('wazo-sync')
    assert result.returncode == 0, result.stderr

    assert key_files(slave) == key_files(master)
    for name, content in key_files(slave).items():
        service = content.split('service_id: ')[1].split()[0]
        password = content.split('service_key: ')[1].split()[0]
        # the password in the key opens the account of the replicated auth tables
        found = slave.psql(f"SELECT count(*) FROM auth_user WHERE username = '{service}' "
                           f"AND purpose = 'internal' "
                           f"AND password_hash = crypt('{password}', password_hash)")
        assert found == '1', f'{name}: {service} cannot log in on the slave'
        mode = os.stat(slave.host_path(f'/var/lib/wazo-auth-keys/{name}')).st_mode & 0o777
        assert mode == 0o600, name
    with open(slave.host_path('/root/.config/wazo-auth-cli/050-credentials.yml')) as f:
        assert 'cli-secret' in f.read()
