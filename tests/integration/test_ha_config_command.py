"""wazo-ha-config as an administrator runs it: round trips, refusals, exit codes."""

import json
import os
import subprocess

import pytest

from testbed import wait_until

PEER = '198.18.0.2'


def test_master_configuration_round_trips(local):
    result = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', PEER)
    assert result.returncode == 0, result.stderr
    assert f'xivo-master-slave-db-replication {PEER}' in result.stdout
    shown = local.run('wazo-ha-config', 'show', '--json')
    assert json.loads(shown.stdout) == {'node_type': 'master', 'remote_address': PEER}
    assert os.listdir(local.sentinel_dir) == ['is-primary']
    assert oct(os.stat(local.ha_conf).st_mode & 0o777) == '0o644'


def test_json_body_from_stdin_and_from_a_file(local, tmp_path):
    body = {'node_type': 'slave', 'remote_address': '198.18.0.1'}
    result = local.run('wazo-ha-config', 'set', '--json', '-', input=json.dumps(body))
    assert result.returncode == 0, result.stderr
    assert os.listdir(local.sentinel_dir) == ['is-secondary']
    body_file = tmp_path / 'body.json'
    body_file.write_text(json.dumps({'node_type': 'disabled'}))
    result = local.run('wazo-ha-config', 'set', '--json', str(body_file))
    assert result.returncode == 0, result.stderr
    assert os.listdir(local.sentinel_dir) == []
    with open(local.ha_conf) as f:
        assert json.load(f) == {'node_type': 'disabled', 'remote_address': ''}


def test_switching_role_never_leaves_both_sentinels(local):
    local.run('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address', PEER)
    local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', PEER)
    assert os.listdir(local.sentinel_dir) == ['is-primary']


@pytest.mark.parametrize('args, message', [
    (['--node-type', 'master', '--remote-address', 'slave.example.com'], 'not an IP address'),
    (['--node-type', 'master', '--remote-address', '198.18.0.2; rm -rf /'], 'not an IP address'),
    (['--node-type', 'master', '--remote-address', '$(reboot)'], 'not an IP address'),
    (['--node-type', 'master', '--remote-address', '127.0.0.1'], 'cannot be the address'),
    (['--node-type', 'master'], 'remote_address is required'),
    (['--node-type', 'slave', '--remote-address', ''], 'remote_address is required'),
    (['--json', '-'], 'node_type must be one of'),
    (['--node-type', 'master', '--remote-address', 'fe80::1%eth0'], 'link-local address'),
    (['--node-type', 'master', '--remote-address', 'fe80::1'], 'cannot be the address'),
    (['--node-type', 'master', '--remote-address', '169.254.3.4'], 'cannot be the address'),
    (['--node-type', 'master', '--remote-address', '255.255.255.255'], 'cannot be the address'),
    (['--node-type', 'master', '--remote-address', '224.0.0.5'], 'cannot be the address'),
    (['--node-type', 'master', '--remote-address', '0.0.0.0'], 'cannot be the address'),
    (['--node-type', 'master', '--remote-address', '::ffff:127.0.0.1'], 'cannot be the address'),
    (['--node-type', 'master', '--remote-address', '1' * 100_000], 'not an IP address'),
])
def test_bad_input_exits_2_and_changes_nothing(local, args, message):
    local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', PEER)
    before = local.snapshot()
    result = local.run('wazo-ha-config', 'set', *args,
                       input='{"node_type": "primary", "remote_address": "1.2.3.4"}')
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, 'one clear line'
    assert len(result.stderr) < 300, 'a short line, whatever the argument'
    assert local.snapshot() == before


@pytest.mark.parametrize('body', ['[' * 100_000 + ']' * 100_000,
                                  '{"node_type": ' * 50_000 + '1' + '}' * 50_000])
def test_deeply_nested_json_is_refused_in_one_short_line(local, body):
    local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', PEER)
    before = local.snapshot()
    result = local.run('wazo-ha-config', 'set', '--json', '-', input=body)
    assert result.returncode == 2 and 'not JSON' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and len(result.stderr) < 300
    assert local.snapshot() == before
    with open(local.ha_conf, 'w') as f:
        f.write(body)
    for command in ('wazo-ha-config', 'xivo-master-slave-db-replication', 'wazo-sync'):
        result = local.run(command, *(['show'] if command == 'wazo-ha-config' else []))
        assert result.returncode == 2 and 'is corrupt' in result.stderr, command
        assert len(result.stderr) < 300, command


