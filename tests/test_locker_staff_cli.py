"""`edge-agent locker-staff ...` as a real process on a real data directory; what it writes then signs in
through LockerStaff on the same database, as the running agent would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from edge_agent.services.locker_staff import LockerStaff, SignInStatus
from edge_agent.storage import Database

KEY_HEX = "ab" * 32


def cli(*args: str, data_dir: Path, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "EDGE_AGENT_STORE_HMAC_KEY" and k != "CREDENTIALS_DIRECTORY"}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "locker-staff", *args, "--data-dir", str(data_dir)],
        input=stdin, capture_output=True, text=True, env=environ, timeout=60,
        # A new session has no controlling terminal, so getpass cannot open /dev/tty (and would not wait on the
        # tester's terminal): it reads the PIN from stdin instead, which lets the test type it.
        start_new_session=True,
    )


async def test_add_list_remove_staff_and_issue_a_courier_code(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    added = cli("add", "1234", "--name", "Wang Fang", "--pin-stdin", data_dir=data, stdin="482915\n")
    assert added.returncode == 0, added.stderr
    assert "482915" not in added.stdout + added.stderr
    weak = cli("add", "5678", "--pin-stdin", data_dir=data, stdin="123456\n")
    assert weak.returncode == 1 and "run of digits" in weak.stderr
    again = cli("add", "1234", "--pin-stdin", data_dir=data, stdin="730194\n")
    assert again.returncode == 1 and "exists already" in again.stderr
    listed = cli("list", data_dir=data)
    assert listed.returncode == 0 and listed.stdout.splitlines() == ["1234\tWang Fang\tlast sign-in: never"]
    no_key = cli("courier-code", "sf-7", data_dir=data)
    assert no_key.returncode == 1 and "EDGE_AGENT_STORE_HMAC_KEY" in no_key.stderr
    issued = cli("courier-code", "sf-7", "--valid-hours", "2", data_dir=data,
                 env={"EDGE_AGENT_STORE_HMAC_KEY": KEY_HEX})
    assert issued.returncode == 0, issued.stderr
    match = re.search(r"courier code for sf-7: ([0-9]{8})\n", issued.stdout)
    assert match is not None and "valid once, until " in issued.stdout

    db = Database(data)
    try:
        staff = LockerStaff(db, bytes.fromhex(KEY_HEX))
        assert (await staff.sign_in_staff("A", "1234", "482915")).status is SignInStatus.OK
        courier = await staff.sign_in_courier("A", match.group(1))
        assert courier.status is SignInStatus.OK and courier.session is not None
        assert courier.session.actor == "courier:sf-7"
    finally:
        db.close()

    removed = cli("remove", "1234", data_dir=data)
    assert removed.returncode == 0 and cli("list", data_dir=data).stdout == ""
    assert cli("remove", "1234", data_dir=data).returncode == 1
    missing = cli("list", data_dir=tmp_path / "nowhere")
    assert missing.returncode == 1 and "no data directory" in missing.stderr


async def test_add_asks_the_pin_twice_and_refuses_two_different_ones(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    differ = cli("add", "1234", data_dir=data, stdin="482915\n730194\n")
    assert differ.returncode == 1 and "the two PINs differ; nothing changed" in differ.stderr
    assert cli("list", data_dir=data).stdout == ""
    same = cli("add", "1234", data_dir=data, stdin="482915\n482915\n")
    assert same.returncode == 0, same.stderr
    db = Database(data)
    try:
        staff = LockerStaff(db, None)
        assert (await staff.sign_in_staff("A", "1234", "482915")).status is SignInStatus.OK
    finally:
        db.close()
