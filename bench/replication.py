#!/usr/bin/python3
"""Replication benchmark: xivo-master-slave-db-replication against the documented procedure.

Two nodes of the testbed (network namespaces, real PostgreSQL 15, the real Wazo schema), a
generated large installation on the master (USERS users with lines, extensions, voicemails,
function keys, groups and queue members, and HISTORY rows of CEL plus call logs and queue logs),
and the slave holding its own history. Four scenarios: full copy (the slave has none of the
master's configuration), no change, 1% of the configuration rows changed, and the verification
(--verify: every copied table compared by content, nothing changed).

Baseline: what the documentation describes, written here as a script: pg_dump --data-only of
the asterisk database minus the excluded tables, piped into psql on the slave inside one
transaction that first empties the copied tables (TRUNCATE, DELETE for those that excluded
tables reference) with session_replication_role = replica.

Printed: wall time, peak RSS of the client processes, and how long the slave's copied tables
were held by a writing transaction (the baseline's whole load; ours from the first write to
the commit, 0 when nothing is written).

--profile: no baseline; each of our runs under cProfile, and a table of what each step of the
run costs besides the copy (the failback record read over SSH, the origin check, the
connections, the lock, the state writes...). --against TREE adds the wall time of another
checkout's command (an older commit) on the same data, in the same runs.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, '..', 'tests'), os.path.join(HERE, '..')]

from datagen import installation_sql  # noqa: E402
from replication_helpers import configure  # noqa: E402
from testbed import Testbed, cleanup_leftovers, template_cluster  # noqa: E402

from wazo_ha_common import replication, settings as settings_module  # noqa: E402

BASELINE_LOAD = r'''
set -eu
# as the replication role, over TLS (the slave accepts nothing else from the master)
slave="host=$SLAVE port=5432 dbname=asterisk user=wazo_ha_replication sslmode=require passfile=$PASSFILE"
excluded="$EXCLUDE_ARGS"
{
  echo 'BEGIN;'
  echo 'SET session_replication_role = replica;'
  echo "$EMPTY_SQL"
  pg_dump --data-only --no-owner --no-privileges -h "$MASTER_SOCK" -U postgres $excluded asterisk
  echo 'COMMIT;'
} | psql -X -q -v ON_ERROR_STOP=1 -d "$slave" >/dev/null
'''


def timed(node, argv, env=None):
    """Run argv in the node; wall time and the peak RSS of its process tree (KiB)."""
    started = time.monotonic()
    proc = node.popen(*argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f'{argv[:3]} failed: {err}')
    # on Linux, wait4's ru_maxrss covers the process and the descendants it waited for
    # (pg_dump and psql under the baseline's shell)
    return wall, usage.ru_maxrss


# --profile: the steps of one run, as (label, [(file suffix, function)]): cumulative seconds
# summed over the functions (the main thread's; the compare's threads are waited for in it)
STEPS = (
    ('interpreter start (wall - profiled)', None),
    ('imports', [('<imports>', '')]),
    ('settings and logging', [('wazo_ha_common/settings.py', 'load'),
                              ('wazo_ha_common/cli.py', 'setup_logging')]),
    ('lock (flock)', [('wazo_ha_common/adapters/system.py', 'single_instance')]),
    ('failback record read (SSH + rsync), main thread', [('wazo_ha_common/files/sync.py',
                                                         'fetch_record')]),
    ('waiting for the record read beside the compare', [('wazo_ha_common/replication/job.py',
                                                        '_unless_serving')]),
    ('connections (master socket, slave TLS scram)', [('wazo_ha_common/adapters/db/session.py',
                                                      'connect'),
                                                     ('wazo_ha_common/db.py', 'connect')]),
    ('stale sessions ended on the slave', [('wazo_ha_common/adapters/db/session.py',
                                           'end_other_sessions'),
                                          ('wazo_ha_common/db.py', 'end_other_sessions')]),
    ('tables and horizons', [('wazo_ha_common/replication/compare.py', 'copied_tables'),
                             ('wazo_ha_common/replication/nodes.py', 'both')]),
    ('origin: identity and guard', [('wazo_ha_common/replication/origin.py', 'master_identity'),
                                    ('wazo_ha_common/replication/origin.py', 'guard')]),
    ('origin: own address', [('wazo_ha_common/replication/origin.py', 'own_address')]),
    ('compare (find_changes)', [('wazo_ha_common/replication/compare.py', 'find_changes')]),
    ('write (Writer.write, commit included)', [('wazo_ha_common/replication/write.py', 'write')]),
    ('commit of the slave (guard included)', [('wazo_ha_common/replication/nodes.py',
                                               'commit_slave')]),
    ('origin: record written', [('wazo_ha_common/replication/origin.py', 'write')]),
    ('state writes', [('wazo_ha_common/jobs.py', 'save_last_run'),
                      ('wazo_ha_common/replication/job.py', '_save_tracking'),
                      ('wazo_ha_common/adapters/system.py', 'write_state')]),
    ('whole run (main)', [('bin/xivo-master-slave-db-replication', 'main')]),
)


def step_seconds(profile_file: str, wall: float) -> dict[str, tuple[float, int]]:
    """The STEPS of one profiled run: label -> (seconds, calls)."""
    import pstats
    stats = pstats.Stats(profile_file).stats
    out = {}
    total = sum(tt for (_, _, tt, _, _) in stats.values())
    script = [ct for (f, _, name), (_, _, _, ct, _) in stats.items()
              if f.endswith('bin/xivo-master-slave-db-replication') and name == '<module>']
    main_ct = [ct for (f, _, name), (_, _, _, ct, _) in stats.items()
               if f.endswith('bin/xivo-master-slave-db-replication') and name == 'main']
    for label, functions in STEPS:
        if functions is None:
            out[label] = (wall - total, 1)
        elif functions[0][0] == '<imports>':
            out[label] = ((script[0] - main_ct[0]) if script and main_ct else 0.0, 1)
        else:
            seconds, calls = 0.0, 0
            for (f, _, name), (cc, _, _, ct, _) in stats.items():
                if any(f.endswith(suffix) and name == function for suffix, function in functions):
                    seconds, calls = seconds + ct, calls + cc
            out[label] = (seconds, calls)
    return out


def old_command(master, tree: str):
    """The other checkout's command and a settings file it accepts: the testbed's, minus the
    keys it does not know, with state and lock directories of its own."""
    import configparser
    known = subprocess.run(
        ['/usr/bin/python3', '-c', 'import json; from wazo_ha_common import settings; '
         'print(json.dumps([[s.section, s.key] for s in settings.TABLE]))'],
        env={'PYTHONPATH': tree}, cwd=tree, capture_output=True, text=True, check=True)
    keys = {tuple(k) for k in json.loads(known.stdout)}
    ini = configparser.ConfigParser(interpolation=None)
    ini.read([master.config] + sorted(
        os.path.join(os.path.dirname(master.config), 'conf.d', n)
        for n in os.listdir(os.path.join(os.path.dirname(master.config), 'conf.d'))
        if n.endswith('.ini')) if os.path.isdir(os.path.join(os.path.dirname(master.config), 'conf.d'))
        else [master.config])
    out = configparser.ConfigParser(interpolation=None)
    home = os.path.join(master.root, 'old-tree')
    for sub in ('state', 'lock', 'etc'):
        os.makedirs(os.path.join(home, sub), exist_ok=True)
    for section in ini.sections():
        for key, value in ini.items(section, raw=True):
            if (section, key) in keys:
                if not out.has_section(section):
                    out.add_section(section)
                out.set(section, key, value)
    out.set('paths', 'state_dir', os.path.join(home, 'state'))
    out.set('paths', 'lock_dir', os.path.join(home, 'lock'))
    config = os.path.join(home, 'etc', 'config.ini')
    with open(config, 'w') as f:
        out.write(f)
    return ['/usr/bin/python3', os.path.join(tree, 'bin', 'xivo-master-slave-db-replication')], \
        {'WAZO_HA_CONFIG': config, 'PYTHONPATH': tree, 'PYTHONDONTWRITEBYTECODE': '',
         'PYTHONPYCACHEPREFIX': os.path.join(home, 'pycache')}


def profile(master, slave, copied, empty, repeat: int, against: str | None) -> None:
    """Our runs under cProfile, step by step; `against`: another checkout's command beside."""
    env = {'PYTHONDONTWRITEBYTECODE': '', 'PYTHONPYCACHEPREFIX': os.path.join(master.root, 'pycache')}
    command = ['/usr/bin/python3', os.path.join(HERE, '..', 'bin', 'xivo-master-slave-db-replication')]
    old = old_command(master, against) if against else None
    walls, steps = {}, {}

    def start(scenario, argv, side_env):
        """The slave as the scenario starts from (as in the comparison with the baseline)."""
        if scenario == 'full copy':
            reset_slave_config(slave, copied, empty)
        else:
            timed(master, argv, env=side_env)
            if scenario == '1% changed':
                change_one_percent(master)

    for scenario in ('full copy', 'no change', '1% changed'):
        for n in range(repeat):
            for side, (argv, side_env) in (('now', (command, env)), ('old', old or (None, None))):
                if argv is None:
                    continue
                start(scenario, argv, side_env)
                walls.setdefault((scenario, side, 'plain'), []).append(
                    timed(master, argv, env=side_env)[0])
                start(scenario, argv, side_env)  # once more from the same start, profiled
                out = os.path.join(master.root, f'profile-{side}-{n}')
                wall, _ = timed(master, ['/usr/bin/python3', '-m', 'cProfile', '-o', out,
                                         *argv[1:]], env=side_env)
                for label, value in step_seconds(out, wall).items():
                    steps.setdefault((scenario, side, label), []).append(value)
        print(f'{scenario}: done', flush=True)

    import statistics
    scenarios = ('full copy', 'no change', '1% changed')
    print('\nwall time, median of', repeat, 'runs (s):\n')
    print('| command | ' + ' | '.join(scenarios) + ' |')
    print('|---|' + '---|' * len(scenarios))
    for side, name in (('now', 'this tree'), ('old', against)):
        if (scenarios[0], side, 'plain') in walls:
            print(f'| {name} | ' + ' | '.join(
                f'{statistics.median(walls[(s, side, "plain")]):.3f}' for s in scenarios) + ' |')
    sides = [('now', 'this tree')] + ([('old', against)] if against else [])
    print('\nsteps of each run under cProfile, median of', repeat, 'runs: seconds (calls)\n')
    print('| step | ' + ' | '.join(f'{s}: {name}' for s in scenarios for _, name in sides) + ' |')
    print('|---|' + '---|' * (len(scenarios) * len(sides)))
    for label, _ in STEPS:
        cells = []
        for s in scenarios:
            for side, _ in sides:
                values = steps[(s, side, label)]
                cells.append(f'{statistics.median(v[0] for v in values):.3f} '
                             f'({max(v[1] for v in values)})')
        print(f'| {label} | ' + ' | '.join(cells) + ' |')


