"""Wiring of the link to the cloud: the command intake (every feature registers its commands into its registry)
and the MQTT session to the cloud broker, with its endpoint, TLS and secrets from the configuration.

Hooks made here: a command received goes to the intake (CommandIntake.submit); a command's `ts` tells the agent's
clock the cloud's time (AgentClock.observe_cloud_time).
"""

from __future__ import annotations

from cloud_link.commands import CommandIntake, CommandRegistry
from cloud_link.outbox import Outbox
from cloud_link.session import CloudSession, SessionSettings
from edge_agent import __version__
from edge_agent.config import AgentConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.secrets import CLOUD_KEY_PASSPHRASE, CLOUD_PASSWORD, read_secret
from edge_agent.services.agent_clock import AgentClock
from edge_agent.storage import Database
from mqtt_io.driver import Endpoint, Protocol, TlsSettings


def build_command_intake(
    config: AgentConfig, db: Database, outbox: Outbox, registry: CommandRegistry, *, metrics: AgentMetrics,
    clock: AgentClock,
) -> CommandIntake:
    return CommandIntake(
        db,
        outbox,
        registry,
        max_payload_bytes=config.commands.max_payload_bytes,
        retention_days=config.commands.retention_days,
        observer=metrics,
        on_cloud_time=clock.observe_cloud_time,  # Hook: a command's `ts` tells the clock the cloud's time
    )


def build_cloud_session(
    config: AgentConfig, outbox: Outbox, intake: CommandIntake, metrics: AgentMetrics, env: dict[str, str] | None
) -> CloudSession | None:
    """The session to the cloud broker; None when `[cloud]` is off (the events wait in the outbox)."""
    if not config.cloud.enabled:
        return None
    # Hook: every command received goes to the intake.
    return CloudSession(session_settings(config, env), outbox, on_command=intake.submit, observer=metrics)


def session_settings(config: AgentConfig, env: dict[str, str] | None) -> SessionSettings:
    c = config.cloud
    tls = None
    if c.tls.enabled:
        tls = TlsSettings(
            ca_file=str(c.tls.ca_file) if c.tls.ca_file else None,
            cert_file=str(c.tls.cert_file) if c.tls.cert_file else None,
            key_file=str(c.tls.key_file) if c.tls.key_file else None,
            key_password=read_secret(CLOUD_KEY_PASSPHRASE, env),
            check_hostname=c.tls.check_hostname,
        )
    endpoint = Endpoint(
        host=c.host,
        port=c.port,
        client_id=config.client_id,
        keepalive=c.keepalive_s,
        tls=tls,
        username=c.username,
        password=read_secret(CLOUD_PASSWORD, env) if c.username else None,
        connect_timeout=c.connect_timeout_s,
        session_expiry=c.session_expiry_s,
    )
    return SessionSettings(
        endpoint=endpoint,
        protocol=Protocol(c.protocol),
        inflight_window=c.inflight_window,
        backoff_min=c.backoff_min_s,
        backoff_max=c.backoff_max_s,
        ack_timeout=config.ack_timeout_s,
        agent_version=__version__,
    )
