import json
import re

import pytest

from wazo_ha_common import role
from wazo_ha_common.errors import HaConfError, InputError, WrongRoleError

OWN = {'198.18.0.1', '127.0.0.1'}


@pytest.mark.parametrize('text', ['wazo-slave', 'wazo-slave.example.org', '198.18.0.2;id',
                                  '198.18.0.2 && reboot', '`id`', '$(id)', '198.18.0',
                                  '0.0.0.0', '127.0.0.1', '::1', '224.0.0.1', ''])
def test_peer_must_be_a_usable_ip(text):
    with pytest.raises(InputError):
        role.validate_peer(text, own=OWN)


def test_own_address_is_refused():
    with pytest.raises(InputError, match='address of this node'):
        role.validate_peer('198.18.0.1', own=OWN)


def test_ipv6_peer_is_normalised():
    assert role.validate_peer('2001:DB8::0002', own=OWN) == '2001:db8::2'


@pytest.mark.parametrize('body, message', [
    ({'node_type': 'primary', 'remote_address': '198.18.0.2'}, 'node_type must be one of'),
    ({'node_type': 'master'}, 'remote_address is required'),
    ({'node_type': 'master', 'remote_address': '198.18.0.2', 'extra': 1}, 'unknown field'),
    (['master'], 'JSON object'),
    ({'node_type': 'slave', 'remote_address': 12}, 'not an IP'),
])
def test_put_ha_body_validation(body, message):
    with pytest.raises(InputError, match=message):
        role.validate(body, own=OWN)


def test_disabled_needs_no_address():
    assert role.validate({'node_type': 'disabled'}, own=OWN) == role.DISABLED


def test_save_then_load(tmp_path):
    path = str(tmp_path / 'ha.conf')
    config = role.HaConfig('master', '198.18.0.2')
    role.save(path, config)
    assert role.load(path) == config
    assert json.loads(open(path).read()) == config.as_json()
    assert [p.name for p in tmp_path.iterdir()] == ['ha.conf'], 'no temp file left behind'


@pytest.mark.parametrize('content', ['', '{', '[]', '{"node_type": "slave"}',
                                     '{"node_type": "master", "remote_address": "host"}',
                                     '\xff\xfe'])
def test_corrupt_ha_conf_names_the_file(tmp_path, content):
    path = tmp_path / 'ha.conf'
    path.write_text(content, encoding='latin-1')
    with pytest.raises(HaConfError, match=str(path)):
        role.load(str(path))


def test_missing_ha_conf_is_not_silently_disabled(tmp_path):
    with pytest.raises(HaConfError, match='does not exist'):
        role.load(str(tmp_path / 'ha.conf'))


def test_sentinels_follow_the_role(tmp_path):
    d = str(tmp_path)
    assert role.apply_sentinels(d, 'master') == [f'created {d}/is-primary']
    assert role.apply_sentinels(d, 'master') == []
    assert role.apply_sentinels(d, 'slave') == [f'removed {d}/is-primary', f'created {d}/is-secondary']
    assert role.current_sentinels(d) == {'is-secondary'}
    role.apply_sentinels(d, 'disabled')
    assert role.current_sentinels(d) == set()


@pytest.fixture
def node(tmp_path):
    sentinels = tmp_path / 'var-lib-wazo'
    sentinels.mkdir()
    return str(tmp_path / 'ha.conf'), str(sentinels)


def configure(node, node_type, sentinel=None):
    ha_conf, sentinels = node
    role.save(ha_conf, role.HaConfig(node_type, '' if node_type == 'disabled' else '198.18.0.9'))
    if sentinel:
        open(f'{sentinels}/{sentinel}', 'w').close()


@pytest.mark.parametrize('node_type, sentinel, wanted', [
    ('master', 'is-primary', 'master'),
    ('slave', 'is-secondary', 'slave'),
    ('master', None, 'master'),  # the master's commands go by ha.conf, as xivo-sync does
])
def test_require_role_returns_the_configuration_of_the_right_role(node, node_type, sentinel, wanted):
    configure(node, node_type, sentinel)
    assert role.require_role(*node, wanted, 'x').node_type == wanted


@pytest.mark.parametrize('node_type, sentinel, wanted, message', [
    ('slave', 'is-secondary', 'master', 'not a master (ha.conf says slave)'),
    ('disabled', None, 'master', 'not a master (ha.conf says disabled)'),
    ('master', 'is-primary', 'slave', 'no is-secondary sentinel'),
    # sysconfd writes ha.conf first and the sentinels last: mid-way, ha.conf decides
    ('master', 'is-secondary', 'slave', 'not a slave (ha.conf says master)'),
    ('slave', None, 'slave', 'no is-secondary sentinel'),
])
def test_require_role_on_the_wrong_role_is_not_a_failure(node, node_type, sentinel, wanted, message):
    configure(node, node_type, sentinel)
    with pytest.raises(WrongRoleError, match=re.escape(message)) as raised:
        role.require_role(*node, wanted, 'the job')
    assert raised.value.exit_code == 0
    assert 'nothing done' in str(raised.value)


def test_require_role_with_a_missing_ha_conf_is_an_error(node):
    with pytest.raises(HaConfError, match='does not exist') as raised:
        role.require_role(*node, 'master', 'x')
    assert raised.value.exit_code == 2


@pytest.mark.parametrize('text', ['fe80::1%eth0', 'fe80::1', '169.254.1.1', '255.255.255.255',
                                  '::', '::ffff:127.0.0.1', 'ff02::1', '239.1.1.1'])
def test_special_addresses_cannot_be_the_peer(text):
    with pytest.raises(InputError, match='cannot be the address of the other node'):
        role.validate_peer(text, own=OWN)


def test_an_ipv4_mapped_address_of_this_node_is_this_node():
    with pytest.raises(InputError, match='198.18.0.1 is an address of this node'):
        role.validate_peer('::ffff:198.18.0.1', own=OWN)
    assert role.validate_peer('::ffff:198.18.0.2', own=OWN) == '198.18.0.2'


def test_a_huge_argument_gives_a_short_message():
    with pytest.raises(InputError) as e:
        role.validate_peer('1' * 100_000, own=OWN)
    assert len(str(e.value)) < 120


def test_deeply_nested_json_in_ha_conf_is_corrupt_not_a_crash(tmp_path):
    path = tmp_path / 'ha.conf'
    path.write_text('[' * 100_000 + ']' * 100_000)
    with pytest.raises(HaConfError, match='is corrupt') as e:
        role.load(str(path))
    assert len(str(e.value)) < 300
