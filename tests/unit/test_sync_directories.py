"""[sync] directories: patterns expanded at each run, as Wazo's xivo-sync globs the tenants."""

from wazo_ha_common import settings
from wazo_ha_common.files import sync


def test_the_default_directories_are_those_of_wazos_xivo_sync(tmp_path):
    (tmp_path / 'config.ini').write_text('')
    s = settings.load(str(tmp_path / 'config.ini'))
    assert s.sync.directories == (
        '/etc/asterisk/extensions_extra.d', '/etc/xivo/asterisk', '/root/.config/wazo-auth-cli',
        '/var/lib/asterisk/agi-bin', '/var/lib/asterisk/moh', '/var/lib/wazo-auth-keys',
        '/var/lib/wazo/sounds/tenants/*/acd', '/var/lib/wazo/sounds/tenants/*/playback')


def test_patterns_are_expanded_to_the_directories_there_now(tmp_path):
    tenants = tmp_path / 'tenants'
    for sub in ('t2/playback', 't1/playback', 't1/acd', 't1/monitor'):
        (tenants / sub).mkdir(parents=True)
    (tenants / 't3').mkdir()
    (tenants / 't3' / 'playback').write_text('a file, not a directory')
    plain = tmp_path / 'moh'
    plain.mkdir()
    found, missing = sync.expand_directories((
        str(plain), str(tenants / '*' / 'acd'), str(tenants / '*' / 'playback'),
        str(tmp_path / 'absent'), str(tenants / '*' / 'nothing'), str(plain)))
    assert found == [str(plain), str(tenants / 't1' / 'acd'), str(tenants / 't1' / 'playback'),
                     str(tenants / 't2' / 'playback')]
    assert missing == [str(tmp_path / 'absent'), str(tenants / '*' / 'nothing')]
