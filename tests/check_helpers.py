"""Helpers for tests of xivo-check-master-status: fast detection settings, one run."""

FAST = {'check': {'probe_interval': '1', 'down_after': '3', 'up_after': '4', 'run_for': '0',
                  'probe_timeout': '1'}}


def check(slave, *args, run_for=None, **settings):
    """One run of the check on the slave (settings FAST, plus run_for/overrides if given)."""
    if run_for is not None or settings:
        slave.write_settings(check={**FAST['check'], **({'run_for': str(run_for)} if run_for is not None else {}),
                                    **settings})
    return slave.wazo('xivo-check-master-status', *args, timeout=120)


def configure_fast_slave(master, slave):
    """The slave configured as such, with the fast detection settings above."""
    slave.write_settings(**FAST)
    result = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address',
                        master.ip)
    assert result.returncode == 0, result.stderr
