#!/usr/bin/python3
"""make demo: a two-node Wazo HA cluster in network namespaces, from set-up to failback.

Run as root on Debian 12. Everything it creates (namespaces, PostgreSQL clusters, sshd,
temporary files) is removed at the end, also on Ctrl-C."""

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from story import FILES, SLOT_WAIT, VOICEMAIL, Story  # noqa: E402


def show_status(story, node, stage):
    code, data = story.status(node)
    warnings = '; '.join(data['warnings']) or 'no warning'
    story.say(f'    wazo-ha-status on the {node.name} ({stage}): {data["status"]} '
              f'(exit {code}) - {warnings}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--fast', action='store_true',
                        help='short detection times (probe 1 s, down after 3 s, up after 6 s, '
                             'cron every 10 s) instead of the defaults')
    parser.add_argument('--users', type=int, default=2000)
    parser.add_argument('--phones', type=int, default=20,
                        help='SIP phones registering on the nodes (0: none); their figures '
                             'end the failover and failback stages')
    parser.add_argument('--setup-only', action='store_true',
                        help='the first stage only: build the nodes, configure HA, replicate '
                             'once, then clean up')
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit('demo: run as root (it creates network namespaces and PostgreSQL clusters)')

    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started with SIGINT ignored (in background)

    story = Story(fast=args.fast, users=args.users, phones=args.phones)
    claims: dict[str, bool] = {}   # each stage's claim: met or not (the exit code)
    figures: dict[str, float | None] = {}
    try:
        story.say('== building the cluster (default settings: no [database] mode written)')
        story.build()
        story.generate()
        story.say('== configuring HA (what PUT /ha does)')
        story.configure()
        show_status(story, story.master, 'configured')
        story.say('== pairing, first replication and sync')
        story.sync_init()
        first = story.replicate('replication, first (full copy)')
        if args.setup_only:
            return first.returncode
        claims['first copy'] = first.returncode == 0
        story.say('== the slave\'s cron minute: the check watches the master, wazo-ha-stream '
                  'streams (continuous replication, the default)')
        story.start_cron()
        handed = story.stream('wazo-ha-stream on the slave')
        figures['stream'] = story.recovery_point('Streamed')
        line = story.in_force(story.slave)
        story.say(f'    wazo-ha-status on the slave: {line}')
        claims['the pair streams'] = handed.returncode == 0 and figures['stream'] is not None \
            and line == 'replication in force: continuous'
        show_status(story, story.slave, 'standby')
        story.replicate('replication while the slave streams')
        story.write_files()
        story.sync()
        same = all(open(story.master.host_path(p)).read() == open(story.slave.host_path(p)).read()
                   for p in FILES)
        story.say(f'    files on the slave equal to the master: {same}')
        claims['files synced'] = same
        show_status(story, story.master, 'streaming and synced')
        if args.phones:
            story.say('== the phones')
            story.start_phones()
        story.say('== the master dies, 2 s after a user was created on it')
        story.user_before_death('LastSeconds')
        failover = figures['failover'] = story.master_dies()
        claims['failover'] = failover is not None
        claims['last-seconds user present after failover'] = bool(failover) and \
            story.user_on_slave('LastSeconds', 'which now serves')
        show_status(story, story.slave, 'after failover')
        story.voicemail_left_on_slave()
        story.say('== the master comes back')
        failback = figures['failback'] = story.master_returns()
        claims['failback'] = failback is not None
        show_status(story, story.slave, 'after failback')
        story.sync_after_failback()
        back = os.path.exists(story.master.host_path(VOICEMAIL))
        story.say(f'    voicemail back on the master, without wazo-sync --failback by hand: {back}')
        again = story.sync_after_failback()
        once = again.returncode == 0 and 'brought back' not in again.stdout
        story.say(f'    the next sync brings nothing back again (once per failover): {once}')
        claims['voicemail back once'] = back and once
        resumed = story.stream('wazo-ha-stream on the slave, which serves no more')
        figures['stream after failback'] = story.recovery_point('AfterFailback')
        claims['the stream resumes after failback'] = resumed.returncode == 0 and \
            figures['stream after failback'] is not None
        story.say('== never worse than hourly: the slave cannot reach the master\'s 5432')
        claims['flow blocked'] = story.block_flow() is not None
        story.new_user('WhileBlocked')
        refused = story.stream('wazo-ha-stream on the slave')
        copied, figures['fallback copy'] = story.fallback_copy()
        arrived = story.user_on_slave('WhileBlocked', 'carried by the copy')
        lines = {node.name: story.in_force(node) for node in (story.master, story.slave)}
        for name, line in lines.items():
            story.say(f'    wazo-ha-status on the {name}: {line}')
        claims['the hourly copy carries the change'] = refused.returncode != 0 and \
            copied.returncode == 0 and 'hourly copy' in copied.stdout and arrived
        claims['status says why, on both nodes'] = all(
            'hourly copies' in line for line in lines.values())
        story.reopen_flow()
        afresh = story.stream('wazo-ha-stream on the slave')
        figures['stream after reopening'] = story.recovery_point('AfterReopen')
        line = story.in_force(story.slave)
        story.say(f'    wazo-ha-status on the slave: {line}')
        claims['the stream resumes afresh'] = afresh.returncode == 0 and \
            'hand-off done' in afresh.stdout and figures['stream after reopening'] is not None \
            and 'continuous' in line
    except KeyboardInterrupt:
        story.say('interrupted: cleaning up')
        return 130
    finally:
        story.close()
    story.say('\n== timeline')
    for at, event in story.timeline:
        story.say(f'  {at:7.1f} s  {event}')
    summary(story, args, claims, figures)
    return 0 if claims and all(claims.values()) else 1


