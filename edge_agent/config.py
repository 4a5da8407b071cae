"""The agent's configuration: one TOML file, modelled with pydantic, errors reported by key path.

Every key is documented in config/agent.example.toml. Secrets are never in this file: they come from
the environment or from systemd credentials (see edge_agent.secrets).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/agent.toml")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one `key.path: message` line per error."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s) in the configuration")
        self.source = source
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_file(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths are relative to the config file's folder; the file must exist."""
    if value is None:
        return None
    base = (info.context or {}).get("base_dir")
    path = value if value.is_absolute() or base is None else Path(base) / value
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


class AgentSection(_Section):
    store_id: str = Field(
        pattern=ID_PATTERN,
        description="This store's id, as the cloud knows it. Appears in every topic and event.",
    )
    data_dir: Path = Field(
        Path("/var/lib/edge-agent"),
        description="Where the SQLite database (agent.db), its backups and generated files live.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Lowest level logged.")
    shutdown_timeout_s: float = Field(
        5.0, gt=0, le=9, description="SIGTERM to exit, at most: say offline, disconnect, close the database."
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="The event loop the agent runs on: uvloop (less CPU per request and message), or asyncio's "
        "own loop. uvloop not installed: asyncio's, with a warning.",
    )


class WebSection(_Section):
    enabled: bool = Field(True, description="Serve the web UI, /healthz and /metrics.")
    host: str = Field("0.0.0.0", description="Address to listen on.")  # noqa: S104 - technicians reach it over the LAN
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the web UI; 0 picks a free one (tests).")
    metrics_loopback_only: bool = Field(
        False, description="Answer /metrics only to clients on 127.0.0.1 / ::1 (403 to others)."
    )
    https: bool = Field(
        True,
        description="Also serve the web UI over HTTPS on https_port. Technicians reaching the admin pages from "
        "the LAN over plain HTTP are then sent there; shopper pages, /healthz and /metrics stay on port.",
    )
    https_port: int = Field(8443, ge=0, le=65535, description="TCP port of HTTPS; 0 picks a free one (tests).")
    tls_cert_file: Path | None = Field(
        None,
        description="Certificate (PEM, with its chain) for HTTPS. Unset: a self-signed certificate is made on "
        "first start in the data directory (web-tls/) and renewed before it expires.",
    )
    tls_key_file: Path | None = Field(None, description="Unencrypted private key (PEM) of tls_cert_file.")

    _tls_files = field_validator("tls_cert_file", "tls_key_file")(_resolve_file)

    @model_validator(mode="after")
    def _https_settings(self) -> WebSection:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            missing = "tls_key_file" if self.tls_key_file is None else "tls_cert_file"
            raise ValueError(f"tls_cert_file and tls_key_file go together: {missing} is missing")
        if self.https and self.https_port != 0 and self.https_port == self.port:
            raise ValueError("https_port must differ from port")
        return self


class TlsSection(_Section):
    enabled: bool = Field(True, description="Use TLS to the cloud broker.")
    ca_file: Path | None = Field(
        None, description="CA bundle that signed the broker's certificate; the system store when unset."
    )
    cert_file: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    key_file: Path | None = Field(
        None,
        description="Private key of cert_file (PEM). Its passphrase, if any, comes from "
        "EDGE_AGENT_CLOUD_KEY_PASSPHRASE or the credential cloud-key-passphrase.",
    )
    check_hostname: bool = Field(True, description="Check the broker's name against its certificate.")

    _files = field_validator("ca_file", "cert_file", "key_file")(_resolve_file)

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsSection:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise ValueError(f"cert_file and key_file go together: {missing} is missing")
        return self


