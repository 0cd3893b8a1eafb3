#!/usr/bin/python3
"""Stand-in for wazo-sysconfd's HA handler (what `PUT /ha` on wazo-confd ends in).

Replays, in the same order, what wazo-platform/wazo-sysconfd
`wazo_sysconfd/plugins/ha_config/ha.py` (HAConfigManager.update_ha_config) does:
  1. write /etc/xivo/ha.conf (json.dump of the body, no newline);
  2. pg_hba.conf: `sed -i '/^host asterisk postgres/d'`, then on a slave append
     `host asterisk postgres MASTER/32 trust`;
  3. postgresql.conf: `sed -i '/^listen_addresses/d'`, then on a slave append
     `listen_addresses = '*'`;
  4. restart PostgreSQL (`systemctl restart postgresql.service` there; a command given here,
     since the test nodes run no systemd);
  5. remove /etc/cron.d/xivo-ha-master and xivo-ha-slave, write the one of the new role;
  6. master or disabled: `/usr/sbin/xivo-manage-slave-services start`, a non-zero exit
     failing the request (subprocess.check_call);
  7. sentinels: is-primary / is-secondary, the other removed; none when disabled.
Each step is appended to --record, so a test can check the order. Exit 0 when the request
succeeds, 1 with the failing step on stderr otherwise (confd then answers an error).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys

MANAGE = '/usr/sbin/xivo-manage-slave-services'


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument('body', help='the PUT /ha body (JSON)')
    p.add_argument('--ha-conf', default='/etc/xivo/ha.conf')
    p.add_argument('--pg-dir', required=True, help='holds pg_hba.conf and postgresql.conf')
    p.add_argument('--restart', required=True, help='command that restarts PostgreSQL')
    p.add_argument('--cron-dir', required=True)
    p.add_argument('--sentinel-dir', default='/var/lib/wazo')
    p.add_argument('--record', required=True)
    p.add_argument('--manage', default=MANAGE,
                   help='our xivo-manage-slave-services (the installed one by default)')
    args = p.parse_args()
    body = json.loads(args.body)
    node_type, remote = body['node_type'], body['remote_address']

    def step(what, argv=None):
        with open(args.record, 'a') as f:
            f.write(what + '\n')
        if argv is not None:
            result = subprocess.run(argv, capture_output=True, text=True)
            if result.returncode != 0:
                print(f'{what}: exit {result.returncode}: {result.stderr.strip()}',
                      file=sys.stderr)
                sys.exit(1)

    step('write ha.conf')
    with open(args.ha_conf, 'w') as f:
        json.dump(body, f)

    hba = os.path.join(args.pg_dir, 'pg_hba.conf')
    step('pg_hba: delete host asterisk postgres lines', ['sed', '-i', '/^host asterisk postgres/d', hba])
    if node_type == 'slave':
        step('pg_hba: append the trust line')
        with open(hba, 'a') as f:
            f.write(f'host asterisk postgres {remote}/32 trust\n')
    conf = os.path.join(args.pg_dir, 'postgresql.conf')
    step('postgresql.conf: delete listen_addresses', ['sed', '-i', '/^listen_addresses/d', conf])
    if node_type == 'slave':
        step("postgresql.conf: append listen_addresses = '*'")
        with open(conf, 'a') as f:
            f.write("listen_addresses = '*'\n")
    step('restart PostgreSQL', shlex.split(args.restart))

    step('cron files')
    for name in ('xivo-ha-master', 'xivo-ha-slave'):
        try:
            os.unlink(os.path.join(args.cron_dir, name))
        except FileNotFoundError:
            pass
    if node_type == 'master':
        with open(os.path.join(args.cron_dir, 'xivo-ha-master'), 'w') as f:
            f.write(f'0 * * * * root /usr/sbin/xivo-master-slave-db-replication {remote} >/dev/null\n'
                    '0 * * * * root /usr/bin/wazo-sync >/dev/null\n')
    elif node_type == 'slave':
        with open(os.path.join(args.cron_dir, 'xivo-ha-slave'), 'w') as f:
            f.write(f'* * * * * root /usr/sbin/xivo-check-master-status {remote} >/dev/null\n')

    if node_type != 'slave':
        step(f'{MANAGE} start', [args.manage, 'start'])

    step('sentinels')
    wanted = {'master': 'is-primary', 'slave': 'is-secondary'}.get(node_type)
    for name in ('is-primary', 'is-secondary'):  # the other one goes first, as there
        path = os.path.join(args.sentinel_dir, name)
        if name != wanted and os.path.exists(path):
            os.unlink(path)
    if wanted:
        open(os.path.join(args.sentinel_dir, wanted), 'a').close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
