"""`edge-agent user ...` and `edge-agent setup-token` as real processes on a real data directory; what they write
then signs in through WebUsers and WebSessions on the same database, as the running agent would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from edge_agent.services.web_sessions import WebSessions
from edge_agent.services.web_users import Role, SignInStatus, WebUsers
from edge_agent.storage import Database

GOOD = "kettle of fish 42"
OTHER = "a different passphrase"


def cli(*args: str, data_dir: Path | None = None, config: Path | None = None,
        stdin: str = "") -> subprocess.CompletedProcess[str]:
    where = ["--data-dir", str(data_dir)] if data_dir is not None else ["--config", str(config)]
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args, *where],
        input=stdin, capture_output=True, text=True, env=dict(os.environ), timeout=60,
        # No controlling terminal: getpass reads from stdin, which lets the test type the password twice.
        start_new_session=True,
    )


async def test_setup_token_then_accounts_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # The agent's config file finds the data directory, as on a box.
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nstore_id = "s-1"\ndata_dir = "{data}"\n')
    first = cli("setup-token", config=config)
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{6}(-[0-9a-f]{6}){3}", token)
    assert cli("setup-token", data_dir=data).stdout.strip() == token, "the same token until it is used"

    db = Database(data)
    try:
        users = WebUsers(db)
        sessions = WebSessions(db)
        await users.complete_setup(token, "boss", GOOD)
        done = cli("setup-token", data_dir=data)
        assert done.returncode == 1 and "setup is done" in done.stderr and token not in done.stdout + done.stderr

        added = cli("user", "add", "wang.fang", "--role", "technician", "--password-stdin", data_dir=data,
                    stdin=GOOD + "\n")
        assert added.returncode == 0, added.stderr
        assert GOOD not in added.stdout + added.stderr
        assert "added with role technician" in added.stdout
        short = cli("user", "add", "li", "--role", "staff", "--password-stdin", data_dir=data, stdin="short\n")
        assert short.returncode == 1 and "at least 12 characters" in short.stderr
        again = cli("user", "add", "wang.fang", "--role", "staff", "--password-stdin", data_dir=data, stdin=GOOD + "\n")
        assert again.returncode == 1 and "exists already" in again.stderr
        bad_role = cli("user", "add", "li", "--role", "root", "--password-stdin", data_dir=data, stdin=GOOD + "\n")
        assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr
        # Asked twice (no terminal: getpass reads stdin); two different answers change nothing.
        differ = cli("user", "add", "li", "--role", "staff", data_dir=data, stdin=f"{GOOD}\n{OTHER}\n")
        assert differ.returncode == 1 and "differ" in differ.stderr and users.get("li") is None
        typed = cli("user", "add", "li", "--role", "staff", "--lang", "zh-CN", data_dir=data, stdin=f"{GOOD}\n{GOOD}\n")
        assert typed.returncode == 0, typed.stderr

        listed = cli("user", "list", data_dir=data)
        rows = [line.split("\t")[:2] for line in listed.stdout.splitlines()]
        assert rows == [["boss", "admin"], ["li", "staff"], ["wang.fang", "technician"]]
        li = users.get("li")
        assert li is not None and li.lang == "zh-CN" and li.role is Role.STAFF
        assert (await users.sign_in("wang.fang", GOOD, "test")).status is SignInStatus.OK

        # A new password ends the user's web sessions (a stolen cookie dies with the old password).
        token_a, _ = await sessions.start("wang.fang")
        changed = cli("user", "passwd", "wang.fang", "--password-stdin", data_dir=data, stdin=OTHER + "\n")
        assert changed.returncode == 0, changed.stderr
        assert "1 web session(s) ended" in changed.stdout
        assert await sessions.use(token_a) is None
        assert (await users.sign_in("wang.fang", OTHER, "test")).status is SignInStatus.OK
        assert (await users.sign_in("wang.fang", GOOD, "test")).status is SignInStatus.WRONG
        assert cli("user", "passwd", "nobody", "--password-stdin", data_dir=data, stdin=OTHER + "\n").returncode == 1

        token_b, _ = await sessions.start("li")
        removed = cli("user", "remove", "li", data_dir=data)
        assert removed.returncode == 0, removed.stderr
        assert await sessions.use(token_b) is None and users.get("li") is None
        assert cli("user", "remove", "li", data_dir=data).returncode == 1
        last_admin = cli("user", "remove", "boss", data_dir=data)
        assert last_admin.returncode == 1 and "last admin" in last_admin.stderr
    finally:
        db.close()


def test_a_missing_data_directory_is_said_plainly(tmp_path: Path) -> None:
    missing = cli("user", "list", data_dir=tmp_path / "nope")
    assert missing.returncode == 1 and "no data directory" in missing.stderr
    assert cli("setup-token", data_dir=tmp_path / "nope").returncode == 1
