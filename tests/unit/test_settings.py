import os

import pytest

from wazo_ha_common import settings
from wazo_ha_common.errors import SettingsError


def write(tmp_path, text, name='config.ini'):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_are_the_production_paths(tmp_path):
    s = settings.load(write(tmp_path, ''))
    assert s.paths.ha_conf == '/etc/xivo/ha.conf'
    assert s.paths.sentinel_dir == '/var/lib/wazo'
    assert s.sync.ssh_key == '/root/.ssh/xivo_id_rsa'
    assert s.check.down_after == 15 and s.check.up_after == 60
    assert len(s.sync.directories) == 8
    assert 'call_logd_*' in s.database.excluded_tables
    assert s.database.verify_every == 86400


def test_conf_d_files_are_read_in_name_order_later_wins(tmp_path):
    main = write(tmp_path, '[check]\ndown_after = 20\n')
    (tmp_path / 'conf.d').mkdir()
    write(tmp_path, '[check]\ndown_after = 30\nup_after = 90\n', 'conf.d/10-a.ini')
    write(tmp_path, '[check]\ndown_after = 40\n', 'conf.d/20-b.ini')
    s = settings.load(main)
    assert s.check.down_after == 40 and s.check.up_after == 90
    assert s.files[-1].endswith('20-b.ini')


def test_environment_variable_names_the_main_file(tmp_path, monkeypatch):
    monkeypatch.setenv('WAZO_HA_CONFIG', write(tmp_path, '[mail]\nrecipient = ops@example.org\n'))
    assert settings.load().mail.recipient == 'ops@example.org'


@pytest.mark.parametrize('text, where', [
    ('[check]\ndown_after = soon\n', '[check] down_after'),
    ('[check]\nprobe_interval = 0\n', '[check] probe_interval'),
    ('[database]\nverify_every = -1\n', '[database] verify_every'),
    ('[database]\nremote_port = 99999\n', '[database] remote_port'),
    ('[paths]\nha_conf = relative/ha.conf\n', '[paths] ha_conf'),
    ('[check]\nwitness = witness.example.org\n', '[check] witness'),
    ('[database]\nremote_user = post gres\n', '[database] remote_user'),
    ('[wazo_api]\nenabled = maybe\n', '[wazo_api] enabled'),
    ('[check]\nnot_a_key = 1\n', '[check] not_a_key: unknown key'),
    ('[nosuch]\nkey = 1\n', 'unknown section [nosuch]'),
    ('not an ini file\n', 'cannot be read'),
])
def test_bad_values_name_the_file_and_the_key(tmp_path, text, where):
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as e:
        settings.load(path)
    assert path in str(e.value) and where in str(e.value)


def test_a_bad_value_in_conf_d_names_that_file(tmp_path):
    main = write(tmp_path, '')
    (tmp_path / 'conf.d').mkdir()
    bad = write(tmp_path, '[check]\nup_after = -1\n', 'conf.d/local.ini')
    with pytest.raises(SettingsError, match=bad.replace('.', r'\.')):
        settings.load(main)


def test_missing_file(tmp_path):
    with pytest.raises(SettingsError, match='not found'):
        settings.load(str(tmp_path / 'none.ini'))


def test_shipped_config_ini_is_made_from_the_table():
    shipped = os.path.join(os.path.dirname(__file__), '..', '..', 'etc', 'config.ini')
    with open(shipped) as f:
        assert f.read() == settings.render_ini(), \
            'etc/config.ini is stale: python3 -m wazo_ha_common.settings > etc/config.ini'


def test_the_shipped_file_read_alone_gives_the_defaults(tmp_path):
    path = write(tmp_path, settings.render_ini())
    assert settings.load(path).check == settings.load(write(tmp_path, '', 'empty.ini')).check
    assert settings.load(path).database.excluded_tables == settings.load(
        write(tmp_path, '', 'empty2.ini')).database.excluded_tables


