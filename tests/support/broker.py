"""A real Mosquitto process on a free loopback port, plain or TLS, that can be stopped and restarted."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import trustme

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def password_file(folder: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file (hashed by mosquitto_passwd itself)."""
    path = folder / "passwords"
    path.write_text("")
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True, capture_output=True)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def generate(cls, folder: Path) -> TlsFiles:
        folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1")
        client = ca.issue_cert("edge-agent-test")
        files = cls(
            ca=folder / "ca.pem",
            server_cert=folder / "server.pem",
            server_key=folder / "server.key",
            client_cert=folder / "client.pem",
            client_key=folder / "client.key",
        )
        ca.cert_pem.write_to_path(str(files.ca))
        server.cert_chain_pems[0].write_to_path(str(files.server_cert))
        for pem in server.cert_chain_pems[1:]:
            pem.write_to_path(str(files.server_cert), append=True)
        server.private_key_pem.write_to_path(str(files.server_key))
        client.cert_chain_pems[0].write_to_path(str(files.client_cert))
        client.private_key_pem.write_to_path(str(files.client_key))
        return files


class Broker:
    def __init__(
        self,
        folder: Path,
        *,
        tls: TlsFiles | None = None,
        require_certificate: bool = False,
        password_file: Path | None = None,
        persistence: bool = True,
        max_inflight: int = 1000,
        max_queued: int = 100000,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tls = tls
        self.require_certificate = require_certificate
        self.password_file = password_file
        self.persistence = persistence
        # Per client: QoS 1 messages sent and not yet acknowledged, and queued beyond those (0: no limit).
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.extra = extra  # more mosquitto.conf lines, e.g. "sys_interval 1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"

    def _write_conf(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
            # Persistence keeps retained messages and sessions across a restart, as a real broker does.
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.folder}/",
            f"max_inflight_messages {self.max_inflight}",
            f"max_queued_messages {self.max_queued}",
            # Run as whoever runs the tests: as root, mosquitto would otherwise switch to its own user,
            # which cannot read certificates in the test's private temp folder.
            f"user {getpass.getuser()}",
            "log_type error",
            "log_type warning",
            "log_type all" if __import__("os").environ.get("MQTT_DEBUG") else "",
        ]
        lines += self.extra
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        self._write_conf()
        logf = self.log.open("ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=logf, stderr=logf)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
