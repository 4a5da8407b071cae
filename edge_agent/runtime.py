"""The composition root: builds every part from the configuration and runs them under one TaskGroup.

Start-up order: database (migrations, backup) -> outbox (boot counter) -> commands -> cloud session
-> in-store device gateway -> web server; then READY=1 to systemd. SIGTERM or SIGINT starts the
shutdown, bounded by `agent.shutdown_timeout_s` (5 s): stop taking device input, stop the web server,
publish retained `offline` and disconnect cleanly, then close the database (every commit is already
durable, so nothing durable can be lost at any point).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Generator
from pathlib import Path
from typing import Any

import uvicorn

from cloud_link.bus import EventBus
from cloud_link.commands import CommandIntake, CommandRegistry
from cloud_link.events import Event, EventError
from cloud_link.outbox import Outbox, OutboxFullError
from cloud_link.session import CloudSession, SessionSettings
from cloud_link.topics import Topics
from devices.labels.registry import TagRegistry
from devices.labels.render_pool import RenderPool
from devices.labels.updates import LabelService
from devices.lockers.board import LockBoard
from devices.lockers.gpio import GpioLockBoard
from devices.lockers.signal import AlarmSignal
from devices.mqtt_gateway import MqttDeviceGateway
from devices.scanners.serial_scanner import SerialScanner
from edge_agent import __version__
from edge_agent.commands.builtin import register_builtin_commands
from edge_agent.commands.catalog import register_catalog_commands
from edge_agent.config import AgentConfig
from edge_agent.event_loop import describe as describe_loop
from edge_agent.metrics import AgentMetrics
from edge_agent.secrets import (
    CLOUD_KEY_PASSPHRASE,
    CLOUD_PASSWORD,
    missing_secrets,
    read_secret,
)
from edge_agent.services.agent_clock import AgentClock, ClockReport
from edge_agent.services.audit import AuditLog
from edge_agent.services.catalog import ProductCatalog
from edge_agent.services.kiosks import KioskHub
from edge_agent.services.locker_staff import LockerStaff
from edge_agent.services.lockers import LockerService
from edge_agent.services.orders import OrderService
from edge_agent.services.picking import PickingService
from edge_agent.services.pickup_shelves import PickupShelves
from edge_agent.services.scan_links import ScanLinkService
from edge_agent.services.store_health import LiveHub, StoreHealth
from edge_agent.services.web_sessions import WebSessions
from edge_agent.services.web_users import WebUsers
from edge_agent.storage import Database
from edge_agent.systemd_notify import SystemdNotifier
from edge_agent.web.admin_context import AdminServices
from edge_agent.web.app import WebContext, create_app
from edge_agent.web.kiosk_api import KioskApi
from edge_agent.web.tls import CertificateError, ServerCertificate, ensure_certificate
from edge_agent.wiring.context import StartupError, WiringContext
from edge_agent.wiring.kiosks import build_kiosks, build_orders
from edge_agent.wiring.labels import build_labels
from edge_agent.wiring.links import build_device_gateway
from edge_agent.wiring.lockers import AuditToCloud, Lockers, build_lockers, run_lockers
from edge_agent.wiring.picking import build_picking
from edge_agent.wiring.scan_links import build_scan_links
from edge_agent.wiring.shelves import build_shelves
from firmware_bridge.kerong.bus import KerongBus
from mqtt_io.driver import Endpoint, Protocol, TlsSettings

# StartupError is raised by the wiring; the CLI and tests catch it here.
__all__ = ["Agent", "StartupError"]

log = logging.getLogger(__name__)

ExtraTask = Callable[["Agent"], Coroutine[Any, Any, Any]]
CERTIFICATE_CHECK_S = 24 * 3600.0  # how often the web UI's HTTPS certificate is checked for renewal


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the agent owns SIGTERM and shuts uvicorn down itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        env: dict[str, str] | None = None,
        notifier: SystemdNotifier | None = None,
        extra_tasks: tuple[ExtraTask, ...] = (),
        config_path: Path | None = None,
    ) -> None:
        problems = missing_secrets(config, env)
        if problems:
            raise StartupError(problems)
        self.config = config
        self.config_path = config_path  # where the web UI's configuration page reads and writes
        self._env = env
        self.notifier = notifier or SystemdNotifier()
        self._extra = extra_tasks
        self.metrics = AgentMetrics()
        self.topics = Topics(config.cloud.topic_prefix, config.agent.store_id)
        self.started = asyncio.Event()
        self.web_port: int | None = None
        self.https_port: int | None = None  # the web UI over HTTPS (`[web] https`), once bound
        self.certificate: ServerCertificate | None = None
        self._web_servers: list[_EmbeddedServer] = []
        self._https_server: _EmbeddedServer | None = None
        self._stop = asyncio.Event()
        self.db: Database | None = None
        self.outbox: Outbox | None = None
        self.bus: EventBus | None = None
        self.session: CloudSession | None = None
        self.commands: CommandIntake | None = None
        self.gateway: MqttDeviceGateway | None = None
        self.catalog: ProductCatalog | None = None
        self.labels: LabelService | None = None
        self.picking: PickingService | None = None  # pick-to-light on the labels
        self.renderer: RenderPool | None = None
        self.lockers: LockerService | None = None
        self.shelves: PickupShelves | None = None  # pickup shelves: the lockers' pickups in labelled slots
        self._audit_sink: AuditToCloud | None = None
        self._lockers_built: Lockers | None = None
        # (task name, what to run) of every feature built: started by _run_tasks, in the order they were built.
        self._feature_tasks: list[tuple[str, Callable[[], Coroutine[Any, Any, Any]]]] = []
        self._ctx: WiringContext
        self.locker_staff: LockerStaff | None = None
        self.scan_links: ScanLinkService | None = None
        self.orders: OrderService | None = None
        self.kiosk_hub: KioskHub | None = None
        self.kiosk_api: KioskApi | None = None
        self.scanners: list[SerialScanner] = []
        self.locker_buses: dict[str, KerongBus] = {}
        self._gpio_devices: list[GpioLockBoard | AlarmSignal] = []
        self.lock_boards: dict[str, LockBoard] = {}
        self.audit: AuditLog | None = None
        self.users: WebUsers | None = None
        self.web_sessions: WebSessions | None = None
        self.live_hub: LiveHub | None = None  # the web UI's dashboard and live stream
        self.clock: AgentClock | None = None  # the steady clock for durations; the wall clock, judged
        self.web_app: Any = None  # the FastAPI app, once serving (tests and bench.ui walk its routes)

    # -- what producers use -------------------------------------------------------------------

    async def publish(self, event_type: str, payload: dict[str, Any]) -> Event:
        """Returns once the event is durable; raises OutboxFullError or EventError otherwise."""
        if self.bus is None:
            raise RuntimeError("the agent is not running")
        return await self.bus.publish(event_type, payload)

    async def _clock_changed(self, report: ClockReport) -> None:
        """`alarm.clock` on every change of the wall clock's state (services/agent_clock), back to ok included."""
        try:
            await self.publish("alarm.clock", report.payload())
        except (OutboxFullError, EventError) as exc:
            log.error("alarm.clock could not be queued: %s", exc)

    def _clock_offset_s(self) -> float:
        clock = self.clock
        return 0.0 if clock is None else (clock.wall_ms() - clock.estimate_ms()) / 1000.0

    def request_stop(self) -> None:
        self._stop.set()

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config
        started_at = time.monotonic()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal, sig)

        # Bind the web port first: a port in use is a configuration problem to report plainly (uvicorn
        # would call sys.exit from inside its task).
        web_socket = self._bind_web_socket() if cfg.web.enabled else None
        https_socket = self._bind_https_socket() if cfg.web.enabled and cfg.web.https else None
        self.db = db = Database(cfg.agent.data_dir)
        try:
            outbox = Outbox(
                db,
                self.topics,
                max_bytes=cfg.outbox.max_bytes,
                reserve_fraction=cfg.outbox.critical_reserve,
                observer=self.metrics,
            )
            self.outbox = outbox
            self.bus = EventBus(outbox)
            boot = await outbox.open()
            self.clock = AgentClock(db)
            await self.clock.start()
            self.clock.on_change = self._clock_changed
            self.metrics.watch_clock(lambda: self.clock is not None and self.clock.trusted, self._clock_offset_s)
            self.metrics.watch_outbox(outbox.stats)
            log.info("store %s, boot %d, database schema v%d at %s, event loop %s", cfg.agent.store_id, boot,
                     db.version, db.path, describe_loop(loop))

            registry = CommandRegistry()
            register_builtin_commands(registry, cfg, lambda: outbox.boot)
            self.catalog = catalog = ProductCatalog(db)
            register_catalog_commands(registry, catalog)
            assert self.clock is not None
            # The command intake and the cloud session first: the features register their commands into the
            # registry the intake already holds, and the scan links ask the session whether the cloud is up.
            intake = self.commands = CommandIntake(
                db,
                outbox,
                registry,
                max_payload_bytes=cfg.commands.max_payload_bytes,
                retention_days=cfg.commands.retention_days,
                observer=self.metrics,
                on_cloud_time=self.clock.observe_cloud_time,
            )
            session = self.session = (
                CloudSession(self._session_settings(), outbox, on_command=intake.submit, observer=self.metrics)
                if cfg.cloud.enabled else None
            )
            ctx = self._ctx = WiringContext(
                cfg, db, self.bus, self.metrics, registry, self.clock, catalog, env=self._env
            )
            await self._build_features(ctx, boot, cloud_up=lambda: session is not None and session.connected)
            if cfg.web.enabled:
                await self._open_web_accounts(db)
            if https_socket is not None:
                self.certificate = self._web_certificate()
            await self._run_tasks(intake, started_at, web_socket, https_socket)
        finally:
            if self.renderer is not None:
                self.renderer.close()
            db.close()
            for sock in (web_socket, https_socket):
                if sock is not None:
                    sock.close()
            log.info("stopped")

    async def _open_web_accounts(self, db: Database) -> None:
        """The web UI's accounts; with none yet, the one-time setup token, printed for the technician."""
        assert self.clock is not None
        self.users = WebUsers(db, steady=self.clock.steady_ms)
        self.web_sessions = sessions = WebSessions(db, clock=self.clock.steady_ms)
        self.users.on_credentials_changed = lambda username: asyncio.ensure_future(sessions.end_user(username))
        token = await self.users.ensure_setup_token()
        if token is not None:
            # To the console and the journal: whoever can read them is on the box, and can create the first admin.
            log.warning(
                "no web UI account yet: open the web UI and enter the one-time setup token %s "
                "(`edge-agent setup-token` prints it again)", token,
            )

    def _admin_services(self) -> AdminServices:
        assert self.db is not None and self.catalog is not None and self.bus is not None
        return AdminServices(
            config=self.config,
            config_path=self.config_path,
            db=self.db,
            catalog=self.catalog,
            tags=TagRegistry(self.db),
            publish=self.bus.publish,
            labels=self.labels,
            lockers=self.lockers,
            shelves=self.shelves,
            lock_boards=self.lock_boards,
            locker_buses=self.locker_buses,
            gateway=self.gateway,
            kiosk_hub=self.kiosk_hub,
            audit=self.audit,
            gpio_devices=list(self._gpio_devices),
            live=self.live_hub,
            picking=self.picking,
            bus=self.bus,
        )

    def _build_live_hub(self) -> LiveHub:
        assert self.db is not None
        buses = {b.id: b.bus for b in self.config.lockers.boards}
        buses.update({g.id: "gpio" for g in self.config.lockers.gpio_boards})
        health = StoreHealth(
            db=self.db,
            outbox=self.outbox,
            session=self.session,
            labels=self.labels,
            lockers=self.lockers,
            lock_boards=self.lock_boards,
            board_buses=buses,
            gateway=self.gateway,
            kiosk_hub=self.kiosk_hub,
        )
        return LiveHub(health)

    def _bind_https_socket(self) -> socket.socket:
        sock = self._bind_web_socket(self.config.web.https_port, "web.https_port")
        self.https_port = int(sock.getsockname()[1])
        return sock

    def _web_certificate(self) -> ServerCertificate:
        web = self.config.web
        try:
            return ensure_certificate(
                self.config.agent.data_dir, cert_file=web.tls_cert_file, key_file=web.tls_key_file,
                extra_hosts=[web.host],
            )
        except CertificateError as exc:
            raise StartupError([str(exc)]) from None

    def _bind_web_socket(self, port: int | None = None, key: str = "web.port") -> socket.socket:
        host = self.config.web.host
        port = self.config.web.port if port is None else port
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
        if key == "web.port":
            self.web_port = int(sock.getsockname()[1])
        return sock

    async def _run_tasks(
        self,
        intake: CommandIntake,
        started_at: float,
        web_socket: socket.socket | None,
        https_socket: socket.socket | None = None,
    ) -> None:
        cfg = self.config
        assert self.outbox is not None
        async with asyncio.TaskGroup() as tg:
            background: list[asyncio.Task[Any]] = [
                tg.create_task(intake.run(), name="command-intake"),
                tg.create_task(intake.purge_loop(), name="command-purge"),
                tg.create_task(self.outbox.report_dropped_loop(), name="telemetry-drop-report"),
            ]
            if self.clock is not None:
                background.append(tg.create_task(self.clock.run(), name="clock"))
            session_task = (
                tg.create_task(self.session.run(), name="cloud-session") if self.session is not None else None
            )
            for name, task in self._feature_tasks:
                background.append(tg.create_task(task(), name=name))
            for i, extra in enumerate(self._extra):
                background.append(tg.create_task(extra(self), name=f"extra-{i}"))
            if web_socket is not None:
                self.live_hub = self._build_live_hub()
                self._ctx.live.attach(self.live_hub)
                background.append(tg.create_task(self.live_hub.run(), name="web-live"))
                app = create_app(
                    WebContext(
                        store_id=cfg.agent.store_id,
                        outbox=self.outbox,
                        metrics=self.metrics,
                        session=self.session,
                        metrics_loopback_only=cfg.web.metrics_loopback_only,
                        started_at=started_at,
                        lockers=self.lockers,
                        locker_staff=self.locker_staff,
                        scan_links=self.scan_links,
                        public_base_url=cfg.labels.public_base_url,
                        price_locale=cfg.labels.locale,
                        kiosk_api=self.kiosk_api,
                        users=self.users,
                        sessions=self.web_sessions,
                        admin=self._admin_services(),
                        https_port=self.https_port,
                        device_problems=self.live_hub.health.link_problems,
                        clock=None if self.clock is None else self.clock.describe,
                    )
                )
                self.web_app = app
                server = _EmbeddedServer(
                    uvicorn.Config(app, host=cfg.web.host, port=cfg.web.port, log_config=None, access_log=False)
                )
                # The socket is already listening: connections wait in its backlog until uvicorn serves.
                tg.create_task(server.serve(sockets=[web_socket]), name="web")
                self._web_servers.append(server)
                log.info("web UI at http://%s:%d/", cfg.web.host, self.web_port)
                if https_socket is not None and self.certificate is not None:
                    background.append(self._serve_https(tg, app, https_socket, self.certificate))
            if self.notifier.watchdog_interval_s:
                background.append(tg.create_task(self._watchdog(self.notifier.watchdog_interval_s), name="watchdog"))
            self.notifier.ready()
            self.started.set()
            log.info("agent %s ready", __version__)

            await self._stop.wait()
            await self._shutdown(background, session_task)

    def _serve_https(
        self, tg: asyncio.TaskGroup, app: Any, sock: socket.socket, cert: ServerCertificate
    ) -> asyncio.Task[None]:
        """The same app over TLS (its lifespan runs once, in the plain-HTTP server); returns the daily task that
        keeps its certificate fresh."""
        https = _EmbeddedServer(
            uvicorn.Config(
                app, host=self.config.web.host, port=self.https_port or 0, log_config=None, access_log=False,
                lifespan="off", ssl_certfile=str(cert.cert_file), ssl_keyfile=str(cert.key_file),
            )
        )
        tg.create_task(https.serve(sockets=[sock]), name="web-https")
        self._web_servers.append(https)
        self._https_server = https
        log.info(
            "web UI over HTTPS at https://%s:%d/ (%s certificate, SHA-256 fingerprint %s; compare it with the "
            "one the browser shows)", self.config.web.host, self.https_port,
            "self-signed" if cert.self_signed else "configured", cert.fingerprint_sha256,
        )
        return tg.create_task(self._keep_certificate_fresh(), name="web-certificate")

    async def _keep_certificate_fresh(self) -> None:
        # A box can run for more than a year between restarts: the certificate must not expire under it.
        while True:
            await asyncio.sleep(CERTIFICATE_CHECK_S)
            await self.refresh_certificate()

    async def refresh_certificate(self, now: dt.datetime | None = None) -> bool:
        """Renew the self-signed certificate when due, or take up a configured one whose files were replaced,
        and hand it to the running HTTPS server (an SSLContext takes a new chain in place, for the connections
        that follow). True when the served certificate changed."""
        web, current, server = self.config.web, self.certificate, self._https_server
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

    async def _shutdown(
        self,
        background: list[asyncio.Task[Any]],
        session_task: asyncio.Task[None] | None,
    ) -> None:
        deadline = time.monotonic() + self.config.agent.shutdown_timeout_s - 0.5
        self.notifier.stopping()
        log.info("shutting down")
        for task in background:
            task.cancel()
        if self.kiosk_hub is not None:
            self.kiosk_hub.close()  # end the pages' live streams, or the web server would wait on them
        if self.live_hub is not None:
            self.live_hub.close()  # the same for the web UI's live streams
        for web_server in self._web_servers:
            web_server.should_exit = True
        if session_task is not None and self.session is not None:
            self.session.request_stop()
            try:
                await asyncio.wait_for(asyncio.shield(session_task), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("cloud session did not close in time; dropping it")
                session_task.cancel()
        for web_server in self._web_servers:
            web_server.force_exit = time.monotonic() > deadline

    async def _watchdog(self, interval: float) -> None:
        # Pinged from the event loop itself: if the loop hangs, the pings stop and systemd restarts us.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _adopt_lockers(self, lockers: Lockers) -> None:
        """The lockers feature's parts, as the web UI, the other features and the tests reach them."""
        self._lockers_built = lockers
        self.lockers, self.locker_staff, self.audit = lockers.service, lockers.staff, lockers.audit
        self._audit_sink, self.locker_buses, self.lock_boards = lockers.audit_sink, lockers.buses, lockers.boards
        self._gpio_devices = lockers.gpio_devices

    async def _build_features(self, ctx: WiringContext, boot: int, *, cloud_up: Callable[[], bool]) -> None:
        """Every configured feature, each through its wiring module, in an order where each gets what it uses;
        what each runs goes into `_feature_tasks` (started by _run_tasks, stopped with the others)."""
        cfg = self.config
        tasks = self._feature_tasks
        if cfg.lockers.enabled:
            lockers = await build_lockers(ctx)
            self._adopt_lockers(lockers)
            tasks.append(("lockers", functools.partial(run_lockers, lockers, ctx.clock)))
        if cfg.base_stations or cfg.labels.wifi_labels:
            labels = await build_labels(ctx)
            self.labels, self.renderer = labels.service, labels.renderer
            tasks.append(("labels", labels.service.run))
        picking = build_picking(ctx, self.labels) if cfg.picking.enabled and self.labels is not None else None
        if picking is not None:
            self.picking = picking.service
            tasks.append(("picking", picking.service.run))
            self.scanners.extend(picking.scanners)
            tasks.extend((f"scanner-{s.name}", s.run) for s in picking.scanners)
        if self._lockers_built is not None:
            self.shelves = build_shelves(ctx, self._lockers_built, self.labels)
            tasks.append(("pickup-shelves", self.shelves.run))
        self.orders = orders = build_orders(ctx)
        tasks.append(("orders-purge", orders.purge_loop))
        self.scan_links = build_scan_links(ctx, orders, cloud_up)
        kiosks = build_kiosks(ctx, orders, self.lockers)
        if kiosks is not None:
            self.kiosk_hub, self.kiosk_api = kiosks.hub, kiosks.api
            tasks.append(("kiosks", kiosks.hub.run))
            self.scanners.extend(kiosks.scanners)
            tasks.extend((f"scanner-{s.name}", s.run) for s in kiosks.scanners)
        await orders.recover()  # orders stored but not yet announced when the agent last stopped
        if cfg.local_broker.enabled:
            self.gateway = build_device_gateway(ctx, boot, kiosks, picking)
            tasks.append(("device-gateway", self.gateway.run))

    def _on_signal(self, sig: int) -> None:
        log.info("received %s", signal.Signals(sig).name)
        self._stop.set()

    def _session_settings(self) -> SessionSettings:
        c = self.config.cloud
        tls = None
        if c.tls.enabled:
            tls = TlsSettings(
                ca_file=str(c.tls.ca_file) if c.tls.ca_file else None,
                cert_file=str(c.tls.cert_file) if c.tls.cert_file else None,
                key_file=str(c.tls.key_file) if c.tls.key_file else None,
                key_password=read_secret(CLOUD_KEY_PASSPHRASE, self._env),
                check_hostname=c.tls.check_hostname,
            )
        endpoint = Endpoint(
            host=c.host,
            port=c.port,
            client_id=self.config.client_id,
            keepalive=c.keepalive_s,
            tls=tls,
            username=c.username,
            password=read_secret(CLOUD_PASSWORD, self._env) if c.username else None,
            connect_timeout=c.connect_timeout_s,
            session_expiry=c.session_expiry_s,
        )
        return SessionSettings(
            endpoint=endpoint,
            protocol=Protocol(c.protocol),
            inflight_window=c.inflight_window,
            backoff_min=c.backoff_min_s,
            backoff_max=c.backoff_max_s,
            ack_timeout=self.config.ack_timeout_s,
            agent_version=__version__,
        )
