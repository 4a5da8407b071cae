"""HTTPS for the web UI: the self-signed certificate (made once, kept, renewed near expiry, 0600 key), a
configured one, the agent serving the same app on both ports, the Secure cookie over real TLS, and admin pages
reached over plain HTTP from the LAN sent to HTTPS."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import ssl
import stat
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.middleware.base import BaseHTTPMiddleware

from edge_agent.config import ConfigError, parse_config
from edge_agent.runtime import Agent, StartupError
from edge_agent.web.tls import CertificateError, ensure_certificate
from tests.conftest import agent_config, running_agent

PASSWORD = "a long enough password"


def _san(cert_file: Path) -> x509.SubjectAlternativeName:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_a_self_signed_certificate_is_made_once_and_kept(tmp_path: Path) -> None:
    made = ensure_certificate(tmp_path, hostname="store-box-7", extra_hosts=["10.9.8.7"])
    assert made.generated and made.self_signed
    cert = x509.load_pem_x509_certificate(made.cert_file.read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    san = _san(made.cert_file)
    assert set(san.get_values_for_type(x509.DNSName)) >= {"store-box-7", "localhost"}
    ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    assert {"127.0.0.1", "::1", "10.9.8.7"} <= ips
    assert stat.S_IMODE(made.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(made.key_file.parent.stat().st_mode) == 0o700
    assert len(made.fingerprint_sha256.split(":")) == 32
    # The next start keeps it: the fingerprint a technician noted stays right.
    again = ensure_certificate(tmp_path, hostname="store-box-7")
    assert not again.generated and again.fingerprint_sha256 == made.fingerprint_sha256
    # Within 30 days of expiry, or for a new host name, it is made again.
    late = ensure_certificate(tmp_path, hostname="store-box-7", now=made.not_after - dt.timedelta(days=10))
    assert late.generated and late.fingerprint_sha256 != made.fingerprint_sha256
    renamed = ensure_certificate(tmp_path, hostname="store-box-8")
    assert renamed.generated and "store-box-8" in _san(renamed.cert_file).get_values_for_type(x509.DNSName)
    # A damaged file is replaced, not served.
    renamed.cert_file.write_text("garbage")
    assert ensure_certificate(tmp_path, hostname="store-box-8").generated


def test_a_configured_certificate_is_used_as_it_is(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("edge.store.example")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    used = ensure_certificate(tmp_path / "data", cert_file=cert_file, key_file=key_file)
    assert not used.generated and not used.self_signed and used.cert_file == cert_file
    assert not (tmp_path / "data" / "web-tls").exists()
    other = ca.issue_cert("other.store.example")
    other.private_key_pem.write_to_path(str(key_file))
    with pytest.raises(CertificateError, match="does not go with"):
        ensure_certificate(tmp_path / "data", cert_file=cert_file, key_file=key_file)
    key_file.write_text("not a key")
    with pytest.raises(CertificateError, match=r"web\.tls_key_file"):
        ensure_certificate(tmp_path / "data", cert_file=cert_file, key_file=key_file)


def _problems(web: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config({"agent": {"store_id": "s1"}, "web": web})
    return "; ".join(caught.value.problems)


def test_https_settings_are_checked(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    assert "tls_key_file is missing" in _problems({"tls_cert_file": str(cert)})
    assert "https_port must differ" in _problems({"port": 9000, "https_port": 9000})
    assert "file not found" in _problems({"tls_cert_file": "/nope.pem", "tls_key_file": "/nope.key"})
    assert parse_config({"agent": {"store_id": "s1"}}).web.https_port == 8443


def _tls_client(cert_file: Path, port: int) -> httpx.AsyncClient:
    context = ssl.create_default_context(cafile=str(cert_file))
    return httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=10)


async def test_the_agent_serves_https_with_a_secure_cookie(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent")
    config = agent_config(tmp_path / "data", None)
    async with running_agent(config) as agent:
        assert agent.users is not None and agent.certificate is not None and agent.https_port
        cert = agent.certificate
        assert cert.cert_file.parent == tmp_path / "data" / "web-tls"
        assert any(cert.fingerprint_sha256 in r.getMessage() for r in caplog.records), "fingerprint in the log"
        token = agent.users.setup_token()
        assert token is not None
        async with _tls_client(cert.cert_file, agent.https_port) as tls:
            # Verified against the generated certificate, by IP address (its SAN names 127.0.0.1).
            assert (await tls.get("/healthz")).json()["status"] == "ok"
            made = await tls.post("/api/auth/setup", json={"token": token, "username": "boss", "password": PASSWORD})
            assert made.status_code == 200, made.text
            cookie = made.headers["set-cookie"]
            assert "edge_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie
            assert "samesite=strict" in cookie.lower()
            me = await tls.get("/api/auth/me")
            assert me.status_code == 200 and me.json()["username"] == "boss"
        # The same app on plain HTTP: from this machine (loopback) it answers there, without Secure.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.web_port}", timeout=10) as plain:
            signed = await plain.post("/api/auth/login", json={"username": "boss", "password": PASSWORD})
            assert signed.status_code == 200
            assert "Secure" not in signed.headers["set-cookie"]
        # Plain HTTP on the HTTPS port is refused by TLS, not answered.
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=5) as wrong:
                await wrong.get(f"http://127.0.0.1:{agent.https_port}/healthz")
        # The same certificate file again: nothing regenerated at the next start.
        fingerprint = cert.fingerprint_sha256
    async with running_agent(config) as agent:
        assert agent.certificate is not None and agent.certificate.fingerprint_sha256 == fingerprint
        assert not agent.certificate.generated


async def test_admin_pages_over_plain_http_from_the_lan_go_to_https(tmp_path: Path) -> None:
    config = agent_config(tmp_path / "data", None, kiosks=[{"id": "k1", "name": "Entrance"}])
    async with running_agent(config) as agent:
        port = agent.https_port
        # The real app, called as a browser on the store LAN would call it (client 192.168.1.50).
        lan = httpx.ASGITransport(app=agent.web_app, client=("192.168.1.50", 50000))
        async with httpx.AsyncClient(transport=lan, base_url="http://edge-box.local:8080") as http:
            page = await http.get("/ui/devices?tab=tags")
            assert page.status_code == 308
            assert page.headers["location"] == f"https://edge-box.local:{port}/ui/devices?tab=tags"
            login = await http.post("/api/auth/login", json={"username": "x", "password": "y"})
            assert login.status_code == 308, "a password never goes over plain HTTP from the LAN"
            # Shopper pages and probes stay on plain HTTP (a kiosk must not meet a self-signed certificate).
            assert (await http.get("/kiosk/k1")).status_code == 200
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/s/unknown-code")).status_code == 404  # a scan link, answered on HTTP
        # An IPv6 literal host keeps its brackets in the new address.
        async with httpx.AsyncClient(transport=lan, base_url="http://[fd00::5]:8080") as http:
            page = await http.get("/ui/devices")
            assert page.status_code == 308 and page.headers["location"] == f"https://[fd00::5]:{port}/ui/devices"
        # From loopback (the demo, a technician's SSH tunnel) admin pages answer on plain HTTP.
        local = httpx.ASGITransport(app=agent.web_app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=local, base_url="http://127.0.0.1:8080") as http:
            assert (await http.get("/api/auth/state")).status_code == 200
        # Every request passes this check, the scan links included: it must be plain ASGI, never Starlette's
        # BaseHTTPMiddleware (a task and memory streams per request: 40 % of the scan links' throughput).
        stack = [m.cls for m in agent.web_app.user_middleware]
        assert stack and not any(isinstance(c, type) and issubclass(c, BaseHTTPMiddleware) for c in stack)


async def test_https_can_be_turned_off_and_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    async with running_agent(agent_config(tmp_path / "a", None, web={"https": False})) as agent:
        assert agent.https_port is None and agent.certificate is None
        assert not (tmp_path / "a" / "web-tls").exists()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        agent = Agent(agent_config(tmp_path / "b", None, web={"https_port": taken}))
        with pytest.raises(StartupError, match=rf"web\.https_port: cannot listen on 127\.0\.0\.1:{taken}"):
            await agent.run()


async def test_the_agent_serves_a_configured_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    config = agent_config(tmp_path / "data", None, web={"tls_cert_file": str(cert_file), "tls_key_file": str(key_file)})
    async with running_agent(config) as agent:
        assert agent.certificate is not None and not agent.certificate.self_signed
        context = ssl.create_default_context()
        ca.configure_trust(context)
        async with httpx.AsyncClient(verify=context, timeout=10) as tls:
            assert (await tls.get(f"https://localhost:{agent.https_port}/healthz")).status_code == 200
    assert not (tmp_path / "data" / "web-tls").exists()


async def test_a_certificate_due_for_renewal_is_renewed_while_serving(tmp_path: Path) -> None:
    async with running_agent(agent_config(tmp_path / "data", None)) as agent:
        assert agent.certificate is not None and agent.https_port
        first = agent.certificate
        assert not await agent.refresh_certificate(), "nothing to do a day later"
        served = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", agent.https_port))
        assert x509.load_pem_x509_certificate(served.encode()).fingerprint(hashes.SHA256()).hex(":").upper() == \
            first.fingerprint_sha256
        # Twenty days before it expires (a box that ran for a year): renewed, and served from the next connection.
        assert await agent.refresh_certificate(now=first.not_after - dt.timedelta(days=20))
        assert agent.certificate.fingerprint_sha256 != first.fingerprint_sha256
        served = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", agent.https_port))
        assert x509.load_pem_x509_certificate(served.encode()).fingerprint(hashes.SHA256()).hex(":").upper() == \
            agent.certificate.fingerprint_sha256