class CloudSection(_Section):
    enabled: bool = Field(True, description="Connect to the cloud broker. Off: events wait in the outbox.")
    host: str = Field("localhost", min_length=1, description="Cloud MQTT broker host name or address.")
    port: int = Field(8883, ge=1, le=65535, description="Cloud broker port (8883 for TLS, 1883 plain).")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT version: auto tries 5 and falls back to 3.1.1 if the broker rejects it."
    )
    client_id: str | None = Field(
        None, pattern=ID_PATTERN, description="MQTT client id; default edge-agent-{store_id}."
    )
    username: str | None = Field(
        None,
        description="Username for the broker. Its password comes from EDGE_AGENT_CLOUD_PASSWORD "
        "or the credential cloud-password.",
    )
    topic_prefix: str = Field("retail/v1", pattern=TOPIC_PREFIX_PATTERN, description="Root of the topic tree.")
    keepalive_s: int = Field(30, ge=2, le=600, description="MQTT keepalive.")
    inflight_window: int = Field(100, ge=1, le=1000, description="Events sent but not yet acknowledged, at most.")
    backoff_min_s: float = Field(1.0, gt=0, description="First reconnect delay ceiling (full jitter).")
    backoff_max_s: float = Field(60.0, gt=0, description="Largest reconnect delay.")
    ack_timeout_s: float | None = Field(
        None, gt=0, description="Reconnect when no PUBACK comes for this long; default 2 x keepalive_s."
    )
    session_expiry_s: int = Field(
        7 * 86400,
        ge=0,
        description="Persistent session lifetime at the broker, so commands sent during an outage "
        "still arrive. 0: clean sessions.",
    )
    connect_timeout_s: float = Field(10.0, gt=0, le=120, description="TCP + TLS + CONNACK, at most.")
    tls: TlsSection = Field(default_factory=TlsSection, description="TLS settings.")  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _backoff_order(self) -> CloudSection:
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError(
                f"backoff_min_s ({self.backoff_min_s}) is larger than backoff_max_s ({self.backoff_max_s})"
            )
        return self


class OutboxSection(_Section):
    max_bytes: int = Field(
        1024**3, ge=1024 * 1024, description="Size bound of the outbox (payloads plus 256 bytes per event)."
    )
    critical_reserve: float = Field(
        0.05,
        ge=0,
        le=0.5,
        description="Share of max_bytes kept for critical events (orders, pickups, scans, alarms, audit).",
    )


class CommandsSection(_Section):
    max_payload_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024, description="Larger commands are refused.")
    retention_days: int = Field(7, ge=7, le=365, description="How long command ids and results are kept.")


class LocalBrokerSection(_Section):
    enabled: bool = Field(True, description="Connect to the in-store broker for Wi-Fi devices.")
    host: str = Field("127.0.0.1", min_length=1, description="In-store Mosquitto host.")
    port: int = Field(1883, ge=1, le=65535, description="In-store Mosquitto port.")
    topic_prefix: str = Field("store/v1", pattern=TOPIC_PREFIX_PATTERN, description="Root of the in-store topics.")
    username: str | None = Field(
        None,
        description="Username on the in-store broker; password from EDGE_AGENT_LOCAL_BROKER_PASSWORD "
        "or the credential local-broker-password.",
    )
    max_message_bytes: int = Field(16384, ge=256, le=1024 * 1024, description="Larger device messages are rejected.")
    reconnect_max_s: float = Field(
        2.0, ge=0.5, le=60.0,
        description="Longest wait between reconnect attempts to the in-store broker (it is on this box: keep it "
        "short, so that the agent is back within seconds after the broker restarts).",
    )
    adopt: Literal["auto", "allow_list"] = Field(
        "allow_list",
        description="Which MQTT devices are adopted: \"auto\" every device heard, \"allow_list\" only "
        "allowed_devices; the others are only listed as discovered, for a technician to adopt in the web UI.",
    )
    allowed_devices: list[str] = Field(
        default_factory=list, max_length=10000, description="Device ids adopted when adopt = \"allow_list\"."
    )
    device_kiosks: dict[str, str] = Field(
        default_factory=dict,
        description="Binds devices to kiosks (device id -> kiosk id): their scans go to that kiosk's cart. "
        "Wins over a kiosk_id the device announces.",
    )
    state_coalesce_s: float = Field(
        1.0, ge=0.05, le=60.0, description="Device state goes to the cloud at most once per this many seconds."
    )

    @field_validator("allowed_devices")
    @classmethod
    def _device_ids(cls, value: list[str]) -> list[str]:
        for device_id in value:
            if not re.fullmatch(ID_PATTERN, device_id):
                raise ValueError(f"invalid device id {device_id!r}")
        return value

    @field_validator("device_kiosks")
    @classmethod
    def _bindings(cls, value: dict[str, str]) -> dict[str, str]:
        for device_id, kiosk_id in value.items():
            if not re.fullmatch(ID_PATTERN, device_id):
                raise ValueError(f"invalid device id {device_id!r}")
            if not re.fullmatch(ID_PATTERN, kiosk_id):
                raise ValueError(f"invalid kiosk id {kiosk_id!r} for device {device_id}")
        return value


