"""xivo-check-master-status: probe the master for about a minute, converge the slave.

Every run converges the slave's services to the decision (master up: stopped, master
down: started); services already in that state are left alone."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from . import health, probes, role, services, sync
from .errors import InputError
from .jobs import CHECK
from .settings import Settings
from .system import read_state, read_text, single_instance, write_state

logger = logging.getLogger('wazo-ha')



def boot_id() -> str:
    return (read_text('/proc/sys/kernel/random/boot_id') or '').strip()


def load_memory(settings: Settings) -> health.Memory:
    """The probe history of the last runs (none when missing or corrupt)."""
    return health.memory_from_dict(read_state(settings.paths.state_dir, CHECK.state_file))


def save_memory(settings: Settings, memory: health.Memory, verdict: health.Verdict) -> None:
    write_state(settings.paths.state_dir, CHECK.state_file,
                {**asdict(memory), 'sentence': verdict.sentence, 'written_at': time.time()})


def resolve_master(settings: Settings, argument: str | None) -> str:
    """The master's address; WrongRoleError when this node is not a slave."""
    config = role.require_role(settings.paths.ha_conf, settings.paths.sentinel_dir,
                                   'slave', 'the master check')
    if argument is None:
        return role.validate_peer(config.remote_address)
    ip = role.validate_peer(argument)
    if ip != config.remote_address:
        raise InputError(f'{ip} is not the master configured in ha.conf ({config.remote_address})')
    return ip


def run(settings: Settings, argument: str | None, sleep=time.sleep) -> str:
    """Returns the closing sentence of the run."""
    master_ip = resolve_master(settings, argument)
    policy = health.Policy(settings.check.probe_interval, settings.check.down_after,
                           settings.check.up_after)
    with single_instance(settings.paths.lock_dir, CHECK.name, wait=settings.check.probe_interval + 5):
        _keep_daemon_config(settings)
        boot = boot_id()
        deadline = time.monotonic() + settings.check.run_for
        memory = load_memory(settings)
        converged = False
        sentence = ''
        while True:
            probe = probes.probe(settings, master_ip)
            memory, verdict = health.observe(memory, probe, policy, boot)
            save_memory(settings, memory, verdict)
            if verdict.changed:
                logger.warning('decision: master %s: %s', verdict.decision, verdict.sentence)
            if not role.is_secondary(settings.paths.sentinel_dir):
                return 'this node stopped being a secondary during the run: nothing done'
            action = _converge(settings, verdict, force=not converged)
            converged = True
            sentence = f'master {master_ip} {verdict.decision}: {verdict.sentence}{action}'
            logger.debug('%s', sentence)
            next_probe = probe.at + settings.check.probe_interval
            if next_probe > deadline:
                break
            sleep(max(0.0, next_probe - time.monotonic()))
        logger.info('%s', sentence)
        return sentence


def _keep_daemon_config(settings: Settings) -> None:
    """The rsync daemon configuration follows the settings (what the master's key may do)."""
    try:
        for change in sync.apply_daemon_config(settings, slave=True):
            logger.info('changed: %s', change)
    except OSError as e:  # file sync is not failover: say so and go on probing
        logger.error('cannot write the rsync daemon configuration: %s', e)


def _converge(settings: Settings, verdict: health.Verdict, force: bool) -> str:
    """Bring the services to the decided state on a change, and once per run anyway."""
    if verdict.decision == health.UNKNOWN or not (verdict.changed or force):
        return ''
    if verdict.decision == health.DOWN:
        outcome = services.start(settings)
    else:
        outcome = services.stop(settings)
    if not outcome.done:
        return ''
    return f' -> {outcome.sentence()}'
