"""On the master, fail2ban never bans the slave (its SIP OPTIONS probes): the converge
(wazo-ha-config converge, every minute, and at the end of wazo-ha-config set) writes a jail.d
drop-in with the slave in ignoreip and removes it when the node stops being a master, whoever
wrote ha.conf (wazo-sysconfd on PUT /ha writes it without wazo-ha-config set). The last test
runs Debian's fail2ban in the master's namespace, with a configuration directory, socket and
pid file of its own, and a jail like Wazo's: the reload is real."""

import configparser
import contextlib
import json
import os
import shutil
import signal
import time

import pytest

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


# Wazo's own jail for Asterisk (wazo-platform/xivo-config, etc/fail2ban/jail.d/wazo.conf and
# filter.d/asterisk-wazo.conf): the jail is named asterisk-wazo and reads Asterisk's fail2ban
# log; it sets no ignoreip of its own, so the DEFAULT one of our drop-in applies to it. Written
# here in our words, with the dummy action (a file) instead of iptables.
WAZO_JAIL = """[asterisk-wazo]
enabled  = true
filter   = asterisk-wazo
backend  = polling
action   = dummy[target={target}]
logpath  = {log}
maxretry = 15
bantime  = 3600
"""
WAZO_FILTER = """[Definition]
failregex = res_pjsip/pjsip_distributor\\.c: Request '.*' from '.*' failed for '<HOST>:\\d+' .* - No matching endpoint found
ignoreregex =
"""


@pytest.fixture
def fail2ban(pair):
    """Debian's fail2ban-server running in the master's namespace on a private configuration
    directory (the master's [paths] fail2ban_jail lands in its jail.d); stopped after."""
    master, _ = pair
    if not shutil.which('fail2ban-server'):
        pytest.fail('fail2ban is not installed: run make deps')
    top = os.path.join(master.root, 'fail2ban')
    shutil.rmtree(top, ignore_errors=True)
    shutil.copytree('/etc/fail2ban', top, ignore=shutil.ignore_patterns('jail.d'))
    os.makedirs(os.path.join(top, 'jail.d'))
    run_dir = os.path.join(master.root, 'f2b')
    os.makedirs(run_dir, exist_ok=True)
    sock, pid = os.path.join(run_dir, 'sock'), os.path.join(run_dir, 'pid')
    with open(os.path.join(top, 'fail2ban.local'), 'w') as f:
        f.write(f'[Definition]\nlogtarget = {run_dir}/fail2ban.log\nsocket = {sock}\n'
                f'pidfile = {pid}\ndbfile = :memory:\n')
    log = os.path.join(run_dir, 'asterisk-fail2ban.log')
    open(log, 'w').close()
    with open(os.path.join(top, 'jail.d', 'wazo.conf'), 'w') as f:
        f.write(WAZO_JAIL.format(target=os.path.join(run_dir, 'dummy'), log=log))
    with open(os.path.join(top, 'filter.d', 'asterisk-wazo.conf'), 'w') as f:
        f.write(WAZO_FILTER)
    client = ['fail2ban-client', '-c', top, '-s', sock]
    started = master.run('fail2ban-server', '-b', '-x', '-c', top, '-s', sock, '-p', pid)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        for _ in range(100):
            if master.run(*client, 'ping').returncode == 0:
                break
            time.sleep(0.1)
        master.write_settings(paths={'fail2ban_client': ' '.join(client)})
        yield master, client
    finally:
        master.run(*client, 'stop', timeout=30)
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            with open(pid) as f:
                os.kill(int(f.read().strip()), signal.SIGKILL)
        shutil.rmtree(top, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


def ignored(master, client):
    got = master.run(*client, 'get', 'asterisk-wazo', 'ignoreip')
    assert got.returncode == 0, got.stdout + got.stderr
    return got.stdout


def test_a_running_fail2ban_reloads_the_drop_in_and_ignores_the_slave(fail2ban, pair):
    master, client = fail2ban
    _, slave = pair
    assert slave.ip not in ignored(master, client)
    result = master.wazo('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address',
                         slave.ip)
    assert result.returncode == 0, result.stderr
    assert 'fail2ban reloaded' in result.stdout, result.stdout
    assert slave.ip in ignored(master, client), 'the Asterisk jail ignores the slave'

    disabled = master.wazo('wazo-ha-config', 'set', '--node-type', 'disabled')
    assert disabled.returncode == 0, disabled.stderr
    assert 'removed' in disabled.stdout and 'fail2ban reloaded' in disabled.stdout
    assert slave.ip not in ignored(master, client), 'no longer ignored once disabled'
