"""Testbeds built once a session and put back to a recorded baseline before each test.

Building a configured pair costs seconds (two clusters copied and started, roles, pg_hba,
PostgreSQL restarts, the pairing over ssh, data, a first copy or hand-off); putting it back
costs a cluster restart. A shared testbed has a fixed layout (its nodes); a baseline is what
its nodes were once a shape was built on them ('bare': just built; 'replication-ha':
configured, paired, with data...), recorded per node:
- every file of the node (its root: the bind-mounted directories, settings, state, locks,
  logs, mails, stand-ins and their records, the cluster's data directory, copied while
  PostgreSQL is stopped), with a digest of each;
- the mounts of its mount namespace, its links, addresses and routes (and the hub's side);
- which daemons ran (PostgreSQL, sshd) and the Node object's attributes.

reset() ends every process of the nodes, brings the links up, unmounts what a test mounted,
restores the files, starts the daemons again and then checks all of the above against the
baseline: a test that leaves something a reset cannot undo makes the next reset fail loudly
(mark such a test `fresh_testbed`: it gets a testbed of its own).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from typing import Callable

from testbed import Node, Testbed, _kill_netns, sh

# (name, host number, with PostgreSQL): the layouts the shared testbeds are built in
NODES = (('master', 1, False), ('slave', 2, False))
PG = (('master', 1, True), ('slave', 2, True), ('other', 3, False))
SYNC = (('master', 1, False), ('slave', 2, True))

# what a restart makes anew and a baseline must not hold: sshd's pid file (start_sshd waits
# for it), the cluster's sockets and lock files (gone after a clean stop anyway)
# what this run's shared testbeds did (printed at the end of the run by conftest)
STATS = {'layouts': 0, 'baselines': 0, 'resets': 0, 'fresh': 0}
NOT_RECORDED = ('sshd/sshd.pid',)
CLUSTER_DATA = 'pg/data/'
HOST_MANAGED = ('/run/netns/', '/run/wazo-ha-testbed-')


def _digest(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha1').hexdigest()


def file_manifest(top: str) -> dict[str, tuple]:
    """relative path -> (type, mode, uid, gid, what), for every entry under top (top itself
    as '.'), never following a link; what: a link's target, a file's content digest, or for
    the files of a cluster's data directory (a thousand relation files) their size and
    modification time, which any write changes and which the restore puts back."""
    found = {}
    top = os.path.normpath(top)
    for dirpath, dirnames, filenames in os.walk(top):
        # (relative paths by slicing: os.path.relpath, ten thousand times a reset, cost more
        # than the walk itself)
        below = '' if dirpath == top else dirpath[len(top) + 1:] + '/'
        for name in ['.'] + dirnames + filenames if dirpath == top else dirnames + filenames:
            path = top if name == '.' and not below else dirpath + '/' + name
            rel = below + name
            if rel in NOT_RECORDED:
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISREG(st.st_mode) and not rel.startswith(CLUSTER_DATA):
                what = _digest(path)
            elif stat.S_ISDIR(st.st_mode):  # (a directory's size only ever grows)
                what = str(st.st_mtime_ns)
            else:
                what = f'{st.st_size} {st.st_mtime_ns}'
            found[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                          st.st_gid, what)
    return found


def _mounts(node: Node) -> list[tuple[str, str]]:
    """(root, mount point) of the mounts of the node's mount namespace, in order, but for the
    network namespaces and testbed directories of the host (they come and go with testbeds)."""
    info = sh(*node.nsenter(['cat', '/proc/self/mountinfo'])).stdout
    return [(line.split()[3], line.split()[4]) for line in info.splitlines()
            if not line.split()[4].startswith(HOST_MANAGED)]


def _network(node: Node) -> list[str]:
    """The node's links, addresses and routes, its firewall, and the hub's end of its link."""
    ns = ['ip', '-n', node.ns, '-4']
    out = [sh(*ns, '-br', 'addr').stdout, sh(*ns, 'route', 'show', 'table', 'all').stdout,
           sh('bridge', '-n', node.bed.hub, 'link', 'show', 'dev', node.hub_if).stdout]
    if shutil.which('nft'):
        out.append(sh('nsenter', f'--net=/run/netns/{node.ns}', '--', 'nft', 'list',
                      'ruleset').stdout)
    return out


def _settled_network(node: Node, expected: list[str], timeout: float = 5.0) -> list[str]:
    """The node's network once it equals `expected`, or as it is after `timeout` seconds: a
    link brought up reaches its operational state (and the bridge port its forwarding state)
    asynchronously, within a second."""
    deadline = time.monotonic() + timeout
    while True:
        found = _network(node)
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _processes(node: Node) -> list[str]:
    """'pid comm uid' of every process in the node's network namespace."""
    out = []
    for pid in sh('ip', 'netns', 'pids', node.ns, check=False).stdout.split():
        with contextlib.suppress(OSError):
            with open(f'/proc/{pid}/status') as f:
                fields = dict(line.split(':', 1) for line in f if ':' in line)
            out.append(f"{pid} {fields['Name'].strip()} {fields['Uid'].split()[0]}")
    return out