def seconds(value, digits=1):
    return f'{value:.{digits}f} s' if value is not None else 'not measured'


def summary(story, args, claims, figures):
    mode = 'fast settings' if args.fast else 'default settings'
    story.say(f'\n== summary ({mode}: probe every {story.check["probe_interval"]} s, down after '
              f'{story.check["down_after"]} s, up after {story.check["up_after"]} s; '
              'replication: continuous, the default)')
    story.say(f'  stream: a change on the master on the slave {seconds(figures.get("stream"), 2)} '
              f'later (after failback {seconds(figures.get("stream after failback"), 2)}, after '
              f'the flow reopened {seconds(figures.get("stream after reopening"), 2)})')
    failover = figures.get('failover')
    story.say(f'  failover: {failover:.1f} s after the master died' if failover else
              '  failover: did not happen')
    story.say('  a user created 2 s before the master died: present on the slave after failover'
              if claims.get('last-seconds user present after failover') else
              '  a user created 2 s before the master died: MISSING on the slave after failover')
    failback = figures.get('failback')
    story.say(f'  failback: {failback:.1f} s after the master came back' if failback else
              '  failback: did not happen')
    phones = story.phones_figures
    if 'failover_in_p95' in phones:
        story.say(f'  {args.phones} phones: calls reach them again '
                  f'{phones["failover_in_p95"]:.0f} s after the master died (p95)'
                  + (', none unreachable at failback' if phones.get('failback_unreachable') == 0
                     else f', {phones.get("failback_unreachable", "?")} unreachable at failback')
                  + (' (none through the master alone after the slave stopped)'
                     if phones.get('master_alone_unreachable') == 0 else
                     f' ({phones.get("master_alone_unreachable", "?")} through the master alone '
                     'after the slave stopped)'))
    story.say(f'  5432 blocked: the master\'s hourly run copied the change in '
              f'{seconds(figures.get("fallback copy"), 2)} (it watches the inactive slot '
              f'{SLOT_WAIT:g} s first), status said why on both nodes: '
              f'{claims.get("status says why, on both nodes", False)}')
    missed = [name for name, met in claims.items() if not met]
    story.say(f'  claims met: {len(claims) - len(missed)}/{len(claims)}'
              + (f'; NOT MET: {", ".join(missed)}' if missed else ''))
    story.say('  everything the demo created has been removed')


if __name__ == '__main__':
    sys.exit(main())
