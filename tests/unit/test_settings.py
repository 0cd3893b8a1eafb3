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


def test_shipped_config_ini_lists_every_key_with_its_default():
    import configparser
    import os
    shipped = os.path.join(os.path.dirname(__file__), '..', '..', 'etc', 'config.ini')
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(shipped)
    for section, keys in settings.DEFAULTS.items():
        for key, default in keys.items():
            value = parser.get(section, key, fallback=None)
            assert value is not None, f'[{section}] {key} missing from etc/config.ini'
            assert value.split() == default.split(), f'[{section}] {key} differs from the default'
