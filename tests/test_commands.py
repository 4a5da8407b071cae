"""Commands from the cloud over a real broker: results, at-most-once, and every kind of bad input."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from cloud_link.events import format_ts, now_ms
from edge_agent.services.agent_clock import ClockState
from tests.conftest import agent_config, running_agent
from tests.support.broker import Broker
from tests.support.subscriber import CloudSubscriber

COMMANDS = "retail/v1/store-0001/commands"


def results(sub: CloudSubscriber) -> list[dict]:
    return [m.json()["payload"] for m in sub.all if m.topic.endswith("/commands/result")]


async def wait_results(sub: CloudSubscriber, n: int, timeout: float = 15.0) -> list[dict]:
    def enough(msgs: list) -> bool:
        return sum(m.topic.endswith("/commands/result") for m in msgs) >= n

    await asyncio.to_thread(sub.wait_for, enough, timeout)
    return results(sub)


async def test_ping_and_config_get(tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber) -> None:
    async with running_agent(agent_config(tmp_path / "d", cloud_broker)):
        subscriber.publish(COMMANDS, json.dumps({"command_id": "c-1", "type": "ping", "payload": {"echo": "hi"}}))
        subscriber.publish(COMMANDS, json.dumps({"command_id": "c-2", "type": "config.get",
                                                 "payload": {"section": "cloud"}}))
        got = await wait_results(subscriber, 2)
    by_id = {r["command_id"]: r for r in got}
    assert by_id["c-1"]["status"] == "ok"
    assert by_id["c-1"]["result"]["pong"] is True and by_id["c-1"]["result"]["echo"] == "hi"
    assert by_id["c-2"]["status"] == "ok"
    assert by_id["c-2"]["result"]["config"]["port"] == cloud_broker.port
    # Results travel as events: envelope with seq and event_id.
    envelope = next(m.json() for m in subscriber.all if m.topic.endswith("/commands/result"))
    assert envelope["type"] == "command.result" and envelope["seq"] >= 1


async def test_malformed_commands_get_error_results_and_the_agent_keeps_serving(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    bad: list[tuple[bytes, str, str | None]] = [
        (b"{not json", "malformed_json", None),
        (b"\xff\xfe\x00garbage", "malformed_json", None),
        (b"[1, 2, 3]", "invalid_envelope", None),
        (b'"just a string"', "invalid_envelope", None),
        (json.dumps({"type": "ping"}).encode(), "invalid_envelope", None),
        (json.dumps({"command_id": "bad id with spaces", "type": "ping"}).encode(), "invalid_envelope", None),
        (json.dumps({"command_id": "m-1"}).encode(), "invalid_envelope", "m-1"),
        (json.dumps({"command_id": "m-2", "type": "ping", "payload": [1]}).encode(), "invalid_envelope", "m-2"),
        (json.dumps({"command_id": "m-3", "type": "no.such.command"}).encode(), "unknown_type", "m-3"),
        (json.dumps({"command_id": "m-4", "type": "ping", "payload": {"echo": 5}}).encode(), "invalid_payload", "m-4"),
        (json.dumps({"command_id": "m-5", "type": "ping", "payload": {"bogus": 1}}).encode(),
         "invalid_payload", "m-5"),
        (json.dumps({"command_id": "m-6", "type": "config.get", "payload": {"section": "nope"}}).encode(),
         "invalid_payload", "m-6"),
        (json.dumps({"v": 2, "command_id": "m-7", "type": "ping"}).encode(), "unsupported_version", "m-7"),
        (json.dumps({"command_id": "m-8", "type": "ping", "payload": {"echo": "x" * 70000}}).encode(),
         "too_large", None),
        (b'{"command_id": "m-9", "type": "ping", "payload": {"echo": NaN}}', "malformed_json", None),
        (b"[" * 30000 + b"]" * 30000, "malformed_json", None),
        (json.dumps({"command_id": "m-10\n", "type": "ping"}).encode(), "invalid_envelope", None),
    ]
    config = agent_config(tmp_path / "d", cloud_broker)
    async with running_agent(config) as agent:
        for raw, _, _ in bad:
            subscriber.publish(COMMANDS, raw)
        got = await wait_results(subscriber, len(bad))
        # Still alive and serving: a good command after all that works, and so does the web server.
        subscriber.publish(COMMANDS, json.dumps({"command_id": "ok-1", "type": "ping"}))
        got = await wait_results(subscriber, len(bad) + 1)
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{agent.web_port}/healthz")
            metrics = (await client.get(f"http://127.0.0.1:{agent.web_port}/metrics")).text
    assert health.status_code == 200
    assert [(r["error"]["code"], r["command_id"]) for r in got[: len(bad)]] == [(c, i) for _, c, i in bad]
    assert all(r["status"] == "error" and r["error"]["message"] for r in got[: len(bad)])
    assert got[-1]["command_id"] == "ok-1" and got[-1]["status"] == "ok"
    assert 'edge_bad_inputs_total{reason="malformed_json",source="command"} 4.0' in metrics
    assert 'edge_bad_inputs_total{reason="unknown_type",source="command"}' in metrics


async def test_a_command_runs_at_most_once_per_id_even_across_restarts(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    config = agent_config(tmp_path / "d", cloud_broker)
    command = json.dumps({"command_id": "once-1", "type": "ping", "payload": {"echo": "first"}})
    async with running_agent(config) as agent:
        from cloud_link.commands import CommandIntake  # noqa: F401 - the intake's counter is what we check

        subscriber.publish(COMMANDS, command)
        subscriber.publish(COMMANDS, command)
        await wait_results(subscriber, 2)
    async with running_agent(config) as agent:
        subscriber.publish(COMMANDS, command)
        got = await wait_results(subscriber, 3)
        assert agent.outbox is not None
    first, second, third = got[:3]
    assert first["status"] == "ok" and "duplicate" not in first
    assert second["duplicate"] is True and third["duplicate"] is True
    assert second["result"] == first["result"] == third["result"]


async def test_a_command_interrupted_by_a_crash_is_not_run_again(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    import sqlite3

    config = agent_config(tmp_path / "d", cloud_broker)
    async with running_agent(config):
        pass
    # What a crash in the middle of a command leaves behind: the id claimed, no result.
    conn = sqlite3.connect(tmp_path / "d" / "agent.db")
    conn.execute("INSERT INTO commands VALUES ('crash-1', 'ping', 0, 'running', NULL)")
    conn.execute("UPDATE commands SET received_ms = CAST(strftime('%s','now') AS INTEGER) * 1000")
    conn.commit()
    conn.close()
    async with running_agent(config):
        subscriber.publish(COMMANDS, json.dumps({"command_id": "crash-1", "type": "ping"}))
        got = await wait_results(subscriber, 1)
    assert got[0]["status"] == "error" and got[0]["error"]["code"] == "interrupted"
    assert got[0]["duplicate"] is True


async def test_commands_sent_while_the_agent_is_offline_arrive_later(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    config = agent_config(tmp_path / "d", cloud_broker)
    async with running_agent(config):
        pass  # establishes the persistent session and its subscription
    subscriber.publish(COMMANDS, json.dumps({"command_id": "while-away", "type": "ping"}))
    async with running_agent(config):
        got = await wait_results(subscriber, 1)
    assert got[0]["command_id"] == "while-away" and got[0]["status"] == "ok"


async def test_old_command_ids_are_purged_after_retention(tmp_path: Path, cloud_broker: Broker) -> None:
    config = agent_config(tmp_path / "d", cloud_broker)
    async with running_agent(config) as agent:
        assert agent.db is not None
        await agent.db.write(lambda c: c.execute(
            "INSERT INTO commands VALUES ('old', 'ping', 1, 'done', '{}'), ('new', 'ping', ?, 'done', '{}')",
            (int(__import__("time").time() * 1000),),
        ))
    import sqlite3

    # The purge runs at start: 'old' (1970) goes, 'new' stays.
    async with running_agent(config):
        await asyncio.sleep(0.3)
    ids = {r[0] for r in sqlite3.connect(tmp_path / "d" / "agent.db").execute("SELECT command_id FROM commands")}
    assert "old" not in ids and "new" in ids


async def test_a_burst_of_commands_waits_at_the_broker_and_every_one_is_answered_without_a_reconnect(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    """More commands at once than the intake holds (256): the agent stops reading until it caught up, where
    it used to leave the excess unacknowledged and in flight at the broker until some later reconnect."""
    burst = 1200
    async with running_agent(agent_config(tmp_path / "d", cloud_broker)) as agent:
        assert agent.session is not None and agent.commands is not None
        reconnects = agent.metrics.registry.get_sample_value("edge_cloud_reconnects_total")
        for n in range(burst):
            subscriber.publish(COMMANDS, json.dumps({"command_id": f"b-{n}", "type": "ping"}))
        got = await wait_results(subscriber, burst, timeout=90)
        pauses = agent.commands.pauses
        assert agent.metrics.registry.get_sample_value("edge_cloud_reconnects_total") == reconnects
    assert sorted(r["command_id"] for r in got) == sorted(f"b-{n}" for n in range(burst))
    assert all(r["status"] == "ok" for r in got)
    assert pauses >= 1


async def test_a_commands_ts_judges_the_clock_and_a_bad_one_refuses_nothing(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    """Issue 14.6: `ts` (the cloud's clock) is read before the command runs; unusable values are ignored."""
    async with running_agent(agent_config(tmp_path / "d", cloud_broker)) as agent:
        assert agent.clock is not None and agent.clock.trusted
        for n, ts in enumerate(["yesterday", 17, "2026-13-45T99:00:00Z", "2026-12-01T00:00:00", "x" * 100_000]):
            subscriber.publish(COMMANDS, json.dumps({"command_id": f"bad-ts-{n}", "type": "ping", "ts": ts}))
        got = await wait_results(subscriber, 5)
        assert [r["status"] for r in got] == ["ok"] * 4 + ["error"], got  # the last one is too large
        assert agent.clock.trusted
        # The cloud's time a day after the agent's: the agent's clock is behind.
        later = format_ts(now_ms() + 86_400_000)
        subscriber.publish(COMMANDS, json.dumps({"command_id": "ts-later", "type": "ping", "ts": later}))
        got = await wait_results(subscriber, 6)
        assert got[-1]["status"] == "ok"
        assert agent.clock.state is ClockState.BEHIND
        await asyncio.to_thread(subscriber.wait_events, 1, 10, "alarm.clock")  # reported by the clock's task
    alarms = [e["payload"] for e in subscriber.events() if e["type"] == "alarm.clock"]
    assert [a["state"] for a in alarms] == ["behind"] and alarms[0]["offset_s"] < -86_000
