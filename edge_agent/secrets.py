"""Secrets: from the environment, or from systemd credentials in $CREDENTIALS_DIRECTORY.

Never from the config file (which may sit in git). The environment wins over a credential file, so a
technician can override one for a test without touching the unit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edge_agent.config import AgentConfig


@dataclass(frozen=True)
class SecretSpec:
    env: str
    credential: str
    what: str


CLOUD_PASSWORD = SecretSpec("EDGE_AGENT_CLOUD_PASSWORD", "cloud-password", "cloud broker password")
CLOUD_KEY_PASSPHRASE = SecretSpec(
    "EDGE_AGENT_CLOUD_KEY_PASSPHRASE", "cloud-key-passphrase", "passphrase of cloud.tls.key_file"
)
STORE_HMAC_KEY = SecretSpec("EDGE_AGENT_STORE_HMAC_KEY", "store-hmac-key", "the store's HMAC key")
LOCAL_BROKER_PASSWORD = SecretSpec(
    "EDGE_AGENT_LOCAL_BROKER_PASSWORD", "local-broker-password", "in-store broker password"
)
ALL_SECRETS = (CLOUD_PASSWORD, CLOUD_KEY_PASSPHRASE, STORE_HMAC_KEY, LOCAL_BROKER_PASSWORD)


class SecretError(Exception):
    pass


def read_secret(spec: SecretSpec, env: Mapping[str, str] | None = None) -> str | None:
    environ = os.environ if env is None else env
    value = environ.get(spec.env)
    if value:
        return value
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        path = Path(cred_dir) / spec.credential
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretError(f"cannot read credential {path}: {exc.strerror}") from exc
        # Credential files often end with a newline that is not part of the secret.
        return text.rstrip("\r\n") or None
    return None


def where(spec: SecretSpec) -> str:
    return f"environment variable {spec.env} or credential {spec.credential}"


def missing_secrets(config: AgentConfig, env: Mapping[str, str] | None = None) -> list[str]:
    """Problems, by key path, with the secrets this configuration needs."""
    problems = []
    try:
        if config.cloud.enabled and config.cloud.username and not read_secret(CLOUD_PASSWORD, env):
            problems.append(f"cloud.username: set, but no {CLOUD_PASSWORD.what} in {where(CLOUD_PASSWORD)}")
        if config.local_broker.enabled and config.local_broker.username and not read_secret(
            LOCAL_BROKER_PASSWORD, env
        ):
            problems.append(
                f"local_broker.username: set, but no {LOCAL_BROKER_PASSWORD.what} in {where(LOCAL_BROKER_PASSWORD)}"
            )
        if config.lockers.enabled and not read_secret(STORE_HMAC_KEY, env):
            problems.append(f"lockers.enabled: needs {STORE_HMAC_KEY.what} in {where(STORE_HMAC_KEY)}")
    except SecretError as exc:
        problems.append(f"secrets: {exc}")
    return problems
