"""The SIP expiry and backup registrar effects of PUT /ha, against a stand-in Wazo API."""

import pytest

from wazo_api_stand_in import TEMPLATE, WazoStandIn

SLAVE = '198.18.0.2'
HA_EXPIRY = {'minimum_expiration': '180', 'maximum_expiration': '300', 'default_expiration': '240'}


@pytest.fixture
def api(local, tmp_path):
    key = tmp_path / 'key.yml'
    key.write_text('service_id: wazo-ha\nservice_key: secret\n')
    with WazoStandIn() as stand_in:
        local.add_conf_d('api.ini', f'[wazo_api]\nenabled = true\nauth_url = {stand_in.url}/auth\n'
                             f'confd_url = {stand_in.url}/confd\nkey_file = {key}\n')
        yield stand_in


def test_master_sets_expiry_and_backup_registrar(local, api):
    result = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', SLAVE)
    assert result.returncode == 0, result.stderr
    assert api.requests[0] == ('POST', '/auth/token', {'expiration': 600})
    writes = api.writes()
    assert [(m, p) for m, p, _ in writes] == [
        ('PUT', '/confd/ha'),
        ('PUT', f'/confd/endpoints/sip/templates/{TEMPLATE}'),
        ('PUT', '/confd/registrars/default'),
    ]
    assert writes[0][2] == {'node_type': 'master', 'remote_address': SLAVE}
    assert api.ha == {'node_type': 'master', 'remote_address': SLAVE}
    assert writes[1][2]['aor_section_options'] == [
        ['qualify_frequency', '60'], ['maximum_contacts', '1'],
        *[[k, v] for k, v in HA_EXPIRY.items()]]
    assert 'links' not in writes[2][2]
    assert writes[2][2]['backup_host'] == SLAVE and writes[2][2]['proxy_backup_host'] == SLAVE
    assert writes[2][2]['main_host'] == '198.18.0.1', 'the rest of the registrar is kept'

    api.requests.clear()
    again = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', SLAVE)
    assert again.returncode == 0, again.stderr
    assert api.writes() == [], 'the same configuration twice writes nothing'
    assert 'nothing to change' in again.stdout


def test_disabling_restores_expiry_and_blanks_the_backup(local, api):
    local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', SLAVE)
    result = local.run('wazo-ha-config', 'set', '--node-type', 'disabled')
    assert result.returncode == 0, result.stderr
    assert api.expiry() == {'minimum_expiration': '60', 'maximum_expiration': '3600',
                            'default_expiration': '120'}
    assert api.registrars[0]['backup_host'] is None
    assert api.registrars[0]['proxy_backup_host'] is None


def test_slave_sets_expiry_but_leaves_registrars_alone(local, api):
    result = local.run('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address', '198.18.0.1')
    assert result.returncode == 0, result.stderr
    assert api.expiry() == HA_EXPIRY
    assert not [r for r in api.requests if 'registrars' in r[1]]
    local.run('wazo-ha-config', 'set', '--node-type', 'disabled')
    assert not [r for r in api.requests if 'registrars' in r[1]], \
        'provd does not run on a slave: its registrars stay as the master set them'


def test_unreachable_api_does_the_local_part_and_says_what_is_missing(local, tmp_path):
    key = tmp_path / 'key.yml'
    key.write_text('service_id: a\nservice_key: b\n')
    local.add_conf_d('api.ini', f'[wazo_api]\nenabled = true\nauth_url = http://127.0.0.1:9/auth\n'
                         f'confd_url = http://127.0.0.1:9/confd\nkey_file = {key}\ntimeout = 2\n')
    result = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', SLAVE)
    assert result.returncode == 1
    assert 'not applied: SIP expiry 180/300/240 s' in result.stderr
    assert f'not applied: backup registrar/proxy = {SLAVE}' in result.stderr
    assert 'did not take PUT /ha' in result.stdout
    assert 'no answer' in result.stderr
    show = local.run('wazo-ha-config', 'show', '--json')
    assert '"master"' in show.stdout, 'the local part is done'


def test_wazo_confd_refusing_the_configuration_changes_nothing(local, api):
    api.route_ha_status = 400
    result = local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', SLAVE)
    assert result.returncode == 2
    assert 'wazo-confd refused' in result.stderr
    assert local.snapshot() == {}


def test_the_sip_expiry_settings_are_what_is_applied(local, api):
    """[sip] lower than documented (docs/benchmarks.md, "Phones": the phones' part of a
    failover against registrations per second)."""
    local.add_conf_d('sip.ini', '[sip]\nmin_expiry = 60\ndefault_expiry = 90\nmax_expiry = 120\n')
    result = local.run('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address', '198.18.0.1')
    assert result.returncode == 0, result.stderr
    assert api.expiry() == {'minimum_expiration': '60', 'maximum_expiration': '120',
                            'default_expiration': '90'}
    assert 'SIP expiry of tenant' in result.stdout and '60/120/90 s' in result.stdout
