"""Invalid configuration files produce messages naming the key path; the agent refuses to start on them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import ConfigError, load_config

BASE = """
[agent]
store_id = "store-0001"
data_dir = "{data}"
"""


def check(tmp_path: Path, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "agent.toml"
    path.write_text(text.replace("{data}", str(tmp_path / "data")))
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "check-config", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE + "[cloud.tls]\nca_file = \"/nonexistent/ca.pem\"\n", "cloud.tls.ca_file: file not found: /nonexistent/ca.pem"),
        (BASE + "[cloud]\nhots = \"x\"\n", "cloud.hots: unknown key"),
        (BASE + "[cloud]\nport = 70000\n", "cloud.port: Input should be less than or equal to 65535"),
        (BASE + "[cloud]\nport = \"eighty\"\n", "cloud.port: Input should be a valid integer"),
        (BASE + "[cloud]\nprotocol = \"4\"\n", "cloud.protocol: Input should be 'auto', '5' or '3.1.1'"),
        (BASE + "[cloud]\nbackoff_min_s = 90\n", "cloud: backoff_min_s (90.0) is larger than backoff_max_s (60.0)"),
        (BASE + "[outbox]\nmax_bytes = 10\n", "outbox.max_bytes: Input should be greater than or equal to 1048576"),
        (BASE + "[commands]\nretention_days = 3\n", "commands.retention_days: Input should be greater than or equal to 7"),
        ("[agent]\ndata_dir = \"/tmp\"\n", "agent.store_id: required key is missing"),
        ("[agent]\nstore_id = \"bad id!\"\n", "agent.store_id: String should match pattern"),
        ("", "agent: required key is missing"),
        (BASE + "[cloud]\nport = \n", "TOML syntax error"),
        (BASE + "[cloud.tls]\ncert_file = \"agent.toml\"\n", "cloud.tls: cert_file and key_file go together: key_file is missing"),
    ],
)
def test_check_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    result = check(tmp_path, text)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr, result.stderr


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    result = check(tmp_path, BASE + "[cloud]\nport = 0\nkeepalive_s = 1\nbogus = 1\n")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("cloud.port:") for line in lines)
    assert any(line.startswith("cloud.keepalive_s:") for line in lines)
    assert any(line.startswith("cloud.bogus: unknown key") for line in lines)


def test_missing_secret_is_reported_by_key(tmp_path: Path) -> None:
    result = check(tmp_path, BASE + "[cloud]\nusername = \"store-0001\"\n")
    assert result.returncode == 2
    assert "cloud.username: set, but no cloud broker password in environment variable EDGE_AGENT_CLOUD_PASSWORD" in result.stderr


def test_secret_from_credentials_directory(tmp_path: Path) -> None:
    from edge_agent.config import parse_config
    from edge_agent.secrets import CLOUD_PASSWORD, missing_secrets, read_secret

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cloud-password").write_text("s3cret\n")
    config = parse_config({"agent": {"store_id": "s1"}, "cloud": {"username": "u"}})
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_secret(CLOUD_PASSWORD, env) == "s3cret"
    assert missing_secrets(config, env) == []
    # The environment wins over the credential file.
    assert read_secret(CLOUD_PASSWORD, {**env, "EDGE_AGENT_CLOUD_PASSWORD": "other"}) == "other"


def test_valid_config_passes(tmp_path: Path) -> None:
    result = check(tmp_path, BASE)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "agent.toml").write_text(BASE.replace("{data}", "d") + "[cloud.tls]\nca_file = \"ca.pem\"\n")
    config = load_config(tmp_path / "agent.toml")
    assert config.cloud.tls.ca_file == tmp_path / "ca.pem"


def test_unreadable_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.toml")
    assert err.value.problems == [f"{tmp_path / 'nope.toml'}: file not found"]
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe[agent]")
    with pytest.raises(ConfigError, match="problem"):
        load_config(tmp_path / "bin.toml")


def test_the_agent_refuses_to_start_with_the_same_messages(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(BASE.replace("{data}", str(tmp_path / "data")) + "[cloud]\nhots = \"x\"\n")
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "cloud.hots: unknown key" in result.stderr
    assert "refusing to start" in result.stderr
    assert not (tmp_path / "data").exists(), "nothing was created for an invalid config"