QUIET_HOURS_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"


class LabelsSection(_Section):
    public_base_url: str = Field(
        "http://127.0.0.1:8080",
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="Base of the scan links printed as QR codes on tags: {public_base_url}/s/{code}.",
    )
    locale: str = Field(
        "zh_CN", pattern=r"^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})*$", description="Store locale for tag texts and prices."
    )
    low_battery_mv: int = Field(2450, ge=1800, le=3600, description="Below this a tag reports tag.low_battery.")
    quiet_hours: str | None = Field(
        None,
        pattern=QUIET_HOURS_PATTERN,
        description="Local time span, e.g. \"22:00-07:00\", during which cosmetic updates wait.",
    )
    max_in_flight_per_station: int = Field(8, ge=1, le=64, description="Transfers at once per base station.")
    max_attempts: int = Field(6, ge=1, le=50, description="Tries per tag update before tag.update_failed.")
    render_workers: int = Field(0, ge=0, le=64, description="Rendering processes; 0 = one per CPU core.")
    state_interval_s: float = Field(300.0, ge=5, description="A tag's state goes to the cloud at most this often.")
    wifi_labels: bool = Field(
        False, description="Also drive Wi-Fi labels on the in-store broker (needs local_broker.enabled)."
    )
    adopt: Literal["auto", "allow_list"] = Field(
        "allow_list",
        description="Which new tags a base station reports are adopted: \"auto\" every one, \"allow_list\" only "
        "allowed_tags; the others are listed as discovered and get no pictures until a technician adopts or "
        "pairs them (a pairing, from the cloud, the web UI or a CSV file, adopts the tag).",
    )
    allowed_tags: list[str] = Field(
        default_factory=list, max_length=100_000,
        description="Tag ids (16 hex characters) adopted on sight when adopt = \"allow_list\".",
    )

    @field_validator("allowed_tags")
    @classmethod
    def _tag_ids(cls, value: list[str]) -> list[str]:
        tags = [t.lower() for t in value]
        for tag_id in tags:
            if not re.fullmatch(r"[0-9a-f]{16}", tag_id):
                raise ValueError(f"invalid tag id {tag_id!r}: 16 hex characters")
        return tags


class ScanLinksSection(_Section):
    product_url_template: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        max_length=1024,
        description="Where a scan link redirects (302): the cloud's product or order page. Placeholders "
        "{sku}, {store_id}, {tag_id} (URL-encoded). Unset: the agent's local product page answers.",
    )
    local_page: Literal["never", "when_cloud_down", "always"] = Field(
        "never",
        description="When the local product page (with order for pickup) answers although a template is set: "
        "never, when_cloud_down (the agent's cloud link is down: the store's internet likely is too), always.",
    )
    rate_limit_per_minute: int = Field(
        60, ge=1, le=1_000_000, description="Scan-link requests per minute and client address, sustained."
    )
    rate_limit_burst: int = Field(
        20, ge=1, le=100_000, description="Requests a client address may make at once before the rate applies."
    )

    @field_validator("product_url_template")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            value.format(sku="s", store_id="s", tag_id="t")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{sku}}, {{store_id}} and {{tag_id}} may appear in braces ({exc!r})") from None
        return value


FULFILMENT = Literal["phone", "counter", "locker", "till"]


def _default_fulfilments() -> list[FULFILMENT]:
    return ["counter", "till"]


