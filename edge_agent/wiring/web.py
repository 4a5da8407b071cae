"""Wiring of the web UI: its listening sockets, accounts and sessions, the dashboard's live hub, the app with every
feature's routes, the HTTP and HTTPS servers, and the HTTPS certificate kept fresh.

Hooks made here: the features' live broadcasts (ctx.live) reach the live hub once it exists; a password change or
an account removed ends that user's sessions (WebUsers.on_credentials_changed). Tasks: the live hub, the
certificate's daily check; the servers finish their answers when the agent stops (on_stop), and are cut off only
past the shutdown deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import ssl
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from cloud_link.session import CloudSession
from devices.labels.registry import TagRegistry
from edge_agent.config import AgentConfig
from edge_agent.services.board_finds import BoardFinds
from edge_agent.services.store_health import LiveHub, StoreHealth
from edge_agent.services.tag_listing import TagListing
from edge_agent.services.web_sessions import WebSessions
from edge_agent.services.web_users import WebUsers
from edge_agent.web.admin_context import AdminServices
from edge_agent.web.app import WebContext, create_app
from edge_agent.web.tls import CertificateError, ServerCertificate, ensure_certificate
from edge_agent.wiring.context import StartupError, WiringContext
from edge_agent.wiring.features import Features

log = logging.getLogger(__name__)

CERTIFICATE_CHECK_S = 24 * 3600.0  # how often the web UI's HTTPS certificate is checked for renewal
# What one store's devices and people need, with room to spare (kiosks' and dashboards' live streams are long
# connections): past it new connections get 503 at once, instead of the box running out of memory or sockets.
MAX_CONNECTIONS = 500
MAX_HEADER_BYTES = 16 * 1024  # h11's limit on a request's head (line and headers): bigger is refused, unread
KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this long


def _server_config(app: Any, host: str, port: int, **extra: Any) -> uvicorn.Config:
    """One uvicorn configuration for both servers: the agent's own logging, and the limits above."""
    return uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, limit_concurrency=MAX_CONNECTIONS,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_keep_alive=KEEP_ALIVE_S, **extra,
    )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the agent owns SIGTERM and shuts uvicorn down itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class WebSockets:
    """The web UI's listening sockets, bound before anything else starts: a port in use is a configuration problem
    to report plainly (uvicorn would call sys.exit from inside its task)."""

    plain: socket.socket
    https: socket.socket | None

    @property
    def port(self) -> int:
        return int(self.plain.getsockname()[1])

    @property
    def https_port(self) -> int | None:
        return None if self.https is None else int(self.https.getsockname()[1])

    def close(self) -> None:
        for sock in (self.plain, self.https):
            if sock is not None:
                sock.close()


def bind_web(config: AgentConfig) -> WebSockets | None:
    """The sockets of `[web]`, listening; None when the web UI is off. Raises StartupError."""
    web = config.web
    if not web.enabled:
        return None
    plain = _listen(web.host, web.port, "web.port")
    try:
        https = _listen(web.host, web.https_port, "web.https_port") if web.https else None
    except StartupError:
        plain.close()
        raise
    return WebSockets(plain, https)


def _listen(host: str, port: int, key: str) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Inherited by accepted connections. asyncio sets it only on sockets made with IPPROTO_TCP, and
        # without it a response written in two parts (headers, body) waits out the client's delayed ACK:
        # 40 ms on every request (measured by bench.ui: /healthz p95 44 ms before, a few ms after).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise StartupError([f"{key}: cannot listen on {host}:{port}: {exc.strerror or exc}"]) from None
    sock.set_inheritable(True)
    return sock


