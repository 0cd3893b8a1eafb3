"""On the master, fail2ban never bans the slave (its SIP OPTIONS probes): the converge
(wazo-ha-config converge, every minute, and at the end of wazo-ha-config set) writes a jail.d
drop-in with the slave in ignoreip and removes it when the node stops being a master, whoever
wrote ha.conf (wazo-sysconfd on PUT /ha writes it without wazo-ha-config set). Two tests
run Debian's fail2ban with a configuration directory, socket and pid file of their own (in the
master's namespace, with a jail like Wazo's; beside the local node, with Debian's asterisk
jail): the reload is real, and what fail2ban makes of the drop-in is read by fail2ban itself."""

import ast
import configparser
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from wazo_ha_common import diagnosis, role
from wazo_ha_common.access.fail2ban import HEADER
from wazo_ha_common.settings import load

SLAVE = '198.18.0.2'


def jail(local):
    return os.path.join(local.root, 'fail2ban', 'jail.d', 'wazo-ha.conf')


def test_the_drop_in_is_written_on_master_and_removed_on_disable(local):
    os.makedirs(os.path.dirname(jail(local)))
    result = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', SLAVE)
    assert result.returncode == 0, result.stderr
    assert f'changed: {jail(local)}: fail2ban never bans the slave {SLAVE}' in result.stdout
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read(jail(local))
    for name in ('asterisk', 'asterisk-wazo'):   # nothing else sets ignoreip here
        assert parsed[name]['ignoreip'].split() == ['127.0.0.1/8', '::1', SLAVE]
    assert os.stat(jail(local)).st_mode & 0o777 == 0o644

    again = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', SLAVE)
    assert 'fail2ban' not in again.stdout, 'nothing to change'

    other = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address',
                      '198.18.0.3')
    assert other.returncode == 0, other.stderr
    parsed.read(jail(local))
    assert parsed['asterisk']['ignoreip'].split()[-1] == '198.18.0.3'

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
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read(jail(local))
    assert parsed['asterisk']['ignoreip'].split() == ['127.0.0.1/8', '::1', SLAVE]

    again = local.run('wazo-ha-config', 'converge')
    assert (again.returncode, again.stdout) == (0, ''), again.stderr

    write_ha_conf(local, 'slave', '198.18.0.1')
    demoted = local.run('wazo-ha-config', 'converge')
    assert demoted.returncode == 0, demoted.stderr
    assert f'changed: {jail(local)}: removed' in demoted.stdout
    assert not os.path.exists(jail(local))


def fail2ban_reads(conf):
    """What fail2ban 1.0.2 itself makes of its files (its client's dump, no server): the
    enabled jails and the ignoreip of each."""
    dump = subprocess.run(['fail2ban-client', '-c', conf, '-d'], capture_output=True, text=True,
                          timeout=60)
    assert dump.returncode == 0, dump.stdout + dump.stderr
    out = {}
    for line in dump.stdout.splitlines():
        item = ast.literal_eval(line)
        if item[0] == 'add':
            out.setdefault(item[1], [])
        elif item[0] == 'set' and item[2] == 'addignoreip':
            out[item[1]] = item[3:]
    return out