@dataclass
class NodeBaseline:
    files: dict[str, tuple]
    mounts: list[tuple[str, str]]
    network: list[str]
    sshd: bool
    attributes: dict = field(repr=False)


@dataclass
class Baseline:
    name: str
    directory: str
    nodes: dict[str, NodeBaseline]
    ready: Callable[..., object] | None = None


class SharedBed:
    """One testbed of a given layout, kept for the session, and its baselines."""

    def __init__(self, workdir: str, template: str, layout: tuple):
        self.layout = layout
        self.bed = Testbed(workdir, template)
        self.baselines: dict[str, Baseline] = {}
        self.last_user = 'its set-up'  # the test that had the nodes last (named on a failure)
        STATS['layouts'] += 1
        try:
            self.bed.start()
            self.nodes = tuple(self.bed.add_node(name, host, with_postgres=pg)
                               for name, host, pg in layout)
            self._capture('bare', None)
        except BaseException:
            self.bed.close()
            raise

    def use(self, name: str, build: Callable | None = None,
            ready: Callable | None = None) -> tuple[Node, ...]:
        """The nodes at baseline `name`: built on the bare nodes the first time (build(*nodes)),
        then recorded; every later use resets them to it (and checks they are)."""
        if name in self.baselines:
            self.reset(name)
        else:
            self.reset('bare')
            if build is not None:
                build(*self.nodes)
            self._capture(name, ready)
            self._check_ready(self.baselines[name])
        return self.nodes

    # recording

    def _stop(self) -> None:
        for node in reversed(self.nodes):
            if node.with_postgres and os.path.exists(os.path.join(node.pgdata, 'postmaster.pid')):
                node.stop_postgres('fast')

    def _start(self, baseline: Baseline) -> None:
        for node in self.nodes:
            if node.with_postgres:
                node.start_postgres()
            # (on a capture, the sshd the build started still runs: kept, not started twice)
            if baseline.nodes[node.name].sshd and node.sshd_pid is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(node.root, 'sshd', 'sshd.pid'))
                node.start_sshd()

    def _capture(self, name: str, ready: Callable | None) -> None:
        directory = os.path.join(self.bed.workdir, 'baselines', name)
        self._stop()
        recorded = {}
        for node in self.nodes:
            extra = self._unexpected_processes(node, sshd=node.sshd_pid is not None)
            assert not extra, f'baseline {name}: {node.name} runs more than its daemons: {extra}'
            copy = os.path.join(directory, node.name)
            os.makedirs(copy)
            bare = os.path.join(self.bed.workdir, 'baselines', 'bare', node.name)
            # (what the shape left as the bare node had it is a hard link to the bare copy)
            _rsync(node.root, copy, *([f'--link-dest={bare}'] if name != 'bare' else []))
            recorded[node.name] = NodeBaseline(
                files=file_manifest(copy), mounts=_mounts(node), network=_network(node),
                sshd=node.sshd_pid is not None, attributes=dict(vars(node)))
        baseline = Baseline(name, directory, recorded, ready)
        self.baselines[name] = baseline
        STATS['baselines'] += 1
        self._start(baseline)

    # resetting

    def reset(self, name: str) -> None:
        """Every node back to baseline `name`, checked."""
        baseline = self.baselines[name]
        STATS['resets'] += 1
        added = [n for n in self.bed.nodes if n not in baseline.nodes]
        for extra in added:  # a node the test added to the shared testbed: gone, and said
            self.bed.nodes.pop(extra).teardown()
        for node in reversed(self.nodes):
            node.stop_sip_server()
            if node.with_postgres and os.path.exists(os.path.join(node.pgdata, 'postmaster.pid')):
                sh(*node.nsenter(node._pg_ctl('-m', 'immediate', '-w', 'stop')), check=False,
                   timeout=30)
            _kill_netns(node.ns)
        for node in self.nodes:
            recorded = baseline.nodes[node.name]
            node.__dict__.clear()
            node.__dict__.update(recorded.attributes)
            node.sshd_pid, node.sip_server = None, None
            node.link(up=True)
            self._unmount_extras(node, recorded.mounts)
            _rsync(os.path.join(baseline.directory, node.name), node.root)
        problems = [f'node {extra} was added' for extra in added]
        for node in self.nodes:
            recorded = baseline.nodes[node.name]
            problems += [f'{node.name}: {p}' for p in _differences(
                recorded.files, file_manifest(node.root), 'file')]
            if _mounts(node) != recorded.mounts:
                problems.append(f'{node.name}: mounts {_mounts(node)} != {recorded.mounts}')
            network = _settled_network(node, recorded.network)
            if network != recorded.network:
                problems.append(f'{node.name}: network {network} != {recorded.network}')
        self._fail_if(name, problems)
        self._start(baseline)
        for node in self.nodes:
            extra = self._unexpected_processes(node, sshd=baseline.nodes[node.name].sshd)
            if extra:  # (pg_ctl -w start waited for the cluster to accept connections)
                problems.append(f'{node.name}: processes besides its daemons: {extra}')
        self._fail_if(name, problems)
        self._check_ready(baseline)

    def _check_ready(self, baseline: Baseline) -> None:
        if baseline.ready is not None:
            self._fail_if(baseline.name, [] if baseline.ready(*self.nodes) else
                          [f'not ready: {baseline.ready.__doc__ or baseline.ready}'])

    def _fail_if(self, name: str, problems: list[str]) -> None:
        if problems:
            raise AssertionError(f'reset to baseline {name} after {self.last_user} failed '
                                 f'(mark that test fresh_testbed if it damages what a reset '
                                 f'cannot restore): ' + '; '.join(problems[:10]))

    @staticmethod
    def _unmount_extras(node: Node, recorded: list[tuple[str, str]]) -> None:
        for _, point in reversed([m for m in _mounts(node) if m not in recorded]):
            sh(*node.nsenter(['umount', '-l', point]), check=False)

    @staticmethod
    def _unexpected_processes(node: Node, sshd: bool) -> list[str]:
        """Processes of the node other than its cluster's (user postgres) and its sshd."""
        postgres = str(_uid('postgres'))
        return [p for p in _processes(node)
                if p.split()[2] != postgres and not (sshd and p.split()[0] == str(node.sshd_pid))]

    def close(self) -> None:
        self.bed.close()


