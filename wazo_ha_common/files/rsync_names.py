"""The rsync daemon's name converter on the slave (rsyncd.conf `name converter`).

A chrooted module cannot read /etc/passwd, so the daemon asks this program, started before the
chroot, to map owners between names and ids: files keep their owner by name, as a plain rsync
over SSH does. One request a line on stdin: `uid N` or `gid N` (answer the name), `usr NAME` or
`grp NAME` (answer the number); an unknown one gets an empty line. Anything before a NUL byte
on a line (the request's arguments, which some rsync versions send first) is skipped.
Standalone: run as a script, it imports nothing of the package."""

import grp
import pwd
import sys

LOOKUPS = {
    'uid': lambda arg: pwd.getpwuid(int(arg)).pw_name,
    'gid': lambda arg: grp.getgrgid(int(arg)).gr_name,
    'usr': lambda arg: pwd.getpwnam(arg).pw_uid,
    'grp': lambda arg: grp.getgrnam(arg).gr_gid,
}


def answer(line: str) -> str:
    request = line.rsplit('\0', 1)[-1].strip()
    what, _, arg = request.partition(' ')
    try:
        return str(LOOKUPS[what](arg))
    except (KeyError, ValueError, OverflowError):
        return ''


def main() -> int:
    for line in sys.stdin:
        if line.rsplit('\0', 1)[-1].strip():
            print(answer(line), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
