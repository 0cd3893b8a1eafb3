"""wazo-ha-config: what PUT /ha does on a Wazo node, applied locally and through the APIs."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from .failover import check, services
from .access import converge
from . import role
from .errors import HaConfError, InputError, WazoHaError
from .settings import Settings
from .adapters.wazo_api import ApiError, Client

logger = logging.getLogger('wazo-ha')

# PJSIP AOR options that stand for chan_sip's minexpiry/maxexpiry/defaultexpiry (the
# documented values: the defaults of [sip]; the settings decide)
EXPIRY_WITH_HA = {'minimum_expiration': '180', 'maximum_expiration': '300',
                  'default_expiration': '240'}
EXPIRY_WITHOUT_HA = {'minimum_expiration': '60', 'maximum_expiration': '3600',
                     'default_expiration': '120'}


@dataclass
class Report:
    changes: list[str] = field(default_factory=list)
    not_applied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# decisions (pure)

def expiry_with_ha(settings: Settings) -> dict:
    """The AOR expiry options of [sip] min_expiry/max_expiry/default_expiry."""
    return {'minimum_expiration': str(settings.sip.min_expiry),
            'maximum_expiration': str(settings.sip.max_expiry),
            'default_expiration': str(settings.sip.default_expiry)}


def wanted_expiry(old: role.HaConfig | None, new: role.HaConfig,
                  with_ha: dict = EXPIRY_WITH_HA) -> dict | None:
    """AOR expiry options to enforce, or None to leave them as they are."""
    if new.node_type != 'disabled':
        return with_ha
    if old is not None and old.node_type != 'disabled':
        return EXPIRY_WITHOUT_HA
    return None


def wanted_backup_registrar(old: role.HaConfig | None, new: role.HaConfig) -> str | None:
    """Backup registrar/proxy host to set ('' = blank), or None to leave registrars alone."""
    if new.node_type == 'master':
        return new.remote_address
    if new.node_type == 'disabled' and (old is None or old.node_type != 'slave'):
        return ''
    return None  # a slave runs no provisioning: the master owns these values


def with_options(options: list, wanted: dict) -> list:
    """aor_section_options with the wanted keys set, other options kept in order."""
    result, seen = [], set()
    for pair in options:
        key = pair[0]
        if key in wanted:
            if key not in seen:
                result.append([key, wanted[key]])
                seen.add(key)
        else:
            result.append(list(pair))
    result.extend([k, v] for k, v in wanted.items() if k not in seen)
    return result


def registrar_update(registrar: dict, backup: str) -> dict | None:
    """The registrar body to PUT, or None when it already has these backup hosts."""
    value = backup or None
    if (registrar.get('backup_host') or None) == value and \
            (registrar.get('proxy_backup_host') or None) == value:
        return None
    body = {k: v for k, v in registrar.items() if k != 'links'}
    body['backup_host'] = value
    body['proxy_backup_host'] = value
    return body


# side effects

def current(settings: Settings) -> role.HaConfig | None:
    """ha.conf as it is, None when it does not exist; corrupt raises HaConfError."""
    try:
        return role.load(settings.paths.ha_conf)
    except HaConfError:
        if not os.path.exists(settings.paths.ha_conf):
            return None
        raise


def apply(settings: Settings, new: role.HaConfig, force: bool = False,
          client: Client | None = None) -> Report:
    """Bring this node to the configuration `new`; safe to repeat."""
    report = Report()
    try:
        old = current(settings)
    except HaConfError as e:
        if not force:
            raise HaConfError(f'{e} (or replace it: wazo-ha-config set --force ...)') from None
        old = None
        report.notes.append(f'{settings.paths.ha_conf} was corrupt and is replaced (--force)')

    client = client or (Client(settings.wazo_api) if settings.wazo_api.enabled else None)
    if client is not None:
        _put_ha(client, new, report)

    try:  # before ha.conf: a refusal (PostgreSQL, a missing file) leaves ha.conf as it was
        access = converge.converge_and_record(settings, new, converge.ALWAYS)
    except (OSError, WazoHaError) as e:
        done = ('wazo-confd has applied PUT /ha (ha.conf, sentinels, its own PostgreSQL lines); '
                'fix the cause and run wazo-ha-config set again' if report.changes
                else 'nothing else changed')
        raise WazoHaError(f'node access (PostgreSQL, rsync daemon) not applied ({done}): '
                          f'{e}') from None
    report.changes += access.changes
    report.not_applied += access.not_applied   # the fail2ban drop-in (see converge)

    if old != new:
        role.save(settings.paths.ha_conf, new)
        report.changes.append(f'{settings.paths.ha_conf}: node_type={new.node_type} '
                              f'remote_address={new.remote_address or "(none)"}')
        # the failover memory is about the master this node watched as a slave: a decision
        # "master down" must not start telephony under another role or master
        if check.forget(settings):
            report.changes.append('failover memory dropped (the role or the master changed)')
    report.changes += role.apply_sentinels(settings.paths.sentinel_dir, new.node_type)
    if new.node_type != 'slave':
        _start_telephony(settings, report)

    _apply_remote(settings, old, new, report, client)
    for line in report.changes:
        logger.info('changed: %s', line)
    for line in report.not_applied:
        logger.error('not applied: %s', line)
    return report


def _start_telephony(settings: Settings, report: Report) -> None:
    """What wazo-sysconfd does for a master or a disabled node: its telephony runs, at boot
    too (a promoted standby serves calls). Already running and enabled: nothing is run."""
    if not services.available():
        report.notes.append('wazo-service not found (not a Wazo node): telephony services '
                            'left as they are')
        return
    outcome = services.start(settings)
    if outcome.done:
        report.changes.append(outcome.sentence())
    if outcome.critical_failed:
        report.not_applied.append('telephony services not started: ' + '; '.join(outcome.failed))
    elif outcome.failed:
        report.notes.append('telephony started; auxiliary steps failed: ' + '; '.join(outcome.failed))


def _put_ha(client: Client, new: role.HaConfig, report: Report) -> None:
    """Through wazo-confd first, so that Wazo's own HA state never disagrees with ours
    (wazo-sysconfd then writes ha.conf, the sentinels and its cron files too)."""
    try:
        current_ha = client.get_ha()
        if current_ha == new.as_json():
            return
        client.put_ha(new.as_json())
        report.changes.append('wazo-confd: PUT /ha accepted')
    except ApiError as e:
        if e.status is not None and 400 <= e.status < 500 and e.status not in (401, 403, 404):
            raise InputError(f'wazo-confd refused this configuration: {e}') from None
        report.notes.append(f'wazo-confd did not take PUT /ha ({e}): the local effects are '
                            'applied by wazo-ha-config alone')


def _apply_remote(settings: Settings, old, new, report: Report, client: Client | None) -> None:
    expiry = wanted_expiry(old, new, expiry_with_ha(settings))
    backup = wanted_backup_registrar(old, new)
    if expiry is None and backup is None:
        return
    if not settings.wazo_api.enabled:
        report.notes.append('Wazo APIs disabled by [wazo_api] enabled: SIP expiry and backup '
                            'registrar left to the administrator')
        return
    client = client or Client(settings.wazo_api)
    if expiry is not None:
        try:
            report.changes += _apply_expiry(client, expiry)
        except ApiError as e:
            report.not_applied.append(f'SIP expiry {_describe(expiry)}: {e}')
    if backup is not None:
        try:
            report.changes += _apply_backup(client, backup)
        except ApiError as e:
            report.not_applied.append(f'backup registrar/proxy = {backup or "(blank)"}: {e}')


def _describe(expiry: dict) -> str:
    return '/'.join(expiry[k] for k in ('minimum_expiration', 'maximum_expiration',
                                        'default_expiration')) + ' s'


def _apply_expiry(client: Client, expiry: dict) -> list[str]:
    changes = []
    for tenant in client.tenants():
        uuid = tenant.get('global_sip_template_uuid')
        if not uuid:
            continue
        template = client.sip_template(tenant['uuid'], uuid)
        options = template.get('aor_section_options') or []
        updated = with_options(options, expiry)
        if updated != options:
            body = {k: v for k, v in template.items() if k != 'links'}
            body['aor_section_options'] = updated
            client.put_sip_template(tenant['uuid'], uuid, body)
            changes.append(f'SIP expiry of tenant {tenant["uuid"]} set to {_describe(expiry)}')
    return changes


def _apply_backup(client: Client, backup: str) -> list[str]:
    changes = []
    for registrar in client.registrars():
        body = registrar_update(registrar, backup)
        if body is not None:
            client.put_registrar(registrar['id'], body)
            changes.append(f'registrar {registrar["id"]}: backup registrar/proxy = {backup or "(blank)"}')
    return changes


def next_steps(config: role.HaConfig) -> list[str]:
    if config.node_type == 'master':
        return ['wazo-service restart',
                'on the slave: wazo-ha-config set --node-type slave --remote-address <this master>',
                'wazo-sync -i   (once: pairs with the slave: SSH key for file sync, database password)',
                f'xivo-master-slave-db-replication {config.remote_address}   (first replication)',
                'wazo-sync',
                'resynchronise the phones so they learn the backup registrar']
    if config.node_type == 'slave':
        return ['wazo-service restart',
                'on the master: wazo-sync -i, then xivo-master-slave-db-replication <this slave>']
    return ['wazo-service restart']
