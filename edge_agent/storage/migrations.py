"""Numbered schema migrations.

Each migration is applied once, in order, inside one transaction together with the row recording it
in `schema_migrations`. Never edit a migration that has shipped: add the next number instead.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "counters, outbox, device state, commands",
        (
            # Monotonic counters: the boot counter and the device-state revision, updated in the
            # same transaction as the rows they count, so a crash can never leave one reused.
            """CREATE TABLE counters (
                name TEXT PRIMARY KEY,
                value INTEGER NOT NULL
            )""",
            "INSERT INTO counters(name, value) VALUES ('boot', 0), ('state_rev', 0)",
            # One row: the last event sequence number handed out, and what the outbox holds. A single
            # UPDATE ... RETURNING per event keeps the hot path to one statement besides the insert.
            """CREATE TABLE outbox_stats (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                seq INTEGER NOT NULL,
                events INTEGER NOT NULL,
                bytes INTEGER NOT NULL
            )""",
            "INSERT INTO outbox_stats(id, seq, events, bytes) VALUES (1, 0, 0, 0)",
            # Events waiting for the cloud's PUBACK, in sequence order.
            """CREATE TABLE outbox (
                seq INTEGER PRIMARY KEY,
                event_id TEXT NOT NULL,
                type TEXT NOT NULL,
                cls TEXT NOT NULL,
                topic TEXT NOT NULL,
                body BLOB NOT NULL,
                size INTEGER NOT NULL,
                created_ms INTEGER NOT NULL
            )""",
            "CREATE INDEX outbox_by_class ON outbox(cls, seq)",
            # Latest state per device; `sent_rev` tells whether the cloud has acknowledged it.
            """CREATE TABLE device_state (
                device_id TEXT PRIMARY KEY,
                rev INTEGER NOT NULL,
                topic TEXT NOT NULL,
                body BLOB NOT NULL,
                size INTEGER NOT NULL,
                sent_rev INTEGER NOT NULL DEFAULT 0,
                updated_ms INTEGER NOT NULL
            )""",
            # Cloud commands seen, for at-most-once execution and for answering repeats.
            """CREATE TABLE commands (
                command_id TEXT PRIMARY KEY,
                type TEXT NOT NULL,
                received_ms INTEGER NOT NULL,
                status TEXT NOT NULL,
                result TEXT
            )""",
            "CREATE INDEX commands_by_age ON commands(received_ms)",
        ),
    ),
    Migration(
        2,
        "product catalog, shelf tags, tag pictures, tag update jobs",
        (
            # The product catalog (edge_agent.services.catalog). Prices are decimal strings, never
            # floats, so 12.80 stays 12.80. `rev` bumps on every change of the row's content, which
            # lets the label renderer tell a changed product from an unchanged one cheaply.
            """CREATE TABLE products (
                sku TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                price TEXT NOT NULL,
                currency TEXT NOT NULL,
                unit_price TEXT,
                unit_label TEXT,
                former_price TEXT,
                promotion TEXT,
                barcode TEXT,
                origin TEXT,
                locale TEXT,
                rev INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL
            )""",
            "CREATE INDEX products_by_barcode ON products(barcode)",
            # Shelf tags (e-ink labels). `tag_id` is 16 lowercase hex characters (the radio address);
            # `current_hash` is the hex hash of the picture the tag itself confirmed showing.
            """CREATE TABLE tags (
                tag_id TEXT PRIMARY KEY,
                type_code INTEGER NOT NULL,
                base_station TEXT,
                rotation INTEGER NOT NULL DEFAULT 0,
                template TEXT NOT NULL DEFAULT 'price',
                sku TEXT REFERENCES products(sku) ON DELETE SET NULL,
                scan_code TEXT NOT NULL UNIQUE,
                current_hash TEXT,
                battery_mv INTEGER,
                temperature_c REAL,
                rssi INTEGER,
                lqi INTEGER,
                fw_version INTEGER,
                last_seen_ms INTEGER,
                adopted INTEGER NOT NULL DEFAULT 1,
                created_ms INTEGER NOT NULL
            )""",
            "CREATE INDEX tags_by_sku ON tags(sku)",
            # Pictures a tag was sent, by hash (zlib of the raw planes): the base of a delta update.
            """CREATE TABLE tag_pictures (
                tag_id TEXT NOT NULL,
                hash TEXT NOT NULL,
                raw_z BLOB NOT NULL,
                created_ms INTEGER NOT NULL,
                PRIMARY KEY (tag_id, hash)
            )""",
            # One update job per tag: newer content replaces older queued content.
            # state: queued|sending|confirmed|failed; priority: 0 technician, 1 price, 2 cosmetic.
            """CREATE TABLE tag_jobs (
                tag_id TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                priority INTEGER NOT NULL,
                reason TEXT NOT NULL,
                target_hash TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_ms INTEGER NOT NULL DEFAULT 0,
                error TEXT,
                created_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL
            )""",
            "CREATE INDEX tag_jobs_by_state ON tag_jobs(state, priority, next_attempt_ms)",
        ),
    ),
    Migration(
        3,
        "pickup codes, code attempts and lockouts, door audit log",
        (
            # Pickup codes (edge_agent.services.pickup_codes). The code itself is never stored: `code_mac`
            # is the hex HMAC-SHA256 of the code under the store's key. state: live|used|cancelled|expired.
            """CREATE TABLE pickup_codes (
                order_id TEXT PRIMARY KEY,
                code_mac TEXT NOT NULL UNIQUE,
                state TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                expires_ms INTEGER NOT NULL,
                used_ms INTEGER
            )""",
            "CREATE INDEX pickup_codes_by_expiry ON pickup_codes(state, expires_ms)",
            # Every code typed at a terminal (ok 1 or 0), for the per-terminal and store-wide failure rates.
            """CREATE TABLE code_attempts (
                terminal TEXT NOT NULL,
                ts_ms INTEGER NOT NULL,
                ok INTEGER NOT NULL
            )""",
            "CREATE INDEX code_attempts_by_terminal ON code_attempts(terminal, ts_ms)",
            "CREATE INDEX code_attempts_by_time ON code_attempts(ts_ms)",
            # A terminal's lockout; kept after it ends so that the next one grows (`level`).
            """CREATE TABLE code_lockouts (
                terminal TEXT PRIMARY KEY,
                until_ms INTEGER NOT NULL,
                level INTEGER NOT NULL
            )""",
            # Every door opening (edge_agent.services.audit). kind: code|staff|remote|test|uncommanded;
            # detail is canonical JSON; hash = sha256(prev_hash || canonical JSON of the row), genesis 64 zeros.
            """CREATE TABLE audit_log (
                seq INTEGER PRIMARY KEY,
                ts_ms INTEGER NOT NULL,
                kind TEXT NOT NULL,
                compartment TEXT,
                actor TEXT,
                order_id TEXT,
                detail TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )""",
            # Append-only through SQL; someone with the file can still drop these, which the hash chain
            # (and the copy sent to the cloud as audit.door_opened) is there to catch.
            """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
            """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
        ),
    ),
    Migration(
        4,
        "locker door operations",
        (
            # One row per door opening attempt (edge_agent.services.doors). The intent is committed
            # before the unlock frame is sent; `attempt` is unique, so one load or collect attempt can
            # never open its door twice, also across a crash. state: intent|opened|not_opened|unknown.
            """CREATE TABLE door_ops (
                op_id TEXT PRIMARY KEY,
                compartment TEXT NOT NULL,
                purpose TEXT NOT NULL,
                attempt TEXT NOT NULL UNIQUE,
                order_id TEXT,
                actor TEXT,
                state TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                finished_ms INTEGER
            )""",
            "CREATE INDEX door_ops_by_compartment ON door_ops(compartment, created_ms)",
        ),
    ),
    Migration(
        5,
        "locker compartments and pickups",
        (
            # Compartments of the pickup lockers (edge_agent.services.lockers): where each lock is, its
            # size (S|M|L) and its place in the bank for the screen's message. `enabled` 0 = out of
            # service, `oos_reason` says why (jammed, unexpected item, staff).
            """CREATE TABLE compartments (
                id TEXT PRIMARY KEY,
                bank TEXT NOT NULL,
                board_id TEXT NOT NULL,
                lock INTEGER NOT NULL,
                size TEXT NOT NULL,
                row INTEGER NOT NULL,
                col INTEGER NOT NULL,
                enabled INTEGER NOT NULL DEFAULT 1,
                oos_reason TEXT,
                UNIQUE (board_id, lock)
            )""",
            # Pickup orders. state: created|loading|ready|collected|cancelled|expired|retrieval;
            # code_issued_by: agent|cloud (the code itself lives only as an HMAC in pickup_codes).
            """CREATE TABLE pickups (
                order_id TEXT PRIMARY KEY,
                size TEXT NOT NULL,
                state TEXT NOT NULL,
                compartment TEXT,
                code_issued_by TEXT NOT NULL,
                hold_until_ms INTEGER NOT NULL,
                reminder_sent INTEGER NOT NULL DEFAULT 0,
                created_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL
            )""",
            "CREATE INDEX pickups_by_state ON pickups(state, hold_until_ms)",
            "CREATE INDEX pickups_by_compartment ON pickups(compartment, state)",
        ),
    ),
    Migration(
        6,
        "locker staff accounts, courier codes, sign-in attempts and lockouts",
        (
            # Staff who sign in on the locker screens (edge_agent.services.locker_staff). The PIN is never
            # stored: `pin_hash` is its argon2id hash (PHC string, with its own salt and parameters).
            """CREATE TABLE locker_staff (
                staff_number TEXT PRIMARY KEY,
                name TEXT,
                pin_hash TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL,
                last_sign_in_ms INTEGER
            )""",
            # One-time courier codes. The code is never stored: `code_mac` is the hex HMAC-SHA256 of it under
            # the store's key. state: live|used|revoked; a code signs in once, while live and before
            # `valid_until_ms` (past that it is dead without any change of state).
            """CREATE TABLE courier_codes (
                code_mac TEXT PRIMARY KEY,
                courier_id TEXT NOT NULL,
                state TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                valid_until_ms INTEGER NOT NULL,
                used_ms INTEGER
            )""",
            "CREATE INDEX courier_codes_by_courier ON courier_codes(courier_id, state)",
            # Sign-in attempts and lockouts per key (a staff terminal `locker-staff:{bank}` or a staff number),
            # kept apart from the pickup codes' tables so that staff sign-ins never count as pickup-code guesses.
            """CREATE TABLE signin_attempts (
                key TEXT NOT NULL,
                ts_ms INTEGER NOT NULL,
                ok INTEGER NOT NULL
            )""",
            "CREATE INDEX signin_attempts_by_key ON signin_attempts(key, ts_ms)",
            "CREATE INDEX signin_attempts_by_time ON signin_attempts(ts_ms)",
            """CREATE TABLE signin_lockouts (
                key TEXT PRIMARY KEY,
                until_ms INTEGER NOT NULL,
                level INTEGER NOT NULL
            )""",
        ),
    ),
    Migration(
        7,
        "kiosk product fields, orders",
        (
            # What the kiosk shows besides the tag's fields (edge_agent.services.catalog): a category, a picture
            # URL (never fetched by the agent), on_shelf 0 = online only ("endless aisle"), available 0 = not
            # orderable. Existing products are on the shelf and available, as before.
            "ALTER TABLE products ADD COLUMN category TEXT",
            "ALTER TABLE products ADD COLUMN image_url TEXT",
            "ALTER TABLE products ADD COLUMN on_shelf INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE products ADD COLUMN available INTEGER NOT NULL DEFAULT 1",
            "CREATE INDEX products_by_category ON products(category, name)",
            # Orders placed at kiosks, scan-link pages and devices (edge_agent.services.orders). `day`/`day_seq`
            # give the human order number (unique per day); `payload` is the order.created payload, kept so a
            # reloaded kiosk can show the order and a crash before publishing can publish it again.
            # state: placed (stored, not yet in the outbox) | published | refused (the outbox was full).
            """CREATE TABLE orders (
                order_id TEXT PRIMARY KEY,
                order_number TEXT NOT NULL,
                day TEXT NOT NULL,
                day_seq INTEGER NOT NULL,
                source TEXT NOT NULL,
                fulfilment TEXT NOT NULL,
                currency TEXT NOT NULL,
                total TEXT NOT NULL,
                payload TEXT NOT NULL,
                state TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                UNIQUE (day, day_seq)
            )""",
            "CREATE INDEX orders_by_state ON orders(state, created_ms)",
        ),
    ),
    Migration(
        8,
        "Wi-Fi devices on the in-store broker",
        (
            # devices.mqtt.registry: what each device announced, whether it is adopted (a technician's decision
            # must survive restarts), and when it was seen. Written behind, a few seconds late, never per message.
            """CREATE TABLE mqtt_devices (
                device_id TEXT PRIMARY KEY,
                announce TEXT,
                adopted INTEGER NOT NULL,
                first_seen_ms INTEGER NOT NULL,
                last_seen_ms INTEGER NOT NULL,
                online INTEGER,
                since_ms INTEGER
            )""",
        ),
    ),
    Migration(
        9,
        "web UI accounts, sessions, settings",
        (
            # edge_agent.services.web_users: the technician web UI's accounts. No row exists until the first
            # admin is created with the one-time setup token (no default account, DESIGN.md section 7).
            # role: admin | technician | staff. password_hash: argon2id.
            """CREATE TABLE web_users (
                username TEXT PRIMARY KEY,
                role TEXT NOT NULL,
                password_hash TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                password_changed_ms INTEGER NOT NULL,
                last_sign_in_ms INTEGER,
                lang TEXT
            )""",
            # edge_agent.services.web_sessions: signed-in browsers. Only the SHA-256 of the session token is kept,
            # so a copy of the database signs nobody in. Kept on disk: a restart after a configuration change
            # must not sign the technician out.
            """CREATE TABLE web_sessions (
                token_hash TEXT PRIMARY KEY,
                username TEXT NOT NULL REFERENCES web_users(username) ON DELETE CASCADE,
                csrf TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                last_seen_ms INTEGER NOT NULL,
                client TEXT
            )""",
            "CREATE INDEX web_sessions_by_user ON web_sessions(username)",
            # Small named values the agent keeps for itself (the setup token until it is used).
            """CREATE TABLE agent_settings (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                updated_ms INTEGER NOT NULL
            )""",
        ),
    ),
    Migration(
        10,
        "discovery: lock boards found by bus scans, discovered tags",
        (
            # edge_agent.web.discovery_api: Kerong boards that answered a technician's bus scan and are not in the
            # configuration. Adopting one records the technician's decision here; the board itself is added to
            # [[lockers.boards]] in the configuration file (the agent builds its boards from there).
            """CREATE TABLE lock_board_finds (
                bus TEXT NOT NULL,
                number INTEGER NOT NULL,
                first_seen_ms INTEGER NOT NULL,
                last_answer_ms INTEGER NOT NULL,
                adopted_ms INTEGER,
                adopted_by TEXT,
                board_id TEXT,
                PRIMARY KEY (bus, number)
            )""",
            # tags.adopted exists since migration 2 (default 1: tags known before discovery stay adopted); the
            # discovered list reads the few not adopted, most recently seen first, out of thousands.
            "CREATE INDEX tags_discovered ON tags(last_seen_ms) WHERE adopted = 0",
        ),
    ),
    Migration(
        11,
        "smart shelves: pick lists and lines, pickup shelves and slots",
        (
            # Pick-to-light (edge_agent.services.picking). A pick list from the cloud's pick.start: its picker and
            # LED colour (red|green|blue|white), the orders it serves (JSON array). state: active|completed|cancelled.
            """CREATE TABLE pick_lists (
                list_id TEXT PRIMARY KEY,
                picker TEXT NOT NULL,
                colour TEXT NOT NULL,
                order_ids TEXT NOT NULL,
                state TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL,
                finished_ms INTEGER
            )""",
            # One line: take `quantity` of `sku` for `order_id`. `tags` (JSON array) are the tags paired with the
            # product when the list started: the ones lit. state: open|picked|short|substituted|cancelled;
            # confirmed_by: scan:<source>|button:<tag>|web:<user>.
            """CREATE TABLE pick_lines (
                list_id TEXT NOT NULL REFERENCES pick_lists(list_id),
                line_no INTEGER NOT NULL,
                order_id TEXT NOT NULL,
                sku TEXT NOT NULL,
                quantity INTEGER NOT NULL,
                tags TEXT NOT NULL,
                state TEXT NOT NULL,
                picked_qty INTEGER,
                substitute_sku TEXT,
                confirmed_by TEXT,
                confirmed_ms INTEGER,
                PRIMARY KEY (list_id, line_no)
            )""",
            "CREATE INDEX pick_lines_open ON pick_lines(sku) WHERE state = 'open'",
            # Tags whose task ended and whose LED and price page are not yet given back: written in the same
            # transaction as the end of the line, removed once the LED is off and the price page is queued, so a
            # crash in between leaves no tag stuck on a pick page.
            """CREATE TABLE tag_restores (
                tag_id TEXT PRIMARY KEY,
                since_ms INTEGER NOT NULL
            )""",
            # Pickup shelves (edge_agent.services.pickup_shelves): a shelf is a named set of slots, each with its
            # label (a tag, never paired with a product while it is a slot).
            """CREATE TABLE shelves (
                shelf_id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                created_ms INTEGER NOT NULL
            )""",
            """CREATE TABLE shelf_slots (
                slot_id TEXT PRIMARY KEY,
                shelf_id TEXT NOT NULL REFERENCES shelves(shelf_id),
                position INTEGER NOT NULL,
                tag_id TEXT NOT NULL UNIQUE,
                enabled INTEGER NOT NULL DEFAULT 1,
                UNIQUE (shelf_id, position)
            )""",
            # A pickup order waits either in a locker compartment or in a shelf slot (`slot`); `customer` is the
            # customer's name as the label shows it, already masked ("王** 1234"); released_*: when and at which
            # screen a right code made the slot's label flash (the handover waits for a staff scan).
            "ALTER TABLE pickups ADD COLUMN slot TEXT",
            "ALTER TABLE pickups ADD COLUMN customer TEXT",
            "ALTER TABLE pickups ADD COLUMN released_ms INTEGER",
            "ALTER TABLE pickups ADD COLUMN released_by TEXT",
            "CREATE INDEX pickups_by_slot ON pickups(slot, state)",
        ),
    ),
    Migration(
        12,
        "keys of the device messages relayed",
        (
            # The msg_key of each event made from an in-store MQTT message (cloud_link.outbox), written in the
            # transaction that stores the event: a redelivery (DUP) of a message stored before its PUBACK went
            # out is recognised and not stored twice. Only the newest keys are kept (n orders them).
            """CREATE TABLE message_keys (
                n INTEGER PRIMARY KEY,
                key TEXT NOT NULL UNIQUE
            )""",
        ),
    ),
    Migration(
        13,
        "door openings audited across a crash",
        (
            # When the opening's audit row was written (in the same transaction): recovery audits every door
            # operation that may have opened a door and has none (edge_agent.services.doors). Openings before
            # this migration were audited by the code of their day.
            "ALTER TABLE door_ops ADD COLUMN audited_ms INTEGER",
            "UPDATE door_ops SET audited_ms = COALESCE(finished_ms, created_ms) WHERE state IN ('opened', 'unknown')",
            # Audit rows whose audit.door_opened event is in the outbox (audit_log itself is append-only):
            # recovery publishes the others. Every row before this migration was published then.
            "CREATE TABLE audit_published (seq INTEGER PRIMARY KEY)",
            "INSERT INTO audit_published(seq) SELECT seq FROM audit_log",
        ),
    ),
    Migration(
        14,
        "the agent's clocks across restarts",
        (
            # edge_agent.services.agent_clock: the raw wall clock and the steady clock when last persisted (the
            # steady clock continues from them), whether the wall clock was trusted then, and the reference
            # it was judged by (a time known right, and the steady time it was read at).
            """CREATE TABLE clock_state (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                wall_ms INTEGER NOT NULL,
                steady_ms INTEGER NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('ok', 'behind', 'ahead', 'unconfirmed')),
                ref_wall_ms INTEGER NOT NULL,
                ref_steady_ms INTEGER NOT NULL
            )""",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
