"""The package's wazo-auth service key, provisioned with wazo-auth-keys like Wazo's own packages.

`wazo-auth-keys` exists on Wazo nodes only: a recording stand-in, first on the PATH given to
dpkg, replays what the real tool does (wazo-platform/wazo-auth-keys):

- wazo_auth_keys/main.py: the configuration directory /etc/wazo-auth-keys, the key directory
  /var/lib/wazo-auth-keys;
- wazo_auth_keys/config.py `load_services`: the services are the top-level keys of config.yml
  and of conf.d/*.yml;
- wazo_auth_keys/commands/service.py `ServiceUpdate`: for each declared service, an internal
  wazo-auth user and the policy `<service>-internal` with its ACLs (kept here in users.json,
  the stand-in's wazo-auth), and the key file when it does not exist yet; a user without its
  key file is an error ("Please use '--recreate' option"). `ServiceClean`: removes the key
  files of undeclared services, and with --users their internal users (not wazo-auth-cli);
- wazo_auth_keys/file_manager.py: `<service>-key.yml` holding service_id and service_key,
  mode 0600, owned by the service's system_user.
"""

import json
import os
import pwd
import shutil
import stat

import pytest
import yaml

from package_helpers import sh

CONF_DIR = '/etc/wazo-auth-keys'
KEY_DIR = '/var/lib/wazo-auth-keys'
OUR_CONF = f'{CONF_DIR}/conf.d/wazo-ha.yml'
OUR_KEY = f'{KEY_DIR}/wazo-ha-key.yml'
OTHER_KEY = f'{KEY_DIR}/wazo-other-key.yml'
# what wazo_ha_common/adapters/wazo_api.py calls (names from wazo-confd, see the comments of the file)
EXPECTED_ACL = ['confd.ha.read', 'confd.ha.update', 'confd.tenants.read',
                'confd.endpoints.sip.templates.*.read', 'confd.endpoints.sip.templates.*.update',
                'confd.registrars.read', 'confd.registrars.*.update', 'auth.tenants.read']

STAND_IN = r'''#!/usr/bin/python3
import glob, json, os, pwd, sys, uuid
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, 'calls.jsonl'), 'a') as f:
    f.write(json.dumps(sys.argv[1:]) + '\n')
if os.path.exists(os.path.join(HERE, 'auth-down')):
    sys.exit('wazo-auth-keys: wazo-auth does not answer (connection refused)')

CONF_DIR, KEY_DIR = '/etc/wazo-auth-keys', '/var/lib/wazo-auth-keys'
USERS = os.path.join(HERE, 'users.json')
services = {}
for path in [os.path.join(CONF_DIR, 'config.yml')] + sorted(glob.glob(CONF_DIR + '/conf.d/*.yml')):
    if os.path.exists(path):
        with open(path) as f:
            services.update(yaml.safe_load(f) or {})
users = json.load(open(USERS)) if os.path.exists(USERS) else {}


def key_file(name):
    return os.path.join(KEY_DIR, f'{name}-key.yml')


if sys.argv[1:] == ['service', 'update']:
    for name, values in services.items():
        if not os.path.exists(key_file(name)):
            if name in users:
                sys.exit(f"User ({name}) exists but not the file associated. "
                         "Please use '--recreate' option")
            users[name] = {'policy': f'{name}-internal', 'acl': values['acl']}
            os.mknod(key_file(name))
            os.chmod(key_file(name), 0o600)
            with open(key_file(name), 'w') as f:
                yaml.safe_dump({'service_id': name, 'service_key': str(uuid.uuid4())}, f)
        elif name not in users:
            sys.exit(f"File exists but not the user ({name}) associated. "
                     "Please use '--recreate' option")
        users[name]['acl'] = values['acl']
        try:
            uid = pwd.getpwnam(values['system_user']).pw_uid
        except KeyError:
            uid = -1
        os.chown(key_file(name), uid, -1)
        os.chmod(key_file(name), 0o600)
elif sys.argv[1:3] == ['service', 'clean'] and sys.argv[3:] in ([], ['--users']):
    if sys.argv[3:] == ['--users']:
        users = {n: u for n, u in users.items() if n in services or n == 'wazo-auth-cli'}
    keep = {f'{name}-key.yml' for name in services}
    for filename in os.listdir(KEY_DIR):
        if filename not in keep:
            os.remove(os.path.join(KEY_DIR, filename))
else:
    sys.exit(f'wazo-auth-keys stand-in: unexpected arguments {sys.argv[1:]}')
with open(USERS, 'w') as f:
    json.dump(users, f)
'''


class StandIn:
    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory)
        path = os.path.join(directory, 'wazo-auth-keys')
        with open(path, 'w') as f:
            f.write(STAND_IN)
        os.chmod(path, 0o755)
        self.env = {'PATH': f'{directory}:/usr/sbin:/usr/bin:/sbin:/bin'}

    def calls(self):
        try:
            with open(os.path.join(self.dir, 'calls.jsonl')) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def users(self):
        try:
            with open(os.path.join(self.dir, 'users.json')) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def auth_down(self, down=True):
        marker = os.path.join(self.dir, 'auth-down')
        if down:
            open(marker, 'w').close()
        elif os.path.exists(marker):
            os.remove(marker)