class KioskStoreSection(_Section):
    """[kiosk]: what every kiosk of the store offers (edge_agent.services.orders, docs/kiosk-api.md)."""

    fulfilments: list[FULFILMENT] = Field(
        default_factory=_default_fulfilments,
        min_length=1,
        max_length=4,
        description="Checkout choices, in the order shown: phone (pay on the phone: QR code to the cloud "
        "checkout), counter (reserve, pick up at the counter), locker (reserve for a locker), till (pay at the "
        "till with the order number).",
    )
    checkout_url_template: str | None = Field(
        None,
        pattern=r"^https://[^\s]+$",
        max_length=1024,
        description="The cloud checkout for phone orders; placeholders {store_id}, {order_id}, {order_number}.",
    )
    currency: str = Field(
        "CNY", pattern=r"^[A-Z]{3}$", description="The store's currency (ISO 4217), shown before a product is."
    )
    idle_s: int = Field(60, ge=15, le=3600, description="Seconds without a touch before the kiosk asks.")
    warning_s: int = Field(15, ge=5, le=120, description="Seconds the question shows before the kiosk resets.")
    heartbeat_s: float = Field(
        45.0, ge=5, le=600, description="A kiosk without a live stream is online this long after a heartbeat."
    )
    orders_per_minute: int = Field(
        10, ge=1, le=10_000, description="Orders one client address may place per minute through the kiosk API."
    )

    @field_validator("fulfilments")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        twice = sorted({f for f in value if value.count(f) > 1})
        if twice:
            raise ValueError(f"each fulfilment once: {', '.join(twice)} repeated")
        return value

    @field_validator("checkout_url_template")
    @classmethod
    def _checkout_placeholders(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            value.format(store_id="s", order_id="o", order_number="n")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"only {{store_id}}, {{order_id}} and {{order_number}} may appear in braces ({exc!r})"
            ) from None
        return value

    @model_validator(mode="after")
    def _phone_needs_a_checkout(self) -> KioskStoreSection:
        if "phone" in self.fulfilments and self.checkout_url_template is None:
            raise ValueError("the phone fulfilment needs checkout_url_template")
        return self


class KioskSection(_Section):
    """[[kiosks]]: one touch kiosk, its page at /kiosk/{id}."""

    id: str = Field(
        pattern=ID_PATTERN, max_length=58, description="Kiosk id: its page is /kiosk/{id}, its state kiosk-{id}."
    )
    name: str = Field(min_length=1, max_length=64, description="Where it stands, for staff: \"Entrance\".")
    lang: Literal["zh-CN", "en"] = Field("zh-CN", description="Language of the kiosk's pages.")
    orientation: Literal["portrait", "landscape"] = Field(
        "portrait", description="Screen orientation: portrait (1080x1920) or landscape (1920x1080)."
    )
    scanner_url: str | None = Field(
        None,
        min_length=1,
        description="A serial barcode scanner of this kiosk on the mini-PC, by pyserial URL (CR/LF-terminated).",
    )
    scanner_baudrate: int = Field(9600, ge=1200, le=921_600, description="Line rate of the serial scanner.")


class BaseStationSection(_Section):
    name: str = Field(pattern=ID_PATTERN, description="Short name, shown in the UI and in tag records.")
    url: str = Field(
        min_length=1,
        description="pyserial URL: /dev/serial/by-id/..., /dev/ttyUSB0, socket://host:port, rfc2217://host:port.",
    )
    baudrate: int = Field(115200, ge=1200, le=4_000_000, description="Line rate of the serial port.")


class LockerBusSection(_Section):
    name: str = Field(pattern=ID_PATTERN, description="Name of the RS485 bus, used by [[lockers.boards]].")
    url: str = Field(min_length=1, description="pyserial URL of the bus adapter (/dev/serial/by-id/..., socket://).")
    baudrate: int = Field(19200, ge=1200, le=115200, description="Line rate; Kerong boards default to 19200 8N1.")


class LockerBoardSection(_Section):
    id: str = Field(pattern=ID_PATTERN, description="Board id, used by [[lockers.compartments]].")
    bus: str = Field(description="The [[lockers.buses]] name the board hangs on.")
    number: int = Field(ge=0, le=15, description="Board number set by its DIP switches (high address nibble).")
    locks: int = Field(16, ge=1, le=16, description="Locks wired to the board.")


class GpioLockSection(_Section):
    lock_pin: int = Field(ge=0, le=53, description="GPIO (BCM number) driving the lock's relay: on = released.")
    door_pin: int = Field(ge=0, le=53, description="GPIO of the door switch, pulled up: low = door closed.")
    item_pin: int | None = Field(None, ge=0, le=53, description="GPIO of the item sensor, pulled up: low = item.")