def _uid(user: str) -> int:
    import pwd
    return pwd.getpwnam(user).pw_uid


def _rsync(source: str, target: str, *options: str) -> None:
    """target becomes an exact copy of source (owners, modes, times, links, devices), in
    place: the directories and files bind-mounted into a node (/etc/shadow) stay the same."""
    # --modify-window=-1: times compared to the nanosecond (the default, whole seconds, takes a
    # file written in the second of its baseline for unchanged)
    sh('rsync', '-a', '--delete', '--inplace', '--numeric-ids', '--modify-window=-1',
       *(f'--exclude=/{p}' for p in NOT_RECORDED), *options, source + '/', target + '/')


def _differences(expected: dict, found: dict, what: str) -> list[str]:
    out = [f'{what} {p} is missing' for p in sorted(expected.keys() - found.keys())]
    out += [f'{what} {p} was added' for p in sorted(found.keys() - expected.keys())]
    out += [f'{what} {p} differs: {found[p]}, not {expected[p]}'
            for p in sorted(expected.keys() & found.keys()) if expected[p] != found[p]]
    return out


class SharedBeds:
    """The session's shared testbeds, one per layout, built when first used."""

    def __init__(self, workdir: str, template: str):
        self.workdir, self.template = workdir, template
        self.beds: dict[tuple, SharedBed] = {}

    def use(self, layout: tuple, name: str, build: Callable | None = None,
            ready: Callable | None = None, user: str = 'a test') -> tuple[Node, ...]:
        """The nodes of the layout's shared testbed at baseline `name`. A testbed whose reset
        failed is closed (the test fails, saying why) and the next test gets a new one."""
        if layout not in self.beds:
            self.beds[layout] = SharedBed(self.workdir, self.template, layout)
        try:
            return self.beds[layout].use(name, build, ready)
        except BaseException:
            self.beds.pop(layout).close()
            raise
        finally:
            if layout in self.beds:
                self.beds[layout].last_user = user

    def close(self) -> None:
        while self.beds:
            _, shared = self.beds.popitem()
            shared.close()


def shaped(request, layout: tuple, name: str, build: Callable | None = None,
           ready: Callable | None = None) -> tuple[Node, ...]:
    """The nodes of `layout` at baseline `name` (made by build(*nodes) on bare nodes): the
    session's shared testbed reset to it, or, for a test marked fresh_testbed (or with
    --fresh-testbeds), a testbed of the test's own built the same way."""
    if request.node.get_closest_marker('fresh_testbed') or \
            request.config.getoption('fresh_testbeds'):
        bed = request.getfixturevalue('bed')
        nodes = tuple(bed.add_node(node, host, with_postgres=pg) for node, host, pg in layout)
        if build is not None:
            build(*nodes)
        assert ready is None or ready(*nodes), f'{name}: not ready'
        return nodes
    return request.getfixturevalue('shared_beds').use(layout, name, build, ready,
                                                      request.node.nodeid)
