"""debian/postrm's purge removes conf.d/wazo-ha.conf from [paths] postgresql_conf_dir as the
settings left at purge give it: /etc/wazo-ha/conf.d/*.ini in name order, the last value wins
(config.ini, a conffile, is gone by then), else the default. Its pg_conf_dir function is run
here by /bin/sh on directories of ini files."""

import os
import re
import subprocess

import pytest

from wazo_ha_common.settings import TABLE

POSTRM = os.path.join(os.path.dirname(__file__), '..', '..', 'debian', 'postrm')


def pg_conf_dir(conf_d):
    with open(POSTRM) as f:
        function = re.search(r'^pg_conf_dir\(\) \{\n.*?^\}\n', f.read(), re.M | re.S).group(0)
    r = subprocess.run(['/bin/sh', '-ec', function + 'pg_conf_dir "$1"', 'sh', str(conf_d)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def default():
    return next(s.default for s in TABLE
                if (s.section, s.key) == ('paths', 'postgresql_conf_dir'))


def test_no_local_file_gives_the_default(tmp_path):
    assert pg_conf_dir(tmp_path) == default() == '/etc/postgresql/15/main'
    assert pg_conf_dir(tmp_path / 'missing') == default()


@pytest.mark.parametrize('files, expected', [
    ({'10-a.ini': '[paths]\npostgresql_conf_dir = /srv/pg/main\n'}, '/srv/pg/main'),
    ({'10-a.ini': '[paths]\npostgresql_conf_dir=/srv/one\n',
      '20-b.ini': '[paths]\n  postgresql_conf_dir : /srv/two  \n'}, '/srv/two'),
    ({'10-a.ini': '[database]\npostgresql_conf_dir = /srv/wrong\n'}, '/etc/postgresql/15/main'),
    ({'10-a.ini': '[paths]\npostgresql_conf_dir = relative/dir\n'}, '/etc/postgresql/15/main'),
    ({'10-a.ini': '[paths]\nlog_file = /x\npostgresql_conf_dir = /srv/a\n[check]\n'
                  'postgresql_conf_dir = /srv/b\n'}, '/srv/a'),
    ({'10-a.ini': '[paths]\npostgresql_conf_dir = /srv/a\n', 'notes.txt': '[paths]\n'
      'postgresql_conf_dir = /srv/txt\n'}, '/srv/a'),
])
def test_the_last_local_value_of_paths_wins(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert pg_conf_dir(tmp_path) == expected