class GpioBoardSection(_Section):
    id: str = Field(pattern=ID_PATTERN, description="Board id, used by [[lockers.compartments]].")
    locks: list[GpioLockSection] = Field(
        min_length=1, max_length=16, description="The board's locks in order: lock 1 first."
    )
    pulse_s: float = Field(0.5, gt=0, le=10, description="How long an unlock energises the lock.")
    confirm_s: float = Field(2.0, gt=0, le=30, description="The door must open within this after an unlock.")


class CompartmentSection(_Section):
    id: str = Field(pattern=ID_PATTERN, description="Compartment id as shown to people, e.g. A-12.")
    bank: str = Field(pattern=ID_PATTERN, description="The locker bank (one touch screen) it belongs to.")
    board: str = Field(description="The [[lockers.boards]] id.")
    lock: int = Field(ge=1, le=16, description="Lock number on the board, from 1.")
    size: Literal["S", "M", "L"] = Field(description="Small, medium or large.")
    row: int = Field(ge=1, le=20, description="Row in the bank, 1 = top (for the door message).")
    column: int = Field(ge=1, le=20, description="Column in the bank, 1 = left.")


class LockersSection(_Section):
    enabled: bool = Field(False, description="Run the pickup lockers (needs the store's HMAC key secret).")
    hold_days: int = Field(7, ge=1, le=60, description="How long an order waits when pickup.create gives no time.")
    door_open_alarm_s: float = Field(60.0, gt=0, le=3600, description="A door open longer: alarm.door_left_open.")
    jam_s: float = Field(10.0, gt=0, le=120, description="Unlocked but still latched after this long: jammed.")
    buses: list[LockerBusSection] = Field(default_factory=list, description="RS485 buses of lock boards.")
    boards: list[LockerBoardSection] = Field(default_factory=list, description="Kerong KR-CU16 lock boards.")
    gpio_boards: list[GpioBoardSection] = Field(
        default_factory=list, description="Locks and door sensors wired to the mini-PC's GPIO (gpiozero)."
    )
    alarm_led_pin: int | None = Field(None, ge=0, le=53, description="GPIO of a status LED that blinks on alarms.")
    alarm_buzzer_pin: int | None = Field(None, ge=0, le=53, description="GPIO of a buzzer that beeps on alarms.")
    compartments: list[CompartmentSection] = Field(default_factory=list, description="Compartments, one table each.")

    @model_validator(mode="after")
    def _references(self) -> LockersSection:
        buses = {b.name for b in self.buses}
        boards: dict[str, int] = {b.id: b.locks for b in self.boards}
        problems = [f"board {b.id}: no bus named {b.bus!r}" for b in self.boards if b.bus not in buses]
        for g in self.gpio_boards:
            if g.id in boards:
                problems.append(f"board {g.id}: id used twice")
            boards[g.id] = len(g.locks)
        pins = [p for g in self.gpio_boards for lock in g.locks for p in (lock.lock_pin, lock.door_pin, lock.item_pin)]
        pins += [self.alarm_led_pin, self.alarm_buzzer_pin]
        used = [p for p in pins if p is not None]
        twice = sorted({p for p in used if used.count(p) > 1})
        if twice:
            problems.append(f"GPIO pins used twice: {twice}")
        places: set[tuple[str, int]] = set()
        ids: set[str] = set()
        for c in self.compartments:
            locks = boards.get(c.board)
            if locks is None:
                problems.append(f"compartment {c.id}: no board {c.board!r}")
            elif c.lock > locks:
                problems.append(f"compartment {c.id}: board {c.board} has {locks} locks, not {c.lock}")
            if (c.board, c.lock) in places:
                problems.append(f"compartment {c.id}: lock {c.lock} of {c.board} is used twice")
            if c.id in ids:
                problems.append(f"compartment {c.id}: id used twice")
            places.add((c.board, c.lock))
            ids.add(c.id)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class PickingSection(_Section):
    enabled: bool = Field(True, description="Pick-to-light on the shelf tags (needs base stations or Wi-Fi labels).")
    led_renew_s: float = Field(30.0, ge=5, le=120, description="A lit pick LED is renewed this often.")
    fast_s: int = Field(
        300, ge=30, le=3600, description="Fast check-in asked of a picking zone's tags at a time (renewed at half)."
    )
    zone_linger_s: float = Field(
        600.0, ge=0, le=7200, description="A picking zone stays in fast check-in this long after its last list."
    )
    scanners: list[str] = Field(
        default_factory=list, max_length=256,
        description="MQTT devices (ids) that are staff scanners: their scans confirm pick lines. Scanners not "
        "bound to a kiosk are staff scanners anyway.",
    )
    serial_scanners: list[str] = Field(
        default_factory=list, max_length=16,
        description="Staff barcode scanners on serial lines (pyserial URLs, e.g. /dev/ttyACM0) for picking.",
    )


