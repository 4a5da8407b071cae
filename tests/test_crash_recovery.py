"""SIGKILL while producing at a high rate: every event whose publish() returned is delivered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import agent_config
from tests.support.agent_process import start_agent, write_config
from tests.support.broker import Broker
from tests.support.subscriber import CloudSubscriber


def test_sigkill_loses_nothing_that_was_acknowledged(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    config = agent_config(tmp_path / "data", cloud_broker, local_broker={"enabled": False})
    path = write_config(config, tmp_path / "agent.toml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.producer_agent", str(path), "16"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    confirmed: dict[str, int] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seq, event_id = line.decode().split()
            confirmed[event_id] = int(seq)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while len(confirmed) < 3000 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    reader.join(10)
    assert len(confirmed) >= 3000, len(confirmed)

    # Restart the normal agent on the same data: it resends what was not acknowledged.
    agent = start_agent(path)
    try:
        needed = set(confirmed)

        def all_there(msgs: list) -> bool:
            seen = {m.json()["event_id"] for m in msgs if "/events/" in m.topic}
            return needed <= seen

        subscriber.wait_for(all_there, timeout=60)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(10)

    events = subscriber.events()
    ids = [e["event_id"] for e in events]
    lost = needed - set(ids)
    assert not lost
    duplicates = len(ids) - len(set(ids))
    assert duplicates <= config.cloud.inflight_window, duplicates
    # A duplicate is the same event again: same id, same seq, same payload.
    by_id: dict[str, dict] = {}
    for e in events:
        if e["event_id"] in by_id:
            assert by_id[e["event_id"]] == e
        by_id[e["event_id"]] = e
    # Sequence numbers: no gap from 1 to the highest delivered, and the restart's boot is 2.
    seqs = sorted({e["seq"] for e in events})
    assert seqs == list(range(1, seqs[-1] + 1))
    assert {e["boot"] for e in events} == {1}
    assert all(confirmed[i] == by_id[i]["seq"] for i in confirmed)
