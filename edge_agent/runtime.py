"""The composition root: opens storage, has each feature built by its wiring module, runs what they registered
under one TaskGroup, and stops within the deadline. It knows no feature by name (edge_agent/wiring/ does).

Start-up order: web sockets bound (a port in use is reported first) -> database (migrations, backup) -> outbox
(boot counter) -> clock -> commands and cloud session (wiring/cloud.py) -> features (wiring/features.py) -> web UI
(wiring/web.py); then READY=1 to systemd. SIGTERM or SIGINT starts the shutdown, bounded by
`agent.shutdown_timeout_s` (5 s): cancel the background tasks (device input stops), let the web servers finish
their answers, publish retained `offline` and disconnect cleanly, then close what the features opened and the
database (every commit is already durable, so nothing durable can be lost at any point).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar

from cloud_link.bus import EventBus
from cloud_link.commands import CommandIntake, CommandRegistry
from cloud_link.events import Event, EventError
from cloud_link.outbox import Outbox, OutboxFullError
from cloud_link.session import CloudSession
from cloud_link.topics import Topics
from edge_agent import __version__
from edge_agent.commands.builtin import register_builtin_commands
from edge_agent.commands.catalog import register_catalog_commands
from edge_agent.config import AgentConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.secrets import missing_secrets
from edge_agent.services.agent_clock import AgentClock, ClockReport
from edge_agent.services.catalog import ProductCatalog
from edge_agent.storage import Database
from edge_agent.systemd_notify import SystemdNotifier
from edge_agent.wiring.cloud import build_cloud_session, build_command_intake
from edge_agent.wiring.context import Running, StartupError, WiringContext
from edge_agent.wiring.features import Features, build_features
from edge_agent.wiring.parts import AgentParts
from edge_agent.wiring.web import WebUi, bind_web, build_web

# StartupError is raised by the wiring; the CLI and tests catch it here.
__all__ = ["Agent", "StartupError"]

log = logging.getLogger(__name__)

ExtraTask = Callable[["Agent"], Coroutine[Any, Any, Any]]
T = TypeVar("T")
EventLoopName = Literal["uvloop", "asyncio"]
class Agent(AgentParts):
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
        self._stop = asyncio.Event()
        # Set as run() builds them, in this order; None before (and the features' and web UI's parts below).
        self.web_port: int | None = None
        self.https_port: int | None = None  # the web UI over HTTPS (`[web] https`), once bound
        self.db: Database | None = None
        self.outbox: Outbox | None = None
        self.bus: EventBus | None = None
        self.clock: AgentClock | None = None  # the steady clock for durations; the wall clock, judged
        self.catalog: ProductCatalog | None = None
        self.commands: CommandIntake | None = None
        self.session: CloudSession | None = None
        self.features: Features | None = None
        self.web: WebUi | None = None

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

    async def refresh_certificate(self, now: dt.datetime | None = None) -> bool:
        """The web UI's HTTPS certificate renewed when due (WebUi.refresh_certificate); False without HTTPS."""
        return False if self.web is None else await self.web.refresh_certificate(now)

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

        sockets = bind_web(cfg)
        if sockets is not None:
            self.web_port, self.https_port = sockets.port, sockets.https_port
        self.db = db = Database(cfg.agent.data_dir)
        running: Running | None = None
        try:
            outbox = self.outbox = Outbox(
                db,
                self.topics,
                max_bytes=cfg.outbox.max_bytes,
                reserve_fraction=cfg.outbox.critical_reserve,
                observer=self.metrics,
            )
            self.bus = EventBus(outbox)
            boot = await outbox.open()
            clock = self.clock = AgentClock(db)
            await clock.start()
            clock.on_change = self._clock_changed
            self.metrics.watch_clock(lambda: clock.trusted, self._clock_offset_s)
            self.metrics.watch_outbox(outbox.stats)
            log.info("store %s, boot %d, database schema v%d at %s, event loop %s", cfg.agent.store_id, boot,
                     db.version, db.path, describe_loop(loop))

            registry = CommandRegistry()
            register_builtin_commands(registry, cfg, lambda: outbox.boot)
            self.catalog = catalog = ProductCatalog(db)
            register_catalog_commands(registry, catalog)
            # The command intake and the cloud session first: the features register their commands into the
            # registry the intake already holds, and the scan links ask the session whether the cloud is up.
            intake = self.commands = build_command_intake(cfg, db, outbox, registry, metrics=self.metrics, clock=clock)
            session = self.session = build_cloud_session(cfg, outbox, intake, self.metrics, self._env)
            ctx = WiringContext(cfg, db, self.bus, self.metrics, registry, clock, catalog, env=self._env)
            running = ctx.running
            self.features = features = await build_features(
                ctx, boot, cloud_up=lambda: session is not None and session.connected
            )
            if sockets is not None:
                self.web = await build_web(
                    ctx, features, sockets, session=session, started_at=started_at, config_path=self.config_path
                )
            await self._run_tasks(running, intake, session)
        finally:
            if running is not None:
                running.closed()
            db.close()
            if sockets is not None:
                sockets.close()
            log.info("stopped")

    async def _run_tasks(self, running: Running, intake: CommandIntake, session: CloudSession | None) -> None:
        assert self.outbox is not None and self.clock is not None
        async with asyncio.TaskGroup() as tg:
            background: list[asyncio.Task[Any]] = [
                tg.create_task(intake.run(), name="command-intake"),
                tg.create_task(intake.purge_loop(), name="command-purge"),
                tg.create_task(self.outbox.report_dropped_loop(), name="telemetry-drop-report"),
                tg.create_task(self.clock.run(), name="clock"),
            ]
            session_task = tg.create_task(session.run(), name="cloud-session") if session is not None else None
            background.extend(tg.create_task(run(), name=name) for name, run in running.tasks)
            background.extend(tg.create_task(extra(self), name=f"extra-{i}") for i, extra in enumerate(self._extra))
            for name, serve in running.servers:
                tg.create_task(serve(), name=name)  # they end by themselves once asked (running.stopping)
            if self.notifier.watchdog_interval_s:
                background.append(tg.create_task(self._watchdog(self.notifier.watchdog_interval_s), name="watchdog"))
            self.notifier.ready()
            self.started.set()
            log.info("agent %s ready", __version__)

            await self._stop.wait()
            await self._shutdown(running, background, session, session_task)

    async def _shutdown(
        self,
        running: Running,
        background: list[asyncio.Task[Any]],
        session: CloudSession | None,
        session_task: asyncio.Task[None] | None,
    ) -> None:
        deadline = time.monotonic() + self.config.agent.shutdown_timeout_s - 0.5
        self.notifier.stopping()
        log.info("shutting down")
        for task in background:
            task.cancel()
        running.stopping()
        if session_task is not None and session is not None:
            session.request_stop()
            try:
                await asyncio.wait_for(asyncio.shield(session_task), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("cloud session did not close in time; dropping it")
                session_task.cancel()
        if time.monotonic() > deadline:
            running.deadline_passed()

    async def _watchdog(self, interval: float) -> None:
        # Pinged from the event loop itself: if the loop hangs, the pings stop and systemd restarts us.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _on_signal(self, sig: int) -> None:
        log.info("received %s", signal.Signals(sig).name)
        self._stop.set()


# -- the event loop the agent runs on ------------------------------------------------------------------------
# uvloop unless `agent.event_loop = "asyncio"` asks for the standard one.
#
# The agent is one process whose event loop carries the web server, both MQTT links, the serial links and the
# relay, so that loop's own cost is paid on every request and every message. uvloop (libuv under the asyncio
# API) takes about a sixth of the CPU off each scan link served (bench.kiosk's scan_link_rps), and as much
# off everything else the loop does. The standard loop stays one setting away, for a platform without uvloop
# or to rule the loop out while chasing a fault.


def loop_factory(name: EventLoopName) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the loop `name` asks for; the standard loop (with a warning) when uvloop is not installed."""
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        log.warning("agent.event_loop is uvloop but uvloop is not installed here: running on asyncio's own loop")
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def describe_loop(loop: asyncio.AbstractEventLoop) -> str:
    """`uvloop 0.23.0` or `asyncio (_UnixSelectorEventLoop)`: what the start-up log line names."""
    module = type(loop).__module__.split(".")[0]
    if module == "uvloop":
        return f"uvloop {importlib.import_module('uvloop').__version__}"
    return f"asyncio ({type(loop).__name__})"


def run_on_loop(main: Coroutine[Any, Any, T], name: EventLoopName) -> T:
    """`asyncio.run(main)` on the loop `name` asks for."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
