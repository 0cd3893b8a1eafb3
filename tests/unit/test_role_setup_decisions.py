from wazo_ha_common import role_setup
from wazo_ha_common.access import pg_access
from wazo_ha_common.role import DISABLED, HaConfig

MASTER = HaConfig('master', '198.18.0.2')
SLAVE = HaConfig('slave', '198.18.0.1')


def test_expiry_is_enforced_on_both_roles_and_restored_on_disable():
    assert role_setup.wanted_expiry(None, MASTER) == role_setup.EXPIRY_WITH_HA
    assert role_setup.wanted_expiry(DISABLED, SLAVE) == role_setup.EXPIRY_WITH_HA
    assert role_setup.wanted_expiry(MASTER, DISABLED) == role_setup.EXPIRY_WITHOUT_HA
    assert role_setup.wanted_expiry(DISABLED, DISABLED) is None, "never touched HA: leave them"


def test_backup_registrar_set_on_master_blanked_on_disable_unless_was_slave():
    assert role_setup.wanted_backup_registrar(None, MASTER) == '198.18.0.2'
    assert role_setup.wanted_backup_registrar(MASTER, DISABLED) == ''
    assert role_setup.wanted_backup_registrar(SLAVE, DISABLED) is None
    assert role_setup.wanted_backup_registrar(DISABLED, SLAVE) is None


def test_with_options_keeps_other_options_and_their_order():
    options = [['max_contacts', '1'], ['default_expiration', '120'], ['qualify', '60']]
    assert role_setup.with_options(options, role_setup.EXPIRY_WITH_HA) == [
        ['max_contacts', '1'], ['default_expiration', '240'], ['qualify', '60'],
        ['minimum_expiration', '180'], ['maximum_expiration', '300']]
    done = role_setup.with_options(options, role_setup.EXPIRY_WITH_HA)
    assert role_setup.with_options(done, role_setup.EXPIRY_WITH_HA) == done


def test_registrar_update_only_when_needed():
    reg = {'id': 'default', 'backup_host': None, 'proxy_backup_host': None, 'links': []}
    body = role_setup.registrar_update(reg, '198.18.0.2')
    assert body == {'id': 'default', 'backup_host': '198.18.0.2', 'proxy_backup_host': '198.18.0.2'}
    assert role_setup.registrar_update(body, '198.18.0.2') is None
    assert role_setup.registrar_update(reg, '') is None


HBA = 'local all postgres peer\nhost all all 0.0.0.0/0 reject\n'
ROLE = 'wazo_ha_replication'


def test_hba_block_goes_first_and_only_for_the_master():
    text = pg_access.render_hba(HBA, '198.18.0.1', 'asterisk', ROLE)
    lines = text.splitlines()
    assert lines[0] == pg_access.BEGIN
    assert lines[1:4] == [f'hostssl asterisk {ROLE} 198.18.0.1/32 scram-sha-256',
                          f'host all {ROLE} all reject',
                          'host all postgres 198.18.0.1/32 reject']
    assert lines[4] == pg_access.END
    assert not any('trust' in line for line in lines)
    assert text.endswith(HBA)
    assert pg_access.render_hba(text, '198.18.0.1', 'asterisk', ROLE) == text
    moved = pg_access.render_hba(text, '198.18.0.9', 'asterisk', ROLE)
    assert '198.18.0.1' not in moved and moved.count(pg_access.BEGIN) == 1
    assert pg_access.render_hba(text, None, 'asterisk', ROLE) == HBA


def test_hba_untouched_when_never_opened():
    assert pg_access.render_hba('no newline at end', None, 'asterisk', ROLE) == 'no newline at end'


def test_ipv6_master_gets_a_128_prefix():
    assert pg_access.hba_lines('2001:db8::1', 'asterisk', ROLE) == [
        f'hostssl asterisk {ROLE} 2001:db8::1/128 scram-sha-256', f'host all {ROLE} all reject',
        'host all postgres 2001:db8::1/128 reject']