class AgentConfig(_Section):
    agent: AgentSection
    web: WebSection = Field(default_factory=WebSection)  # type: ignore[arg-type]
    cloud: CloudSection = Field(default_factory=CloudSection)  # type: ignore[arg-type]
    outbox: OutboxSection = Field(default_factory=OutboxSection)  # type: ignore[arg-type]
    commands: CommandsSection = Field(default_factory=CommandsSection)  # type: ignore[arg-type]
    local_broker: LocalBrokerSection = Field(default_factory=LocalBrokerSection)  # type: ignore[arg-type]
    labels: LabelsSection = Field(default_factory=LabelsSection)  # type: ignore[arg-type]
    lockers: LockersSection = Field(default_factory=LockersSection)  # type: ignore[arg-type]
    scan_links: ScanLinksSection = Field(default_factory=ScanLinksSection)  # type: ignore[arg-type]
    kiosk: KioskStoreSection = Field(default_factory=KioskStoreSection)  # type: ignore[arg-type]
    picking: PickingSection = Field(default_factory=PickingSection)  # type: ignore[arg-type]
    kiosks: list[KioskSection] = Field(
        default_factory=list, description="Touch kiosks, one [[kiosks]] table each.", max_length=64
    )
    base_stations: list[BaseStationSection] = Field(
        default_factory=list, description="Radio base stations of e-ink tags, one [[base_stations]] table each."
    )

    @model_validator(mode="after")
    def _wifi_labels_need_the_broker(self) -> AgentConfig:
        if self.labels.wifi_labels and not self.local_broker.enabled:
            raise ValueError("labels.wifi_labels needs local_broker.enabled = true")
        return self

    @model_validator(mode="after")
    def _kiosks_are_consistent(self) -> AgentConfig:
        ids = [k.id for k in self.kiosks]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"kiosks: ids must be unique, repeated: {', '.join(dupes)}")
        ports = [k.scanner_url for k in self.kiosks if k.scanner_url is not None]
        shared = sorted({p for p in ports if ports.count(p) > 1})
        if shared:
            raise ValueError(f"kiosks: a serial scanner belongs to one kiosk, shared: {', '.join(shared)}")
        return self

    @model_validator(mode="after")
    def _unique_station_names(self) -> AgentConfig:
        names = [b.name for b in self.base_stations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"base_stations: names must be unique, repeated: {', '.join(dupes)}")
        return self

    @property
    def client_id(self) -> str:
        return self.cloud.client_id or f"edge-agent-{self.agent.store_id}"

    @property
    def ack_timeout_s(self) -> float:
        return self.cloud.ack_timeout_s or 2.0 * self.cloud.keepalive_s


def format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "required key is missing"
        else:
            message = err["msg"].removeprefix("Value error, ")
            if "input" in err and kind not in ("value_error",) and not isinstance(err["input"], dict):
                message = f"{message} (got {err['input']!r})"
        problems.append(f"{path}: {message}")
    return problems


def parse_config(data: dict[str, Any], *, source: str = "<config>", base_dir: Path | None = None) -> AgentConfig:
    try:
        return AgentConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(source, format_errors(exc)) from None


def load_config(path: Path) -> AgentConfig:
    """Read and validate a config file; raises ConfigError with every problem found."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), [f"{path}: file not found"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    return loads_config(text, source=str(path), base_dir=path.parent)


def loads_config(text: str, *, source: str, base_dir: Path | None) -> AgentConfig:
    """Validate configuration text as `load_config` does a file (the web UI's editor checks with this)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"{source}: TOML syntax error: {exc}"]) from None
    return parse_config(data, source=source, base_dir=base_dir)


def redacted(config: AgentConfig) -> dict[str, Any]:
    """The configuration as plain data, for `config.get` and the web UI (holds no secrets by design)."""
    return config.model_dump(mode="json")
