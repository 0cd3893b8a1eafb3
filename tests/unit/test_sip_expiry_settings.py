"""[sip] expiry settings: the documented defaults, their order, what wazo-ha-config applies."""

import pytest

from wazo_ha_common import role, role_setup, settings
from wazo_ha_common.errors import SettingsError


def load(tmp_path, text):
    path = tmp_path / 'config.ini'
    path.write_text(text)
    return settings.load(str(path))


def test_the_documented_expiry_is_the_default_and_what_ha_applies(tmp_path):
    s = load(tmp_path, '')
    assert (s.sip.min_expiry, s.sip.default_expiry, s.sip.max_expiry) == (180, 240, 300)
    assert role_setup.expiry_with_ha(s) == role_setup.EXPIRY_WITH_HA
    assert s.check.failback_phones is True and s.check.failback_phones_margin == 30
    assert s.check.failback_phones_timeout == 120


def test_lower_expiry_values_are_what_wazo_ha_config_applies(tmp_path):
    s = load(tmp_path, '[sip]\nmin_expiry = 30\ndefault_expiry = 45\nmax_expiry = 60\n')
    master = role.HaConfig('master', '198.18.0.2')
    assert role_setup.wanted_expiry(None, master, role_setup.expiry_with_ha(s)) == {
        'minimum_expiration': '30', 'maximum_expiration': '60', 'default_expiration': '45'}


def test_expiry_bounds_out_of_order_are_refused_naming_the_keys(tmp_path):
    with pytest.raises(SettingsError, match=r'\[sip\] min_expiry 300, default_expiry 240, '
                                            r'max_expiry 300: must be in that order'):
        load(tmp_path, '[sip]\nmin_expiry = 300\n')