def excluded_tables(node, patterns):
    names = node.psql("SELECT string_agg(tablename, ' ') FROM pg_tables WHERE schemaname = 'public'").split()
    return [n for n in names if replication.is_excluded(n, patterns)], \
           [n for n in names if not replication.is_excluded(n, patterns)]


def empty_sql(node, copied):
    fks = [tuple(r.split('|')) for r in node.psql(
        "SELECT DISTINCT src.relname || '|' || dst.relname FROM pg_constraint k "
        "JOIN pg_class src ON src.oid = k.conrelid JOIN pg_class dst ON dst.oid = k.confrelid "
        "WHERE k.contype = 'f'").splitlines()]
    quick = replication.truncatable(set(copied), fks)
    sql = 'TRUNCATE ' + ', '.join(sorted(quick)) + ';\n'
    sql += ''.join(f'DELETE FROM {t};\n' for t in sorted(set(copied) - quick))
    return sql


def change_one_percent(master):
    master.psql("""
        UPDATE userfeatures SET firstname = firstname || 'x' WHERE id % 100 = 0;
        UPDATE linefeatures SET description = 'changed' WHERE id % 100 = 0;
        UPDATE extensions SET exten = exten || '9' WHERE id % 100 = 0;
        UPDATE voicemail SET fullname = fullname || 'x' WHERE uniqueid % 100 = 0;
        UPDATE func_key_mapping SET label = label || 'x' WHERE func_key_id % 100 = 0;
        UPDATE queuemember SET penalty = 1 WHERE userid % 100 = 0;""")


