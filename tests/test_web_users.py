"""WebUsers and WebSessions on a real migrated SQLite file with real argon2id hashing (light parameters: the
tests hash many times; the type is what matters here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher, Type

from edge_agent.services.web_sessions import WebSessions, token_hash
from edge_agent.services.web_users import (
    Role,
    SetupLockedError,
    SignInStatus,
    UserError,
    WeakPasswordError,
    WebUsers,
    check_password,
)
from edge_agent.storage import Database

LIGHT = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)
T0 = 1_800_000_000_000
GOOD = "correct horse battery"


class MsClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path)
    yield database
    database.close()


@pytest.fixture
def clock() -> MsClock:
    return MsClock()


@pytest.fixture
def users(db: Database, clock: MsClock) -> WebUsers:
    return WebUsers(db, hasher=LIGHT, clock=clock)


def test_roles_are_ranked() -> None:
    assert Role.ADMIN.allows(Role.TECHNICIAN) and Role.ADMIN.allows(Role.STAFF)
    assert Role.TECHNICIAN.allows(Role.STAFF) and not Role.TECHNICIAN.allows(Role.ADMIN)
    assert not Role.STAFF.allows(Role.TECHNICIAN)


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short-pass1", "at least 12"),
        ("aaaaaaaaaaaaaaa", "repeated"),
        ("abababababab", "repeated"),
        ("Password1234", "most common"),
        ("x-alice-secret-1", "user name"),
        ("y" * 1025, "at most"),
    ],
)
def test_weak_passwords_are_refused(password: str, why: str) -> None:
    with pytest.raises(WeakPasswordError, match=why):
        check_password(password, "alice")


async def test_no_account_until_setup_token_used_once(users: WebUsers, db: Database) -> None:
    assert users.count() == 0 and users.setup_token() is None
    token = await users.ensure_setup_token()
    assert token is not None and len(token.replace("-", "")) == 24
    assert await users.ensure_setup_token() == token  # the same token until it is used
    admin = await users.complete_setup(token.upper(), "alice", GOOD, client="10.0.0.5")
    assert admin.role is Role.ADMIN
    assert users.setup_token() is None and await users.ensure_setup_token() is None
    with pytest.raises(UserError, match="not valid"):
        await users.complete_setup(token, "mallory", GOOD + "x", client="10.0.0.5")
    assert [u.username for u in users.list()] == ["alice"]
    stored = db.read(lambda c: c.execute("SELECT password_hash FROM web_users").fetchone()[0])
    assert stored.startswith("$argon2id$") and GOOD not in stored


async def test_wrong_setup_tokens_lock_the_client_out(users: WebUsers) -> None:
    await users.ensure_setup_token()
    for _ in range(5):
        with pytest.raises(UserError):
            await users.complete_setup("000000-000000-000000-000000", "alice", GOOD, client="10.0.0.9")
    with pytest.raises(SetupLockedError) as locked:
        await users.complete_setup(users.setup_token() or "", "alice", GOOD, client="10.0.0.9")
    assert locked.value.seconds_left == 60
    # Another address is not locked out by this one's guesses.
    await users.complete_setup(users.setup_token() or "", "alice", GOOD, client="10.0.0.10")


async def test_sign_in_throttled_per_account_and_per_address(users: WebUsers, clock: MsClock) -> None:
    await users.add("alice", GOOD, Role.TECHNICIAN)
    await users.add("bob", GOOD + "!", Role.STAFF)
    assert (await users.sign_in("alice", GOOD, "10.0.0.1")).status is SignInStatus.OK
    for i in range(4):
        assert (await users.sign_in("alice", f"wrong password {i}", f"10.0.1.{i}")).status is SignInStatus.WRONG
    fifth = await users.sign_in("alice", "wrong password 5", "10.0.1.9")
    assert fifth.status is SignInStatus.LOCKED_OUT and fifth.seconds_left == 60
    # The account is locked from every address, even with the right password; bob is not.
    assert (await users.sign_in("alice", GOOD, "10.0.2.1")).status is SignInStatus.LOCKED_OUT
    assert (await users.sign_in("bob", GOOD + "!", "10.0.2.1")).status is SignInStatus.OK
    clock.advance(61)
    assert (await users.sign_in("alice", GOOD, "10.0.2.1")).status is SignInStatus.OK
    # One address guessing many accounts is locked out too.
    for name in ("carol", "dave", "erin", "frank"):
        assert (await users.sign_in(name, "a guess of twelve", "10.9.9.9")).status is SignInStatus.WRONG
    assert (await users.sign_in("grace", "a guess of twelve", "10.9.9.9")).status is SignInStatus.LOCKED_OUT
    assert (await users.sign_in("bob", GOOD + "!", "10.9.9.9")).status is SignInStatus.LOCKED_OUT
    # Five more failures after the lockout lock the address again, twice as long (growing delays).
    clock.advance(61)
    for name in ("henry", "ivan", "judy", "karl"):
        assert (await users.sign_in(name, "a guess of twelve", "10.9.9.9")).status is SignInStatus.WRONG
    second = await users.sign_in("leo", "a guess of twelve", "10.9.9.9")
    assert second.status is SignInStatus.LOCKED_OUT and second.seconds_left == 120


def checked_attempts(db: Database, key: str) -> int:
    """Attempts whose secret was really checked (settled: ok 0 or 1), for one throttle key."""
    return int(db.read(lambda c: c.execute(
        "SELECT COUNT(*) FROM signin_attempts WHERE key = ? AND ok IN (0, 1)", (key,)
    ).fetchone()[0]))


async def test_forty_concurrent_wrong_sign_ins_get_five_checks_and_lock_the_right_password_out(
    users: WebUsers, db: Database
) -> None:
    # Found by review: the lockout was read before the argon2 check and the failure written after it, so all of
    # a burst was checked (39 of 40) and a right password at its end was accepted on a locked account.
    await users.add("alice", GOOD, Role.TECHNICIAN)
    statuses = []
    for burst in range(2):
        attempts = [users.sign_in("alice", f"wrong password {burst}{i:02d}", "10.0.0.66") for i in range(40)]
        statuses += [r.status for r in await asyncio.gather(*attempts)]
        assert checked_attempts(db, "web-user:alice") <= 5, "no more checks than five sequential requests get"
    assert checked_attempts(db, "web-user:alice") == 5
    assert checked_attempts(db, "web-client:10.0.0.66") == 5
    assert statuses.count(SignInStatus.OK) == 0 and statuses.count(SignInStatus.LOCKED_OUT) >= 75
    last = await users.sign_in("alice", GOOD, "10.0.0.66")
    assert last.status is SignInStatus.LOCKED_OUT, "the account is locked: even its right password waits"
    # The same burst spread over forty addresses is held by the account's own count.
    other = [users.sign_in("alice", f"another guess {i:02d}", f"10.0.1.{i}") for i in range(40)]
    assert all(r.status is SignInStatus.LOCKED_OUT for r in await asyncio.gather(*other))
    assert checked_attempts(db, "web-user:alice") == 5


async def test_a_right_password_in_flight_is_not_a_failure(users: WebUsers, db: Database) -> None:
    await users.add("alice", GOOD, Role.TECHNICIAN)
    results = await asyncio.gather(*(users.sign_in("alice", GOOD, "10.0.0.7") for _ in range(3)))
    assert [r.status for r in results] == [SignInStatus.OK] * 3
    assert db.read(lambda c: c.execute("SELECT COUNT(*) FROM signin_attempts WHERE ok <> 1").fetchone()[0]) == 0


async def test_last_admin_is_kept(users: WebUsers) -> None:
    await users.add("alice", GOOD, Role.ADMIN)
    with pytest.raises(UserError, match="last admin"):
        await users.remove("alice")
    with pytest.raises(UserError, match="last admin"):
        await users.set_role("alice", Role.STAFF)
    await users.add("bob", GOOD + "?", "admin")
    assert await users.remove("alice")
    assert not await users.remove("alice")
    with pytest.raises(UserError, match="exists"):
        await users.add("bob", GOOD, Role.STAFF)
    with pytest.raises(UserError, match="role must be"):
        await users.add("carol", GOOD, "root")
    with pytest.raises(UserError, match="user name"):
        await users.add("../etc", GOOD, Role.STAFF)


async def test_sessions_expire_and_follow_the_account(users: WebUsers, db: Database, clock: MsClock) -> None:
    sessions = WebSessions(db, idle_s=600, absolute_s=3600, clock=clock)
    await users.add("alice", GOOD, Role.ADMIN)
    await users.add("tom", GOOD + "#", Role.TECHNICIAN)
    token, session = await sessions.start("tom", "10.0.0.1")
    stored = db.read(lambda c: [r[0] for r in c.execute("SELECT token_hash FROM web_sessions")])
    assert stored == [token_hash(token)] and token not in stored  # only the digest is on disk
    used = await sessions.use(token)
    assert used is not None and used.role is Role.TECHNICIAN and used.csrf_ok(session.csrf)
    assert not used.csrf_ok("x" + session.csrf) and not used.csrf_ok(None)
    # A role change applies at the next request.
    await users.set_role("tom", Role.STAFF)
    used = await sessions.use(token)
    assert used is not None and used.role is Role.STAFF
    # Idle: used every 9 minutes it lives on, until the absolute limit.
    for _ in range(6):
        clock.advance(540)
        assert await sessions.use(token) is not None
    clock.advance(540)
    assert await sessions.use(token) is None  # 63 minutes after sign-in
    token2, _ = await sessions.start("tom")
    clock.advance(601)
    assert await sessions.use(token2) is None  # idle
    token3, s3 = await sessions.start("tom")
    token4, _ = await sessions.start("tom")
    assert await sessions.end_user("tom", keep=s3.token_hash) == 1
    assert await sessions.use(token3) is not None and await sessions.use(token4) is None
    await users.remove("tom")
    assert await sessions.use(token3) is None
    assert await sessions.use("") is None and await sessions.use("x" * 500) is None