class WebUi:
    """The web UI, built: the app, its accounts and live hub, and the servers that serve it."""

    def __init__(
        self,
        config: AgentConfig,
        app: Any,
        *,
        users: WebUsers,
        sessions: WebSessions,
        live_hub: LiveHub,
        certificate: ServerCertificate | None,
    ) -> None:
        self.config = config
        self.app = app
        self.users = users
        self.sessions = sessions
        self.live_hub = live_hub
        self.certificate = certificate
        self.servers: list[_EmbeddedServer] = []
        self.https_server: _EmbeddedServer | None = None

    def serve(self, ctx: WiringContext, sockets: WebSockets) -> None:
        """Register the servers (and the certificate's renewal) with the runtime."""
        web = self.config.web
        server = _EmbeddedServer(_server_config(self.app, web.host, web.port))
        self.servers.append(server)
        # The socket is already listening: connections wait in its backlog until uvicorn serves.
        ctx.running.serve("web", lambda: server.serve(sockets=[sockets.plain]))
        log.info("web UI at http://%s:%d/", web.host, sockets.port)
        cert = self.certificate
        if sockets.https is not None and cert is not None:
            https_sock = sockets.https
            # The same app over TLS; its lifespan runs once, in the plain-HTTP server.
            https = self.https_server = _EmbeddedServer(
                _server_config(
                    self.app, web.host, sockets.https_port or 0,
                    lifespan="off", ssl_certfile=str(cert.cert_file), ssl_keyfile=str(cert.key_file),
                )
            )
            self.servers.append(https)
            ctx.running.serve("web-https", lambda: https.serve(sockets=[https_sock]))
            ctx.running.task("web-certificate", self._keep_certificate_fresh)
            log.info(
                "web UI over HTTPS at https://%s:%d/ (%s certificate, SHA-256 fingerprint %s; compare it with the "
                "one the browser shows)", web.host, sockets.https_port,
                "self-signed" if cert.self_signed else "configured", cert.fingerprint_sha256,
            )
        ctx.running.on_stop(self._finish_answers)
        ctx.running.on_deadline(self._cut_off)

    def _finish_answers(self) -> None:
        self.live_hub.close()  # end the live streams, or the servers would wait on them
        for server in self.servers:
            server.should_exit = True

    def _cut_off(self) -> None:
        for server in self.servers:
            server.force_exit = True

    async def _keep_certificate_fresh(self) -> None:
        # A box can run for more than a year between restarts: the certificate must not expire under it.
        while True:
            await asyncio.sleep(CERTIFICATE_CHECK_S)
            await self.refresh_certificate()

    async def refresh_certificate(self, now: dt.datetime | None = None) -> bool:
        """Renew the self-signed certificate when due, or take up a configured one whose files were replaced,
        and hand it to the running HTTPS server (an SSLContext takes a new chain in place, for the connections
        that follow). True when the served certificate changed."""
        web, current, server = self.config.web, self.certificate, self.https_server
        if current is None or server is None or server.config.ssl is None:
            return False
        try:
            # Files and key generation off the event loop; the context is changed on it, where it is used.
            cert = await asyncio.to_thread(
                ensure_certificate, self.config.agent.data_dir, cert_file=web.tls_cert_file,
                key_file=web.tls_key_file, extra_hosts=[web.host], now=now,
            )
            if cert.fingerprint_sha256 == current.fingerprint_sha256:
                return False
            server.config.ssl.load_cert_chain(str(cert.cert_file), str(cert.key_file))
        except (CertificateError, OSError, ssl.SSLError) as exc:
            log.error("the web UI keeps its current certificate: %s", exc)
            return False
        self.certificate = cert
        log.warning("web UI certificate renewed, valid until %s; its SHA-256 fingerprint is now %s",
                    cert.not_after.date(), cert.fingerprint_sha256)
        return True


async def open_accounts(ctx: WiringContext) -> tuple[WebUsers, WebSessions]:
    """The web UI's accounts; with none yet, the one-time setup token, printed for the technician."""
    users = WebUsers(ctx.db, steady=ctx.clock.steady_ms)
    sessions = WebSessions(ctx.db, clock=ctx.clock.steady_ms)
    # Hook: a password changed or an account removed ends that user's sessions.
    users.on_credentials_changed = lambda username: asyncio.ensure_future(sessions.end_user(username))
    token = await users.ensure_setup_token()
    if token is not None:
        # To the console and the journal: whoever can read them is on the box, and can create the first admin.
        log.warning(
            "no web UI account yet: open the web UI and enter the one-time setup token %s "
            "(`edge-agent setup-token` prints it again)", token,
        )
    return users, sessions


