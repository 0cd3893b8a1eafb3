"""The node's HA role: /etc/xivo/ha.conf, the is-primary/is-secondary sentinels, the peer's
address (resolve_peer)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from dataclasses import dataclass
from typing import Iterable

from .adapters.system import write_atomic
from .decisions.addresses import parse_ip, shown
from .errors import HaConfError, InputError, WrongRoleError
from .settings import Settings

NODE_TYPES = ('master', 'slave', 'disabled')
PRIMARY = 'is-primary'
SECONDARY = 'is-secondary'


@dataclass(frozen=True)
class HaConfig:
    node_type: str
    remote_address: str

    def as_json(self) -> dict:
        return {'node_type': self.node_type, 'remote_address': self.remote_address}


DISABLED = HaConfig('disabled', '')


def local_addresses() -> set[str]:
    """Every address configured on this node's interfaces."""
    import netifaces
    found = set()
    for iface in netifaces.interfaces():
        for family in (netifaces.AF_INET, netifaces.AF_INET6):
            for entry in netifaces.ifaddresses(iface).get(family, []):
                addr = entry.get('addr', '').split('%')[0]
                with contextlib.suppress(ValueError):
                    found.add(str(ipaddress.ip_address(addr)))
    return found


def validate_peer(text: str, own: Iterable[str] | None = None) -> str:
    """Check an address given for the other node; returns it normalised."""
    ip = parse_ip(text)
    own_addresses = set(own) if own is not None else local_addresses()
    if str(ip) in own_addresses:
        raise InputError(f'{ip} is an address of this node, not of the other node')
    return str(ip)


def validate(body: object, own: Iterable[str] | None = None) -> HaConfig:
    """Validate a PUT /ha body the way wazo-confd does, plus the own-address check."""
    if not isinstance(body, dict):
        raise InputError('the HA configuration must be a JSON object')
    unknown = set(body) - {'node_type', 'remote_address'}
    if unknown:
        raise InputError(f'unknown field(s): {shown(", ".join(sorted(map(str, unknown))))}')
    node_type = body.get('node_type')
    if node_type not in NODE_TYPES:
        raise InputError(f'node_type must be one of {", ".join(NODE_TYPES)}, not {shown(node_type)}')
    remote = body.get('remote_address') or ''
    if node_type == 'disabled':
        if remote:
            remote = str(parse_ip(remote))
        return HaConfig(node_type, remote)
    if not remote:
        raise InputError(f'remote_address is required for node_type {node_type}')
    return HaConfig(node_type, validate_peer(remote, own))


def load(path: str) -> HaConfig:
    """Read ha.conf; missing, unreadable or corrupt is an error naming the file."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except FileNotFoundError:
        raise HaConfError(f'{path} does not exist: HA is not configured on this node '
                          '(see wazo-ha-config set)') from None
    except (OSError, UnicodeDecodeError) as e:
        raise HaConfError(f'{path} cannot be read: {e}') from None
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise HaConfError(f'{path} is corrupt (not JSON: {shown(str(e))}); fix it with '
                          'wazo-ha-config set') from None
    if isinstance(body, dict) and body.get('node_type') == 'disabled':
        body = {'node_type': 'disabled', 'remote_address': body.get('remote_address') or ''}
    try:
        return validate(body, own=())
    except InputError as e:
        raise HaConfError(f'{path} is corrupt: {e}; fix it with wazo-ha-config set') from None


def load_or_disabled(path: str) -> HaConfig:
    """ha.conf; a node without one is not configured for HA: disabled. Corrupt: HaConfError."""
    if not os.path.exists(path):
        return DISABLED
    return load(path)


def save(path: str, config: HaConfig) -> None:
    write_atomic(path, json.dumps(config.as_json()) + '\n', mode=0o644)


def sentinel_paths(sentinel_dir: str) -> dict[str, str]:
    return {name: os.path.join(sentinel_dir, name) for name in (PRIMARY, SECONDARY)}


def wanted_sentinel(node_type: str) -> str | None:
    return {'master': PRIMARY, 'slave': SECONDARY}.get(node_type)


def current_sentinels(sentinel_dir: str) -> set[str]:
    return {name for name, path in sentinel_paths(sentinel_dir).items() if os.path.exists(path)}


def apply_sentinels(sentinel_dir: str, node_type: str) -> list[str]:
    """Make the sentinels match the role; returns what changed. The new one appears last,
    after the other is gone, so both never exist at once."""
    wanted = wanted_sentinel(node_type)
    changes = []
    for name, path in sentinel_paths(sentinel_dir).items():
        if name != wanted and os.path.exists(path):
            os.unlink(path)
            changes.append(f'removed {path}')
    if wanted:
        path = sentinel_paths(sentinel_dir)[wanted]
        if not os.path.exists(path):
            os.makedirs(sentinel_dir, exist_ok=True)
            with open(path, 'w'):
                pass
            changes.append(f'created {path}')
    return changes


def require_role(ha_conf: str, sentinel_dir: str, role: str, what: str) -> HaConfig:
    """ha.conf when this node has `role`; WrongRoleError (nothing done, exit 0) otherwise.

    A slave must also hold the is-secondary sentinel: wazo-sysconfd writes the sentinels
    last, and removing it is how HA is switched off (WAZO-2858)."""
    if role == 'slave' and not is_secondary(sentinel_dir):
        raise WrongRoleError(f'this node is not a slave (no {SECONDARY} sentinel): '
                             f'{what} runs on the slave only; nothing done')
    config = load(ha_conf)
    if config.node_type != role:
        raise WrongRoleError(f'this node is not a {role} (ha.conf says {config.node_type}): '
                             f'{what} runs on the {role} only; nothing done')
    return config


def is_secondary(sentinel_dir: str) -> bool:
    return os.path.exists(sentinel_paths(sentinel_dir)[SECONDARY])


PEER = {'slave': 'master', 'master': 'slave'}


def resolve_peer(settings: Settings, argument: str | None, node_type: str, what: str) -> str:
    """The other node's address in ha.conf (the master seen from a slave, the slave from a
    master); `argument`, when given, must be that address. WrongRoleError (`what` runs on a
    `node_type`) on any other node."""
    config = require_role(settings.paths.ha_conf, settings.paths.sentinel_dir, node_type, what)
    if argument is None:
        return validate_peer(config.remote_address)  # never this node itself
    ip = validate_peer(argument)
    if ip != config.remote_address:
        raise InputError(f'{ip} is not the {PEER[node_type]} configured in ha.conf '
                         f'({config.remote_address}); nothing done')
    return ip