def out_of_bounds(setting):
    """Values each kind of setting must refuse."""
    kind = setting.kind
    if isinstance(kind, settings.Number):
        values = ['inf', '-inf', 'nan', str(kind.low - 1), str(kind.high + 1), 'soon', '']
        if kind.low > 0:
            values += ['0', str(kind.low / 2)]
        if kind.integer:
            values.append(str(kind.low + 0.5))
        return values
    return {
        settings.Path: ['relative/path', '', '/a\x01b'],
        settings.Directories: ['/', 'relative', '/etc/asterisk\n    /'],
        settings.Name: ['post gres', 'x;y', '', 'ébc'],
        settings.Names: ['', 'asterisk ]x', 'a%(b)s'],
        settings.Bool: ['maybe', ''],
        settings.Verify: ['maybe', 'relative/ca.pem'],
        settings.Url: ['http://', 'ftp://host', 'localhost:9497', 'http://:80/', 'https://h:99999/'],
        settings.Address: ['witness.example.org', '127.0.0.1', '224.0.0.1', '0.0.0.0',
                           'fe80::1%eth0', '169.254.0.1', '255.255.255.255'],
        settings.Ports: ['0', '65536', 'http', '-1'],
        settings.SipTargets: ['5060', 'tls:5061', 'udp:', 'udp:0', 'udp:http'],
        settings.ListenAddresses: ["*'; ssl = off; x = '", '198.18.0.2,', "'*'"]
        + ([] if getattr(kind, 'empty', False) else ['']),
        settings.Command: ['"unclosed'] + ([] if getattr(kind, 'empty', False) else ['']),
        settings.Choice: ['disable', 'prefer', ''],
        settings.Text: [] if getattr(kind, 'empty', True) else [''],
        settings.Words: [],
    }[type(kind)]


MATRIX = [(s, v) for s in settings.TABLE for v in out_of_bounds(s)]


@pytest.mark.parametrize('setting, value', MATRIX,
                         ids=[f'{s.section}.{s.key}={v!r}' for s, v in MATRIX])
def test_every_setting_outside_its_bounds_is_refused_naming_file_and_key(tmp_path, setting, value):
    text = value.replace('\n', '\n')
    path = write(tmp_path, f'[{setting.section}]\n{setting.key} = {text}\n')
    with pytest.raises(SettingsError) as e:
        settings.load(path)
    message = str(e.value)
    assert path in message and f'[{setting.section}] {setting.key}' in message
    assert len(message) < 300 and '\n' not in message


def test_every_default_is_within_its_bounds(tmp_path):
    loaded = settings.load(write(tmp_path, ''))
    assert loaded.check.probe_interval == 5.0 and loaded.paths.lock_dir == '/run/lock/wazo-ha'


def test_a_huge_or_deeply_nested_settings_file_gives_one_short_line(tmp_path):
    path = write(tmp_path, '[check]\nprobe_interval = ' + '9' * 100_000 + '\n')
    with pytest.raises(SettingsError) as e:
        settings.load(path)
    assert len(str(e.value)) < 300


@pytest.mark.parametrize('text, where, line', [
    ('[check]\nup_after = 90\n[sync]\nconect timeout\ntimeout = 30\n',
     '[sync] not a "key = value" line: conect timeout', 4),
    ('[check]\nup_after = 90\n[sync]\ntimeout = 30\ntimeout = 40\n', '[sync] timeout: set twice', 5),
    ('[check]\nup_after = 90\n[sync]\ntimeout = 30\n[sync]\n', '[sync]: section given twice', 5),
])
def test_a_syntax_error_in_conf_d_stops_only_the_commands_reading_its_section(tmp_path, text,
                                                                              where, line):
    """Review of issue 25: a line without '=' or a key given twice is tied to the section of
    its line, with its line number; the failover check (its sections only) still loads, and
    keeps the file's values of the sections without mistakes."""
    main = write(tmp_path, '')
    (tmp_path / 'conf.d').mkdir()
    bad = write(tmp_path, text, 'conf.d/50-local.ini')
    loaded = settings.load(main, strict=('paths', 'check', 'mail'))
    assert loaded.check.up_after == 90
    (tmp_path / 'clean').mkdir()
    assert loaded.sync.timeout == settings.load(write(tmp_path, '', 'clean/config.ini')).sync.timeout
    assert [p.text for p in loaded.problems] == [f'{bad}: line {line}: {where} (keep one)'
                                                 if 'twice' in where else
                                                 f'{bad}: line {line}: {where}']
    assert not loaded.sound('sync') and loaded.sound('check')
    with pytest.raises(SettingsError, match=f'line {line}: '):
        settings.load(main, strict=('sync',))