def test_an_ipv4_mapped_address_of_this_node_is_this_node(local):
    import netifaces
    own = [a['addr'] for i in netifaces.interfaces()
           for a in netifaces.ifaddresses(i).get(netifaces.AF_INET, []) if a['addr'] != '127.0.0.1']
    if not own:
        pytest.skip('this machine has no non-loopback address')
    result = local.run('wazo-ha-config', 'set', '--node-type', 'master',
                       '--remote-address', f'::ffff:{own[0]}')
    assert result.returncode == 2 and 'address of this node' in result.stderr
    assert not os.path.exists(local.ha_conf)


def test_bad_node_type_is_refused_by_the_parser(local):
    result = local.run('wazo-ha-config', 'set', '--node-type', 'primary', '--remote-address', PEER)
    assert result.returncode == 2
    assert 'invalid choice' in result.stderr


def test_corrupt_ha_conf_is_an_error_not_disabled(local):
    os.makedirs(os.path.dirname(local.ha_conf))
    with open(local.ha_conf, 'w') as f:
        f.write('{"node_type": "master", "remote_addr')
    before = local.snapshot()
    shown = local.run('wazo-ha-config', 'show')
    assert shown.returncode == 2
    assert local.ha_conf in shown.stderr and 'corrupt' in shown.stderr
    result = local.run('wazo-ha-config', 'set', '--node-type', 'disabled')
    assert result.returncode == 2
    assert '--force' in result.stderr
    assert local.snapshot() == before
    forced = local.run('wazo-ha-config', 'set', '--force', '--node-type', 'disabled')
    assert forced.returncode == 0, forced.stderr
    assert 'was corrupt and is replaced' in forced.stdout


def test_missing_ha_conf_is_reported_on_show(local):
    result = local.run('wazo-ha-config', 'show')
    assert result.returncode == 2
    assert 'does not exist' in result.stderr


def test_bad_setting_names_file_and_key(local):
    local.write_settings('[check]\ndown_after = soon\n')
    result = local.run('wazo-ha-config', 'show')
    assert result.returncode == 2
    assert local.config in result.stderr
    assert '[check] down_after' in result.stderr


def test_missing_settings_file(local):
    result = local.run('wazo-ha-config', 'show', env={'WAZO_HA_CONFIG': '/nonexistent.ini'})
    assert result.returncode == 2
    assert '/nonexistent.ini' in result.stderr


def test_every_change_is_logged(local):
    local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', PEER)
    with open(local.log_file) as f:
        log = f.read()
    assert f'changed: {local.ha_conf}: node_type=master remote_address={PEER}' in log


def test_ha_conf_naming_this_node_as_its_peer_is_refused_by_every_command(local):
    import netifaces
    own = [a['addr'] for i in netifaces.interfaces()
           for a in netifaces.ifaddresses(i).get(netifaces.AF_INET, []) if a['addr'] != '127.0.0.1']
    if not own:
        pytest.skip('this machine has no non-loopback address')
    os.makedirs(os.path.dirname(local.ha_conf))
    for role, command in (('master', 'xivo-master-slave-db-replication'), ('master', 'wazo-sync'),
                          ('slave', 'xivo-check-master-status')):
        with open(local.ha_conf, 'w') as f:
            json.dump({'node_type': role, 'remote_address': own[0]}, f)
        os.makedirs(local.sentinel_dir, exist_ok=True)
        open(os.path.join(local.sentinel_dir, 'is-secondary' if role == 'slave' else 'is-primary'), 'w').close()
        result = local.run(command)
        assert result.returncode == 2, (command, result.stderr)
        assert 'address of this node' in result.stderr
        for name in os.listdir(local.sentinel_dir):
            os.unlink(os.path.join(local.sentinel_dir, name))


def test_set_waits_for_a_running_master_check(local):
    """A change of role and a check converging never interleave: set takes the check's lock."""
    lock = os.path.join(local.root, 'lock', 'xivo-check-master-status.lock')
    released = os.path.join(local.root, 'released')
    os.makedirs(os.path.dirname(lock), mode=0o700, exist_ok=True)
    held = os.path.join(local.root, 'held')
    holder = subprocess.Popen(['flock', lock, 'sh', '-c',
                               f'touch {held}; sleep 2; date +%s.%N > {released}'])
    try:
        assert wait_until(lambda: os.path.exists(held) or holder.poll() is not None)
        assert holder.poll() is None, 'the check lock was never held'
        result = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', PEER)
        assert result.returncode == 0, result.stderr
    finally:
        holder.wait(timeout=30)
    with open(released) as f:
        assert os.stat(local.ha_conf).st_mtime >= float(f.read()), 'ha.conf written before the check ended'
