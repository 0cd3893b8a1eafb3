"""What the master's SSH key may do on the slave: rsync daemon modules, one per directory.

The key's forced command on the slave is `rsync --server --daemon --config=FILE .`: whatever
the client asks, it talks to an rsync daemon that only knows these modules. Each synced
directory is a write-only module, each failback directory a read-only one; every module is
chrooted into its directory, so no path, `..` or symlink reaches outside it. A directory given
as a pattern (tenants/*/acd) becomes one module at the fixed part of the path with a daemon
filter that admits the matching subdirectories only. Uploaded symlinks are stored munged in
every write module (a root program of the slave following one would otherwise write where the
key cannot); devices, special files, extended attributes (file capabilities) and ACLs are
refused and set-uid/set-gid bits dropped.

Pure functions: the slave renders the configuration, the master plans its transfers."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Callable

PUSH, PULL = 'push', 'pull'
# the read-only module holding the slave's record of the telephony it served (see failback)
RECORD = 'failback-record'
# -a without -D: the daemon refuses devices and special files
TRANSFER_OPTIONS = ('-rlptgo',)


@dataclass(frozen=True)
class Module:
    name: str
    path: str                   # the directory the daemon chroots into
    write: bool                 # write-only (push) or read-only (pull)
    patterns: tuple[str, ...]   # subdirectories admitted, relative ('' = the whole directory)

    @property
    def filter_rules(self) -> list[str]:
        """Daemon filter: the parents of each admitted subdirectory, then it whole."""
        if '' in self.patterns:
            return []
        rules = []
        for pattern in self.patterns:
            parts = pattern.split('/')
            for depth in range(1, len(parts)):
                rule = '+ /' + '/'.join(parts[:depth]) + '/'
                if rule not in rules:
                    rules.append(rule)
            rules.append(f'+ /{pattern}/***')
        return rules + ['- *']


def split_pattern(entry: str) -> tuple[str, str]:
    """(fixed directory, pattern below it): /a/b/*/c -> ('/a/b', '*/c'); /a/b -> ('/a/b', '')."""
    parts = entry.strip('/').split('/')
    for i, part in enumerate(parts):
        if glob.has_magic(part):
            return '/' + '/'.join(parts[:i]), '/'.join(parts[i:])
    return '/' + '/'.join(parts), ''


def module_name(kind: str, path: str) -> str:
    return f'{kind}.' + (path.strip('/').replace('/', '.') or 'root')


def modules(directories: tuple[str, ...], failback: tuple[str, ...],
            record_dir: str | None = None) -> list[Module]:
    """The daemon's modules for these settings, in a stable order; the record directory is
    a read-only module of its own (RECORD), not one of the failback directories."""
    out = []
    for kind, entries in ((PUSH, directories), (PULL, failback)):
        grouped: dict[str, list[str]] = {}
        for entry in entries:
            root, pattern = split_pattern(entry)
            grouped.setdefault(root, [])
            if pattern not in grouped[root]:
                grouped[root].append(pattern)
        for root, patterns in grouped.items():
            out.append(Module(module_name(kind, root), root, kind == PUSH, tuple(patterns)))
    if record_dir:
        out.append(Module(RECORD, record_dir, False, ('',)))
    return out


def render_config(mods: list[Module], name_converter: str) -> str:
    """rsyncd.conf for the slave (the forced command of the master's key reads it)."""
    lines = ['# Written by wazo-ha (wazo-ha-config on a slave, kept in step by the master check).',
             '# The master\'s SSH key runs "rsync --server --daemon" with this file: it can only',
             '# write the synced directories and read the failback ones, nothing else.',
             'uid = 0', 'gid = 0', 'use chroot = yes', 'numeric ids = no',
             f'name converter = {name_converter}', 'list = no',
             'refuse options = D devices specials write-devices copy-devices X xattrs A acls',
             'incoming chmod = ug-s', 'reverse lookup = no', '']
    for m in mods:
        lines += [f'[{m.name}]', f'path = {m.path}',
                  f'read only = {"no" if m.write else "yes"}',
                  f'write only = {"yes" if m.write else "no"}']
        if m.filter_rules:
            lines.append(f'filter = {" ".join(m.filter_rules)}')
        if m.write:  # a symlink stored as sent could lead a root program of the slave anywhere
            lines.append('munge symlinks = yes')
        lines.append('')
    return '\n'.join(lines)


def push_plan(mods: list[Module], exists: Callable[[str], bool],
              expand: Callable[[str], list[str]]) -> list[tuple[Module, list[str]]]:
    """For each write module, the sources to send (`ROOT/./RELATIVE`, for rsync -R), keeping
    only what exists on this node now (`exists`: a directory there; `expand`: the paths a
    pattern matches there); modules with nothing to send are left out."""
    plan = []
    for m in mods:
        if not m.write:
            continue
        sources = []
        for pattern in m.patterns:
            if not pattern:
                found = [m.path] if exists(m.path) else []
            else:
                found = [p for p in sorted(expand(os.path.join(m.path, pattern))) if exists(p)]
            for path in found:
                relative = os.path.relpath(path, m.path)
                source = f'{m.path}/./' if relative == '.' else f'{m.path}/./{relative}'
                if source not in sources:
                    sources.append(source)
        if sources:
            plan.append((m, sources))
    return plan