def reset_slave_config(slave, copied, empty):
    """The slave before its first replication: an installed Wazo of the same version (its
    alembic_version) without the master's configuration."""
    slave.psql('BEGIN; SET session_replication_role = replica; '
               "CREATE TEMP TABLE keep AS SELECT * FROM alembic_version; " + empty +
               ' INSERT INTO alembic_version SELECT * FROM keep; COMMIT;')


def ours(master, slave, *args):
    # byte-compiled modules, as the package installs them (the testbed turns that off)
    env = {'PYTHONDONTWRITEBYTECODE': '', 'PYTHONPYCACHEPREFIX': os.path.join(master.root, 'pycache')}
    wall, rss = timed(master, ['/usr/bin/python3', os.path.join(HERE, '..', 'bin',
                                                               'xivo-master-slave-db-replication'),
                               *args], env=env)
    with open(os.path.join(master.state_dir, 'replication.json')) as f:
        state = json.load(f)['details']
    return wall, rss, state['slave_write_seconds'], len(state['tables_copied']), state['rows']


def baseline(master, slave, exclude_args, empty):
    env = {'SLAVE': slave.ip, 'MASTER_SOCK': master.pgsock, 'EXCLUDE_ARGS': exclude_args,
           'PASSFILE': master.passfile,
           'EMPTY_SQL': empty}
    wall, rss = timed(master, ['bash', '-c', BASELINE_LOAD], env=env)
    return wall, rss, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--users', type=int, default=20000)
    parser.add_argument('--history', type=int, default=2000000)
    parser.add_argument('--repeat', type=int, default=5, help='runs per scenario (best kept)')
    parser.add_argument('--profile', action='store_true',
                        help='no baseline: time the steps of our runs (cProfile)')
    parser.add_argument('--against', metavar='TREE',
                        help="with --profile: also time this checkout's command (an older commit)")
    args = parser.parse_args()
    cleanup_leftovers()
    workdir = os.environ.get('TMPDIR', '/tmp')
    import tempfile
    base = tempfile.mkdtemp(prefix='wazo-ha-bench-', dir=workdir)
    os.chmod(base, 0o755)
    bed = Testbed(base, template_cluster(base))
    try:
        bed.start()
        master, slave = bed.add_node('master', 1), bed.add_node('slave', 2)
        for node in (master, slave):
            # PostgreSQL's durability defaults (the test clusters turn them off for speed):
            # commits and index builds pay their fsync as on a real Wazo
            node.psql('ALTER SYSTEM SET fsync = on')
            node.psql('ALTER SYSTEM SET synchronous_commit = on')
            node.psql('ALTER SYSTEM SET full_page_writes = on')
            node.stop_postgres()
            node.start_postgres()
            assert node.psql('SHOW fsync') == 'on'
        print(f'generating: {args.users} users, {args.history} CEL rows (+ call logs, queue logs)',
              flush=True)
        t = time.monotonic()
        master.psql(installation_sql(args.users, args.history))
        slave.psql(installation_sql(0, args.history // 2, groups=0))
        print(f'generated in {time.monotonic() - t:.0f} s', flush=True)
        configure(master, slave)  # both roles, then wazo-sync -i (the database password)
        patterns = settings_module.load(master.config).database.excluded_tables
        excluded, copied = excluded_tables(master, patterns)
        exclude_args = ' '.join(f'--exclude-table-data=public.{t}' for t in excluded)
        empty = empty_sql(master, copied)
        rows = master.psql('SELECT ' + ' + '.join(f'(SELECT count(*) FROM {t})' for t in copied))
        hist = master.psql('SELECT (SELECT count(*) FROM cel) + (SELECT count(*) FROM call_logd_call_log)'
                           ' + (SELECT count(*) FROM queue_log)')
        print(f'{len(copied)} copied tables ({rows} rows), {len(excluded)} excluded ({hist} rows on the master)\n',
              flush=True)

        if args.profile:
            profile(master, slave, copied, empty, args.repeat, args.against)
            return
        results = {}
        for scenario in ('full copy', 'no change', '1% changed', 'verification'):
            best_ours, best_base = None, None
            for _ in range(args.repeat):
                # baseline: always a whole dump and load
                if scenario == 'full copy':
                    reset_slave_config(slave, copied, empty)
                b = baseline(master, slave, exclude_args, empty)
                best_base = b if best_base is None or b[0] < best_base[0] else best_base
                # ours, from the same starting point
                if scenario == 'full copy':
                    reset_slave_config(slave, copied, empty)
                elif scenario == '1% changed':
                    ours(master, slave)          # slave equal to the master
                    change_one_percent(master)
                else:
                    ours(master, slave)
                o = ours(master, slave, *(['--verify'] if scenario == 'verification' else []))
                best_ours = o if best_ours is None or o[0] < best_ours[0] else best_ours
            results[scenario] = (best_base, best_ours)
            print(f'{scenario}: baseline {best_base[0]:.2f} s, wazo-ha {best_ours[0]:.2f} s', flush=True)

        print()
        print('| scenario | baseline wall (s) | wazo-ha wall (s) | ratio | baseline peak RSS (MB) '
              '| wazo-ha peak RSS (MB) | baseline slave lock (s) | wazo-ha slave lock (s) '
              '| tables rewritten | rows written |')
        print('|---|---|---|---|---|---|---|---|---|---|')
        for scenario, (b, o) in results.items():
            print(f'| {scenario} | {b[0]:.2f} | {o[0]:.2f} | {o[0] / b[0]:.2f} | {b[1] / 1024:.0f} '
                  f'| {o[1] / 1024:.0f} | {b[2]:.2f} | {o[2]:.2f} | {o[3]} | {o[4]} |')
    finally:
        bed.close()
        import shutil
        shutil.rmtree(base, ignore_errors=True)


if __name__ == '__main__':
    main()