@pytest.fixture
def wazo_auth_keys(tmp_path, deb):
    """A node with wazo-auth-keys' directories and one other declared service."""
    if sh('dpkg-query', '-W', 'wazo-ha').returncode == 0:
        pytest.fail('wazo-ha is installed on this machine: the test would change it')
    if os.path.exists(CONF_DIR):
        pytest.fail(f'{CONF_DIR} exists on this machine: the test would change it')
    # an empty key directory may be left by other tests (a mount point): used, then kept
    key_dir_existed = os.path.isdir(KEY_DIR)
    if key_dir_existed and os.listdir(KEY_DIR):
        pytest.fail(f'{KEY_DIR} holds keys on this machine: the test would change them')
    try:
        os.makedirs(f'{CONF_DIR}/conf.d')
        os.makedirs(KEY_DIR, exist_ok=True)
        with open(f'{CONF_DIR}/config.yml', 'w') as f:
            f.write('wazo-other:\n  system_user: root\n  acl:\n    - confd.users.read\n')
        yield deb[0], StandIn(str(tmp_path / 'bin'))
    finally:
        sh('dpkg', '--purge', 'wazo-ha')
        shutil.rmtree(CONF_DIR, ignore_errors=True)
        if key_dir_existed:
            for name in os.listdir(KEY_DIR):
                os.remove(os.path.join(KEY_DIR, name))
        else:
            shutil.rmtree(KEY_DIR, ignore_errors=True)


def test_the_declared_service_holds_exactly_the_acls_of_the_api_calls(wazo_auth_keys):
    deb, _ = wazo_auth_keys
    assert sh('dpkg', '-i', deb).returncode == 0
    with open(OUR_CONF) as f:
        declared = yaml.safe_load(f)
    assert declared == {'wazo-ha': {'system_user': 'root', 'acl': EXPECTED_ACL}}
    assert OUR_CONF in sh('dpkg-query', '-W', '-f=${Conffiles}', 'wazo-ha').stdout


def test_install_creates_the_key_and_purge_removes_it(wazo_auth_keys):
    deb, stand_in = wazo_auth_keys
    installed = sh('dpkg', '-i', deb, env=stand_in.env)
    assert installed.returncode == 0, installed.stderr
    assert stand_in.calls() == [['service', 'update']]
    status = os.stat(OUR_KEY)
    assert stat.S_IMODE(status.st_mode) == 0o600
    assert pwd.getpwuid(status.st_uid).pw_name == 'root'
    with open(OUR_KEY) as f:
        key = yaml.safe_load(f)
    assert key['service_id'] == 'wazo-ha' and key['service_key']
    assert stand_in.users()['wazo-ha'] == {'policy': 'wazo-ha-internal', 'acl': EXPECTED_ACL}
    # what wazo-ha-config reads: [wazo_api] key_file
    with open('/etc/wazo-ha/config.ini') as f:
        assert f'key_file = {OUR_KEY}\n' in f.read()

    purged = sh('dpkg', '--purge', 'wazo-ha', env=stand_in.env)
    assert purged.returncode == 0, purged.stderr
    assert stand_in.calls()[-1] == ['service', 'clean', '--users']
    assert not os.path.exists(OUR_KEY)
    assert not os.path.exists(OUR_CONF)
    assert 'wazo-ha' not in stand_in.users()
    assert os.path.exists(OTHER_KEY) and 'wazo-other' in stand_in.users(), 'others untouched'

    # the wazo-auth user went with the key: installing again gets a new key
    again = sh('dpkg', '-i', deb, env=stand_in.env)
    assert again.returncode == 0, again.stderr
    assert 'was not created' not in again.stderr
    assert os.path.exists(OUR_KEY)


def test_install_and_purge_without_wazo_auth_keys(wazo_auth_keys):
    deb, stand_in = wazo_auth_keys
    plain = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin'}
    installed = sh('dpkg', '-i', deb, env=plain)
    assert installed.returncode == 0, installed.stderr
    assert os.path.exists(OUR_CONF)
    assert not os.path.exists(OUR_KEY)
    purged = sh('dpkg', '--purge', 'wazo-ha', env=plain)
    assert purged.returncode == 0, purged.stderr
    assert not os.path.exists(OUR_CONF)
    assert stand_in.calls() == []


def test_wazo_auth_down_fails_neither_install_nor_purge(wazo_auth_keys):
    deb, stand_in = wazo_auth_keys
    stand_in.auth_down()
    installed = sh('dpkg', '-i', deb, env=stand_in.env)
    assert installed.returncode == 0, installed.stderr
    assert stand_in.calls() == [['service', 'update']]
    assert "run 'wazo-auth-keys service update' later" in installed.stderr
    assert not os.path.exists(OUR_KEY)
    assert sh('dpkg-query', '-W', '-f=${Status}', 'wazo-ha').stdout == 'install ok installed'

    purged = sh('dpkg', '--purge', 'wazo-ha', env=stand_in.env)
    assert purged.returncode == 0, purged.stderr
    assert stand_in.calls()[-1] == ['service', 'clean', '--users']
    assert "run 'wazo-auth-keys service clean --users' later" in purged.stderr
    assert sh('dpkg-query', '-W', 'wazo-ha').returncode != 0, 'purged'
