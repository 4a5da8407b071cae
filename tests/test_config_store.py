"""The configuration file as the web UI edits it: validation like check-config (by key path, nothing written
when invalid), atomic writes, ten kept versions, restore, and lost updates refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.services.config_store import (
    ConfigConflictError,
    ConfigInvalidError,
    ConfigStore,
    ConfigWriteError,
    VersionNotFoundError,
    atomic_write,
    changed_keys,
    redact,
    redact_toml_text,
    text_version,
)

BASE = """\
[agent]
store_id = "store-0001"
data_dir = "{data}"

[web]
host = "127.0.0.1"
port = 0

[cloud]
enabled = false
keepalive_s = 30

[local_broker]
enabled = false
"""


def make_store(tmp_path: Path, env: dict[str, str] | None = None) -> ConfigStore:
    path = tmp_path / "etc" / "agent.toml"
    path.parent.mkdir()
    path.write_text(BASE.format(data=tmp_path / "data"))
    path.chmod(0o640)
    clock = iter(range(1_700_000_000, 1_800_000_000))  # a second apart: distinct, ordered version names
    return ConfigStore(path, load_config(path), env=env or {}, clock=lambda: float(next(clock)))


def test_save_writes_the_file_and_keeps_the_previous_one(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    before = store.read()
    new_text = before.text.replace("keepalive_s = 30", "keepalive_s = 45")
    result = store.save(new_text, before.version)
    assert store.path.read_text() == new_text and result.version == text_version(new_text)
    assert result.changed == ["cloud.keepalive_s"] and result.restart_needed == ["cloud.keepalive_s"]
    assert result.applied_live == [] and result.as_dict()["restart_required"] is True
    assert oct(store.path.stat().st_mode & 0o777) == "0o640"  # the file keeps its permissions
    (kept,) = store.versions()
    assert kept.id == result.saved_previous_as and store.version_text(kept.id) == before.text
    assert kept.version == before.version and kept.saved_ms == 1_700_000_000_000
    # No temporary file is left behind next to the configuration.
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["agent.toml", "agent.toml.versions"]


def test_an_invalid_config_is_refused_by_key_path_and_nothing_is_written(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    before = store.read()
    bad = before.text.replace("keepalive_s = 30", "keepalive_s = 1\nmystery = true").replace("port = 0", "port = 70000")
    with pytest.raises(ConfigInvalidError) as caught:
        store.save(bad, before.version)
    problems = {p.key: p.message for p in caught.value.problems}
    assert set(problems) == {"cloud.keepalive_s", "cloud.mystery", "web.port"}
    assert problems["cloud.mystery"] == "unknown key"
    assert store.path.read_text() == before.text and store.versions() == []
    # TOML syntax errors name the file and the line, as check-config does.
    _, syntax = store.check("[agent\nstore_id = 1")
    assert len(syntax) == 1 and syntax[0].key == str(store.path) and "TOML syntax error" in syntax[0].message
    # Relative file paths resolve against the configuration's folder, as for the CLI.
    _, missing = store.check(before.text + '\n[cloud.tls]\nca_file = "ca.pem"\n')
    assert [(p.key, p.message) for p in missing] == [("cloud.tls.ca_file", f"file not found: {store.path.parent / 'ca.pem'}")]


def test_required_secrets_are_checked_like_the_cli_does(tmp_path: Path) -> None:
    store = make_store(tmp_path, env={})
    before = store.read()
    with_lockers = before.text + "\n[lockers]\nenabled = true\n"
    with pytest.raises(ConfigInvalidError) as caught:
        store.save(with_lockers, before.version)
    assert [p.key for p in caught.value.problems] == ["lockers.enabled"]
    assert "EDGE_AGENT_STORE_HMAC_KEY" in caught.value.problems[0].message
    (tmp_path / "other").mkdir()
    keyed = make_store(tmp_path / "other", env={"EDGE_AGENT_STORE_HMAC_KEY": "ab" * 32})
    assert keyed.check(keyed.read().text + "\n[lockers]\nenabled = true\n")[1] == []


def test_a_lost_update_is_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first = store.read()
    store.save(first.text.replace("keepalive_s = 30", "keepalive_s = 40"), first.version)
    # A second editor still holding the first version must not overwrite the change it never saw.
    with pytest.raises(ConfigConflictError) as caught:
        store.save(first.text.replace("keepalive_s = 30", "keepalive_s = 50"), first.version)
    assert caught.value.current_version == store.read().version
    assert "keepalive_s = 40" in store.path.read_text() and len(store.versions()) == 1


def test_ten_versions_are_kept_and_one_can_be_restored(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    texts = [store.read().text]
    for n in range(31, 45):  # 14 saves
        current = store.read()
        text = current.text.replace(f"keepalive_s = {n - 1}", f"keepalive_s = {n}")
        store.save(text, current.version)
        texts.append(text)
    kept = store.versions()
    assert len(kept) == 10
    # Newest first: the file before the last save, back to the tenth before it.
    assert [store.version_text(v.id) for v in kept] == texts[-2:-12:-1]
    oldest = kept[-1]
    current = store.read()
    result = store.restore(oldest.id, current.version)
    assert store.path.read_text() == texts[4] and result.changed == ["cloud.keepalive_s"]
    assert len(store.versions()) == 10 and store.versions()[0].version == current.version
    with pytest.raises(VersionNotFoundError):
        store.version_text("../agent")
    with pytest.raises(VersionNotFoundError):
        store.version_text("20200101T000000000Z-000000000000")


def test_atomic_write_replaces_whole_files_only(tmp_path: Path) -> None:
    target = tmp_path / "f.toml"
    target.write_text("old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    # A write that fails half way (the folder is not writable) leaves the old file as it was.
    if os.geteuid() != 0:  # root writes anywhere; the replace itself is what is atomic
        tmp_path.chmod(0o500)
        try:
            with pytest.raises(PermissionError):
                atomic_write(target, b"newer")
        finally:
            tmp_path.chmod(0o700)
        assert target.read_bytes() == b"new"


def test_changed_keys_and_redaction() -> None:
    old = {"cloud": {"port": 1, "tls": {"enabled": True}}, "kiosks": [{"id": "k1"}]}
    new = {"cloud": {"port": 2, "tls": {"enabled": True}}, "kiosks": [{"id": "k1"}, {"id": "k2"}]}
    assert changed_keys(old, new) == ["cloud.port", "kiosks.1.id"]
    data = {"cloud": {"username": "u", "password": "p", "key_file": "/k.pem"}, "x": {"hmac_key": "k", "api_token": "t"}}
    assert redact(data) == {
        "cloud": {"username": "u", "password": "<redacted>", "key_file": "/k.pem"},
        "x": {"hmac_key": "<redacted>", "api_token": "<redacted>"},
    }
    text = 'a = 1\npassword = "hunter2"\n  store_key = "k"\nkey_file = "/x"\n'
    assert redact_toml_text(text) == 'a = 1\npassword = "<redacted>"\n  store_key = "<redacted>"\nkey_file = "/x"\n'


def test_unwritable_versions_or_bad_text_leave_the_file_alone(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    before = store.read()
    # Something in the way of the versions folder (root ignores permissions, so a file stands in for a
    # read-only /etc): the save fails with a clear error before the file is touched.
    store.versions_dir.write_text("not a folder")
    with pytest.raises(ConfigWriteError) as caught:
        store.save(before.text.replace("keepalive_s = 30", "keepalive_s = 40"), before.version)
    assert str(store.path) in str(caught.value) and store.path.read_text() == before.text
    # Text that is not valid Unicode (a lone surrogate from JSON) is a problem, not a crash.
    assert store.check("a = '\ud800'")[1][0].message == "not valid Unicode text"
