#!/usr/bin/python3
"""make demo: a two-node Wazo HA cluster in network namespaces, from set-up to failback.

Run as root on Debian 12. Everything it creates (namespaces, PostgreSQL clusters, sshd,
temporary files) is removed at the end, also on Ctrl-C."""

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from story import FILES, VOICEMAIL, Story  # noqa: E402


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
    failover = failback = point = None
    try:
        story.say('== building the cluster')
        story.build()
        story.generate()
        story.say('== configuring HA (what PUT /ha does)')
        story.configure()
        show_status(story, story.master, 'configured')
        story.say('== file synchronisation set-up, first replication and sync')
        story.sync_init()
        first = story.replicate('replication, first (full copy)')
        if args.setup_only:
            return first.returncode
        story.replicate('replication, nothing changed')
        story.change_one_user()
        story.replicate('replication, one user renamed')
        story.write_files()
        story.sync()
        same = all(open(story.master.host_path(p)).read() == open(story.slave.host_path(p)).read()
                   for p in FILES)
        story.say(f'    files on the slave equal to the master: {same}')
        show_status(story, story.master, 'replicated and synced')
        story.say('== the slave watches the master')
        story.start_cron()
        show_status(story, story.slave, 'standby')
        if args.phones:
            story.say('== the phones')
            story.start_phones()
        story.say('== the master dies')
        failover = story.master_dies()
        show_status(story, story.slave, 'after failover')
        story.voicemail_left_on_slave()
        story.say('== the master comes back')
        failback = story.master_returns()
        show_status(story, story.slave, 'after failback')
        story.sync_after_failback()
        story.say(f'    voicemail back on the master, without wazo-sync --failback by hand: '
                  f'{os.path.exists(story.master.host_path(VOICEMAIL))}')
        again = story.sync_after_failback()
        story.say(f'    the next sync brings nothing back again (once per failover): '
                  f'{"brought back" not in again.stdout}')
        story.say('== continuous replication ([database] mode = continuous)')
        story.go_continuous()
        point = story.recovery_point('Streamed')
        story.last_seconds_survive('LastMinute')
        show_status(story, story.slave, 'streaming')
    except KeyboardInterrupt:
        story.say('interrupted: cleaning up')
        return 130
    finally:
        story.close()
    story.say('\n== timeline')
    for at, event in story.timeline:
        story.say(f'  {at:7.1f} s  {event}')
    mode = 'fast settings' if args.fast else 'default settings'
    story.say(f'\n== summary ({mode}: probe every {story.check["probe_interval"]} s, down after '
              f'{story.check["down_after"]} s, up after {story.check["up_after"]} s)')
    story.say(f'  failover: {failover:.1f} s after the master died' if failover else
              '  failover: did not happen')
    story.say(f'  failback: {failback:.1f} s after the master came back' if failback else
              '  failback: did not happen')
    figures = story.phones_figures
    if 'failover_in_p95' in figures:
        story.say(f'  {args.phones} phones: calls reach them again '
                  f'{figures["failover_in_p95"]:.0f} s after the master died (p95)'
                  + (', none unreachable at failback' if figures.get('failback_unreachable') == 0
                     else f', {figures.get("failback_unreachable", "?")} unreachable at failback')
                  + (' (none through the master alone after the slave stopped)'
                     if figures.get('master_alone_unreachable') == 0 else
                     f' ({figures.get("master_alone_unreachable", "?")} through the master alone '
                     'after the slave stopped)'))
    story.say(f'  continuous mode: a change on the master reached the slave {point:.2f} s later'
              if point is not None else '  continuous mode: the change did not reach the slave')
    story.say('  everything the demo created has been removed')
    return 0 if failover and failback and point is not None else 1


if __name__ == '__main__':
    sys.exit(main())