def test_the_slave_joins_the_ignoreip_the_administrator_set_as_fail2ban_reads_it(local):
    """Review of issue 25: a [DEFAULT] ignoreip in jail.local (read after jail.d/*.conf)
    replaced the drop-in's, and the drop-in's replaced the administrator's: the drop-in is a
    .local adding the slave in each Asterisk jail to what was set before it. Checked with
    Debian's fail2ban (1.0.2): its client's dump (-d) and a server of its own (a copy of
    /etc/fail2ban with its socket, pid file, log and a dummy action in the copy, its
    database in memory); wazo-ha-config check reads both back."""
    conf = os.path.join(local.root, 'etc-fail2ban')
    shutil.copytree('/etc/fail2ban', conf)
    for name in os.listdir(os.path.join(conf, 'jail.d')):  # Debian's sshd jail: not here
        os.unlink(os.path.join(conf, 'jail.d', name))
    with open(os.path.join(conf, 'fail2ban.local'), 'w') as f:
        f.write(f'[Definition]\nlogtarget = {conf}/fail2ban.log\nsocket = {conf}/fail2ban.sock\n'
                f'pidfile = {conf}/fail2ban.pid\ndbfile = :memory:\n')
    log = os.path.join(local.root, 'asterisk-messages')
    open(log, 'w').close()
    asterisk = (f'[asterisk]\nenabled = true\nbackend = polling\nlogpath = {log}\n'
                f'action = dummy[target={conf}/dummy]\n')
    with open(os.path.join(conf, 'jail.local'), 'w') as f:
        f.write('[DEFAULT]\nignoreip = 127.0.0.1/8 10.9.0.0/16\n' + asterisk)
    dropin = os.path.join(conf, 'jail.d', 'wazo-ha.local')
    local.add_conf_d('50-fail2ban.ini', f'[paths]\nfail2ban_jail = {dropin}\n'
                                       f'fail2ban_client = fail2ban-client -c {conf}\n')
    former = os.path.join(conf, 'jail.d', 'wazo-ha.conf')   # written by the former version
    with open(former, 'w') as f:
        f.write(HEADER + f'[DEFAULT]\nignoreip = 127.0.0.1/8 ::1 {SLAVE}\n')
    assert client(conf, 'start').returncode == 0
    try:
        result = local.run('wazo-ha-config', 'set', '--node-type', 'master',
                           '--remote-address', SLAVE)
        assert result.returncode == 0, result.stderr
        assert f'changed: {former}: removed' in result.stdout and not os.path.exists(former)
        assert 'changed: fail2ban reloaded' in result.stdout, result.stdout
        assert fail2ban_reads(conf) == {'asterisk': ['127.0.0.1/8', '10.9.0.0/16', SLAVE]}
        assert client(conf, 'get', 'asterisk', 'ignoreip').stdout.split()[-5:] == \
            ['127.0.0.0/8', '|-', '10.9.0.0/16', '`-', SLAVE], 'the running jail, reloaded'
        assert str(check_line(local)) == \
            f'ok: fail2ban: the jails asterisk ignore the slave {SLAVE} (fail2ban runs)'

        assert client(conf, 'set', 'asterisk', 'delignoreip', SLAVE).returncode == 0
        line = check_line(local)
        assert line.level == 'FAILED' and 'fail2ban runs with the jails asterisk not ignoring ' \
            f'the slave {SLAVE}, though its files do: run fail2ban-client reload' == line.text

        # a jail that sets its own ignoreip after the drop-in: check says so
        with open(os.path.join(conf, 'jail.d', 'zz-local.local'), 'w') as f:
            f.write('[asterisk]\nignoreip = 10.1.1.1\n')
        line = check_line(local)
        assert line.level == 'FAILED' and f'the jails asterisk do not ignore the slave {SLAVE} ' \
            'in the files (fail2ban runs)' in line.text, line
    finally:
        stop_server(conf)
    os.unlink(os.path.join(conf, 'jail.d', 'zz-local.local'))

    # nothing sets ignoreip (Debian's default): fail2ban would refuse %(known/ignoreip)s
    with open(os.path.join(conf, 'jail.local'), 'w') as f:
        f.write(asterisk)
    converged = local.run('wazo-ha-config', 'converge')
    assert converged.returncode == 0 and 'fail2ban never bans the slave' in converged.stdout
    assert fail2ban_reads(conf) == {'asterisk': ['127.0.0.1/8', '::1', SLAVE]}
    assert str(check_line(local)) == (
        f'ok: fail2ban: the jails asterisk ignore the slave {SLAVE} (fail2ban is not running: '
        'it reads them when it starts)')


def stop_server(conf):
    """Its own stop; the process of its pid file killed if it is still there."""
    client(conf, 'stop')
    try:
        with open(os.path.join(conf, 'fail2ban.pid')) as f:
            pid = int(f.read().strip())
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            server = b'fail2ban-server' in f.read()
        if server:   # not another process that got the pid since
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass   # stopped: its pid file is gone, or the process


def client(conf, *args):
    return subprocess.run(['fail2ban-client', '-c', conf, *args], capture_output=True, text=True,
                          timeout=60)


def check_line(local):
    """wazo-ha-config check's fail2ban line (its access lines, which probe no address)."""
    settings = load(local.config)
    lines = diagnosis.access_lines(settings, role.load(settings.paths.ha_conf))
    return next(line for line in lines if line.what == 'fail2ban')


# Wazo's own jail for Asterisk (wazo-platform/xivo-config, etc/fail2ban/jail.d/wazo.conf and
# filter.d/asterisk-wazo.conf): the jail is named asterisk-wazo and reads Asterisk's fail2ban
# log; it sets no ignoreip of its own, so our drop-in's line for it (the loopback and the
# slave) applies. Written
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