def _certificate(config: AgentConfig) -> ServerCertificate:
    web = config.web
    try:
        return ensure_certificate(
            config.agent.data_dir, cert_file=web.tls_cert_file, key_file=web.tls_key_file, extra_hosts=[web.host],
        )
    except CertificateError as exc:
        raise StartupError([str(exc)]) from None


def _live_hub(ctx: WiringContext, features: Features, session: CloudSession | None) -> LiveHub:
    cfg = ctx.config
    lockers, labels, kiosks = features.lockers, features.labels, features.kiosks
    buses = {b.id: b.bus for b in cfg.lockers.boards}
    buses.update({g.id: "gpio" for g in cfg.lockers.gpio_boards})
    health = StoreHealth(
        db=ctx.db,
        outbox=ctx.bus.outbox,
        session=session,
        labels=None if labels is None else labels.service,
        lockers=None if lockers is None else lockers.service,
        lock_boards={} if lockers is None else lockers.boards,
        board_buses=buses,
        gateway=features.gateway,
        kiosk_hub=None if kiosks is None else kiosks.hub,
    )
    return LiveHub(health)


def _admin_services(
    ctx: WiringContext, features: Features, live: LiveHub, config_path: Path | None
) -> AdminServices:
    lockers, labels, kiosks = features.lockers, features.labels, features.kiosks
    return AdminServices(
        config=ctx.config,
        config_path=config_path,
        db=ctx.db,
        catalog=ctx.catalog,
        tags=TagRegistry(ctx.db),
        publish=ctx.bus.publish,
        tag_listing=TagListing(ctx.db),
        board_finds=BoardFinds(ctx.db),
        labels=None if labels is None else labels.service,
        lockers=None if lockers is None else lockers.service,
        shelves=features.shelves,
        lock_boards={} if lockers is None else lockers.boards,
        locker_buses={} if lockers is None else lockers.buses,
        gateway=features.gateway,
        kiosk_hub=None if kiosks is None else kiosks.hub,
        audit=None if lockers is None else lockers.audit,
        gpio_devices=[] if lockers is None else list(lockers.gpio_devices),
        live=live,
        picking=None if features.picking is None else features.picking.service,
        bus=ctx.bus,
    )


async def build_web(
    ctx: WiringContext,
    features: Features,
    sockets: WebSockets,
    *,
    session: CloudSession | None,
    started_at: float,
    config_path: Path | None,
) -> WebUi:
    cfg = ctx.config
    users, sessions = await open_accounts(ctx)
    certificate = _certificate(cfg) if sockets.https is not None else None
    live = _live_hub(ctx, features, session)
    ctx.live.attach(live)  # Hook: the features' broadcasts reach the dashboard from now on
    ctx.running.task("web-live", live.run)
    lockers, kiosks = features.lockers, features.kiosks
    app = create_app(
        WebContext(
            store_id=cfg.agent.store_id,
            outbox=ctx.bus.outbox,
            metrics=ctx.metrics,
            session=session,
            metrics_loopback_only=cfg.web.metrics_loopback_only,
            started_at=started_at,
            lockers=None if lockers is None else lockers.service,
            locker_staff=None if lockers is None else lockers.staff,
            scan_links=features.scan_links,
            public_base_url=cfg.labels.public_base_url,
            price_locale=cfg.labels.locale,
            kiosk_api=None if kiosks is None else kiosks.api,
            users=users,
            sessions=sessions,
            admin=_admin_services(ctx, features, live, config_path),
            https_port=sockets.https_port,
            device_problems=live.health.link_problems,
            clock=ctx.clock.describe,
        )
    )
    web = WebUi(cfg, app, users=users, sessions=sessions, live_hub=live, certificate=certificate)
    web.serve(ctx, sockets)
    return web
