"""Events, device states, the audit log and the diagnostics bundle through the running agent: filters and
bounds, a tampered audit row found by the chain check, technician only, and a bundle with what an engineer
needs and none of the secrets (password hashes, session tokens, pickup code MACs, the setup token, the
environment's secrets)."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from edge_agent.logging_setup import install_recent_logs
from edge_agent.services.pickup_codes import PickupCodes
from edge_agent.services.web_sessions import token_hash
from edge_agent.services.web_users import Role
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.web import PASSWORD, signed_in
from tests.test_config_api import agent_from_file


async def test_events_are_listed_with_filters_and_bounds(tmp_path: Path) -> None:
    async with agent_from_file(tmp_path) as agent, signed_in(agent, "tech1", Role.TECHNICIAN) as tech:
        # The cloud link is off: everything published stays in the outbox, unsent.
        before = int(time.time() * 1000)
        for i in range(30):
            await agent.publish("pickup.ready" if i % 3 else "order.test", {"n": i})
        middle = int(time.time() * 1000) + 1
        time.sleep(0.005)
        for i in range(5):
            await agent.publish("pickup.collected", {"n": 100 + i})
        answer = (await tech.get("/api/events")).json()
        assert answer["state"] == "unsent" and "acknowledged" in answer["note"]
        assert answer["outbox"]["events"] >= 35 and len(answer["events"]) >= 35
        seqs = [e["seq"] for e in answer["events"]]
        assert seqs == sorted(seqs, reverse=True)  # newest first
        newest = answer["events"][0]
        assert newest["type"] == "pickup.collected" and newest["payload"] == {"n": 104} and newest["class"]
        picked = (await tech.get("/api/events", params={"type": "pickup."})).json()["events"]
        assert {e["type"] for e in picked} == {"pickup.ready", "pickup.collected"} and len(picked) == 25
        late = (await tech.get("/api/events", params={"since_ms": middle})).json()["events"]
        assert [e["payload"]["n"] for e in late] == [104, 103, 102, 101, 100]
        early = (await tech.get("/api/events", params={"type": "order.", "since_ms": before, "until_ms": middle})).json()
        assert [e["payload"]["n"] for e in early["events"]] == [27, 24, 21, 18, 15, 12, 9, 6, 3, 0]
        # Paging: a limit, then the rest below the last seq seen.
        page = (await tech.get("/api/events", params={"type": "pickup.", "limit": 10})).json()
        assert len(page["events"]) == 10 and page["next_before_seq"] == page["events"][-1]["seq"]
        rest = (await tech.get("/api/events", params={"type": "pickup.", "before_seq": page["next_before_seq"]})).json()
        assert len(rest["events"]) == 15 and rest["next_before_seq"] is None
        # Out-of-bounds or unknown filters: a clear 422, never a 500.
        bad: list[dict[str, str | int]] = [
            {"limit": 0}, {"limit": 501}, {"since_ms": -1}, {"since_ms": 2**64}, {"before_seq": 2**63},
            {"state": "sent"}, {"type": "x" * 65}, {"state": "recent", "limit": 0},
        ]
        for params in bad:
            assert (await tech.get("/api/events", params=params)).status_code == 422, params
        # The recently published events, from memory: the same ones, none sent (the link is off).
        recent = (await tech.get("/api/events", params={"state": "recent", "type": "pickup.c"})).json()
        assert recent["state"] == "recent" and "memory" in recent["note"]
        assert [(e["payload"]["n"], e["sent"]) for e in recent["events"]] == [(n, False) for n in range(104, 99, -1)]
        # Device states: latest per device, pending until the cloud acknowledged them.
        assert agent.outbox is not None
        await agent.outbox.put_state("scanner-1", {"online": True})
        await agent.outbox.put_state("scanner-1", {"online": False})
        states = (await tech.get("/api/device-states", params={"state": "pending"})).json()["states"]
        assert [(s["device_id"], s["state"], s["pending"]) for s in states] == [("scanner-1", {"online": False}, True)]
        assert (await tech.get("/api/device-states", params={"state": "sent"})).json()["states"] == []
    async with agent_from_file(tmp_path / "again") as agent, signed_in(agent, "staff1", Role.STAFF) as staff:
        for path in ("/api/events", "/api/device-states", "/api/audit", "/api/audit/verify", "/api/diagnostics.zip"):
            assert (await staff.get(path)).status_code == 403, path


# Lockers on (the audit log is theirs), with no lock board: the store key comes from the agent's environment.
LOCKERS = "\n[lockers]\nenabled = true\n"
KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ab" * 32}


async def test_the_audit_log_and_its_chain_check_find_a_tampered_row(tmp_path: Path) -> None:
    async with agent_from_file(tmp_path, LOCKERS, KEY_ENV) as agent, signed_in(agent, "tech1", Role.TECHNICIAN) as tech:
        assert agent.audit is not None and agent.db is not None
        for i in range(12):
            await agent.audit.append("test", compartment=f"A-{i:02d}", actor="tech:tech1", order_id=None,
                                     detail={"reason": "柜门测试", "i": i})
        page = (await tech.get("/api/audit", params={"after_seq": 0, "limit": 5})).json()
        assert page["available"] is True and page["last_seq"] == 12
        assert [r["seq"] for r in page["records"]] == [1, 2, 3, 4, 5]
        assert page["records"][0]["detail"] == {"reason": "柜门测试", "i": 0}
        newest = (await tech.get("/api/audit", params={"after_seq": 12 - 3})).json()["records"]
        assert [r["seq"] for r in newest] == [10, 11, 12]
        assert (await tech.get("/api/audit/verify")).json() == {
            "available": True, "ok": True, "rows": 12, "first_bad_seq": None, "reason": None}
        # Someone with the file drops the triggers and changes row 7's actor.
        raw = sqlite3.connect(agent.db.path, isolation_level=None)
        try:
            raw.execute("DROP TRIGGER audit_log_no_update")
            raw.execute("UPDATE audit_log SET actor = 'nobody' WHERE seq = 7")
        finally:
            raw.close()
        verdict = (await tech.get("/api/audit/verify")).json()
        assert verdict["ok"] is False and verdict["first_bad_seq"] == 7 and verdict["rows"] == 6
        assert "hash does not match" in verdict["reason"]


async def test_the_diagnostics_bundle_holds_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cloud_password = "cl0ud-pa55word-for-the-test"
    monkeypatch.setenv("EDGE_AGENT_CLOUD_PASSWORD", cloud_password)
    ring = install_recent_logs()
    try:
        async with agent_from_file(tmp_path) as agent:
            assert agent.users is not None and agent.db is not None
            setup_token = agent.users.setup_token()  # drawn at start (no account yet) and logged for the console
            assert setup_token and any("setup token" in line for line in ring.snapshot())
            async with signed_in(agent, "tech1", Role.TECHNICIAN) as tech:
                session_token = tech.cookies["edge_session"]
                csrf = tech.headers["X-CSRF-Token"]
                hashes = agent.db.read(lambda c: [r[0] for r in c.execute("SELECT password_hash FROM web_users")])
                session_hashes = agent.db.read(lambda c: [r[0] for r in c.execute("SELECT token_hash FROM web_sessions")])
                assert token_hash(session_token) in session_hashes
                store_key = b"k" * 32
                codes = PickupCodes(agent.db, store_key)
                code = await codes.issue("order-42", int(time.time() * 1000) + 3_600_000)
                mac = codes.mac(code)
                logging.getLogger("edge_agent.test").warning("a careless line with %s in it", cloud_password)
                answer = await tech.get("/api/diagnostics.zip")
                assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
                assert "attachment" in answer.headers["content-disposition"]
                bundle = zipfile.ZipFile(io.BytesIO(answer.content))
                names = set(bundle.namelist())
                assert {"README.txt", "logs/recent.log", "config/agent.toml", "config/parsed.json", "database.json",
                        "versions.json", "health.json", "metrics.txt"} <= names
                contents = {name: bundle.read(name) for name in names}
        database = json.loads(contents["database.json"])
        assert database["tables"]["web_users"] == 1 and database["tables"]["pickup_codes"] == 1
        assert database["schema_version"] >= 9 and database["quick_check"] == "ok" and database["size_bytes"] > 0
        assert "wal_bytes" in database and database["outbox"]["max_bytes"] > 0
        versions = json.loads(contents["versions.json"])
        assert versions["agent"] and versions["libraries"]["fastapi"] and versions["sqlite"]
        assert json.loads(contents["health.json"])["store_id"] == "store-0001"
        assert b'store_id = "store-0001"' in contents["config/agent.toml"]
        assert json.loads(contents["config/parsed.json"])["agent"]["store_id"] == "store-0001"
        assert b"agent " in contents["logs/recent.log"] and b"careless line" in contents["logs/recent.log"]
        secrets = [setup_token, session_token, csrf, cloud_password, mac, code, store_key.decode(), PASSWORD,
                   *hashes, *session_hashes]
        for secret in secrets:
            needle = secret.encode()
            assert needle not in answer.content, secret
            for name, data in contents.items():
                assert needle not in data, (secret, name)
    finally:
        logging.getLogger().removeHandler(ring)


async def test_anonymous_requests_get_nothing(tmp_path: Path) -> None:
    async with agent_from_file(tmp_path) as agent:
        anonymous = httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.web_port}", timeout=10)
        async with anonymous:
            for path in ("/api/events", "/api/audit", "/api/audit/verify", "/api/diagnostics.zip"):
                assert (await anonymous.get(path)).status_code == 401, path




async def test_recent_events_say_which_were_sent(tmp_path: Path, cloud_broker: Broker) -> None:
    async with running_agent(agent_config(tmp_path / "data", cloud_broker)) as agent, \
            signed_in(agent, "tech1", Role.TECHNICIAN) as tech:
        assert agent.outbox is not None
        for i in range(3):
            await agent.publish("order.test", {"n": i})
        await wait_until(lambda: agent.outbox is not None and agent.outbox.stats().events == 0, timeout=10)
        recent = (await tech.get("/api/events", params={"state": "recent", "type": "order."})).json()["events"]
        assert [(e["payload"]["n"], e["sent"]) for e in recent] == [(2, True), (1, True), (0, True)]
        page = (await tech.get("/api/events", params={"state": "recent", "type": "order.", "limit": 2})).json()
        assert len(page["events"]) == 2 and page["next_before_seq"] == recent[1]["seq"]
        assert (await tech.get("/api/events", params={"type": "order."})).json()["events"] == []  # none unsent
