"""On the master, fail2ban never bans the slave (its SIP OPTIONS probes): the converge
(wazo-ha-config converge, every minute, and at the end of wazo-ha-config set) writes a jail.d
drop-in with the slave in ignoreip and removes it when the node stops being a master, whoever
wrote ha.conf (wazo-sysconfd on PUT /ha writes it without wazo-ha-config set). fail2ban itself is not installed on the test machine (its daemon would start
beside the other tests): its reload is not exercised here."""

import configparser
import json
import os

SLAVE = '198.18.0.2'


def jail(local):
    return os.path.join(local.root, 'fail2ban', 'jail.d', 'wazo-ha.conf')


def test_the_drop_in_is_written_on_master_and_removed_on_disable(local):
    os.makedirs(os.path.dirname(jail(local)))
    result = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', SLAVE)
    assert result.returncode == 0, result.stderr
    assert f'changed: {jail(local)}: fail2ban never bans the slave {SLAVE}' in result.stdout
    parsed = configparser.ConfigParser()
    parsed.read(jail(local))
    assert parsed['DEFAULT']['ignoreip'].split() == ['127.0.0.1/8', '::1', SLAVE]
    assert os.stat(jail(local)).st_mode & 0o777 == 0o644

    again = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', SLAVE)
    assert 'fail2ban' not in again.stdout, 'nothing to change'

    other = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address',
                      '198.18.0.3')
    assert other.returncode == 0, other.stderr
    parsed.read(jail(local))
    assert parsed['DEFAULT']['ignoreip'].split()[-1] == '198.18.0.3'

    disabled = local.run('wazo-ha-config', 'set', '--node-type', 'disabled')
    assert disabled.returncode == 0, disabled.stderr
    assert f'changed: {jail(local)}: removed' in disabled.stdout
    assert not os.path.exists(jail(local))


def test_a_slave_has_no_drop_in(local):
    os.makedirs(os.path.dirname(jail(local)))
    local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', SLAVE)
    assert os.path.exists(jail(local))
    result = local.run('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address', SLAVE)
    assert not os.path.exists(jail(local)), result.stdout + result.stderr


def test_without_fail2ban_nothing_is_written(local):
    result = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', SLAVE)
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(os.path.dirname(jail(local)))


def write_ha_conf(local, node_type, remote_address):
    """ha.conf as wazo-sysconfd's PUT /ha handler writes it (wazo-platform/wazo-sysconfd,
    wazo_sysconfd/plugins/ha_config/ha.py): no wazo-ha-config involved."""
    os.makedirs(os.path.dirname(local.ha_conf), exist_ok=True)
    with open(local.ha_conf, 'w') as f:
        json.dump({'node_type': node_type, 'remote_address': remote_address}, f)


def test_the_per_minute_converge_follows_ha_conf_written_by_put_ha(local):
    os.makedirs(os.path.dirname(jail(local)))
    write_ha_conf(local, 'master', SLAVE)
    result = local.run('wazo-ha-config', 'converge')
    assert result.returncode == 0, result.stderr
    assert f'changed: {jail(local)}: fail2ban never bans the slave {SLAVE}' in result.stdout
    parsed = configparser.ConfigParser()
    parsed.read(jail(local))
    assert parsed['DEFAULT']['ignoreip'].split() == ['127.0.0.1/8', '::1', SLAVE]

    again = local.run('wazo-ha-config', 'converge')
    assert (again.returncode, again.stdout) == (0, ''), again.stderr

    write_ha_conf(local, 'slave', '198.18.0.1')
    demoted = local.run('wazo-ha-config', 'converge')
    assert demoted.returncode == 0, demoted.stderr
    assert f'changed: {jail(local)}: removed' in demoted.stdout
    assert not os.path.exists(jail(local))
