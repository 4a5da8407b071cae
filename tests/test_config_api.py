"""The configuration API through the running agent (started from a real file): admin only, validated like
check-config, lost updates refused, versions kept and restored; and the OpenAPI page /docs behind sign-in,
from local files."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from edge_agent.config import load_config
from edge_agent.runtime import Agent
from edge_agent.services.web_users import Role
from tests.conftest import agent_config, running_agent
from tests.support.web import signed_in

CONFIG = """\
# The store's agent (a comment the editor keeps).
[agent]
store_id = "store-0001"
data_dir = "{data}"
log_level = "INFO"

[web]
host = "127.0.0.1"
port = 0
https_port = 0

[cloud]
enabled = false
keepalive_s = 30

[local_broker]
enabled = false
"""


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "etc" / "agent.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CONFIG.format(data=tmp_path / "data") + extra)
    return path


@contextlib.asynccontextmanager
async def agent_from_file(tmp_path: Path, extra: str = "", env: dict[str, str] | None = None) -> AsyncIterator[Agent]:
    """The agent as `edge-agent run --config FILE` builds it: from the file, knowing where it is."""
    path = write_config(tmp_path, extra)
    async with running_agent(load_config(path), config_path=path, env=env) as agent:
        yield agent



async def test_only_an_admin_reads_or_edits_the_configuration(tmp_path: Path) -> None:
    async with agent_from_file(tmp_path) as agent:
        base = f"http://127.0.0.1:{agent.web_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as anonymous:
            assert (await anonymous.get("/api/config")).status_code == 401
        async with signed_in(agent, "tech1", Role.TECHNICIAN) as tech:
            version = "0" * 64
            for method, path, body in (
                ("GET", "/api/config", None),
                ("GET", "/api/config/versions", None),
                ("POST", "/api/config/check", {"toml": "x"}),
                ("PUT", "/api/config", {"toml": "x", "base_version": version}),
                ("POST", "/api/config/versions/x/restore", {"base_version": version}),
            ):
                answer = await tech.request(method, path, json=body)
                assert answer.status_code == 403, (method, path, answer.text)
                assert answer.json()["detail"]["error"] == "forbidden"
        async with signed_in(agent, "admin1", Role.ADMIN) as admin:
            config = (await admin.get("/api/config")).json()
            assert config["toml"] == write_config(tmp_path).read_text()
            assert config["parsed"]["cloud"]["keepalive_s"] == 30 and config["problems"] == []
            assert config["live_apply"] is False and "restart" in config["note"]
            # A write without the CSRF header is refused before anything is read.
            del admin.headers["X-CSRF-Token"]
            answer = await admin.put("/api/config", json={"toml": config["toml"], "base_version": config["version"]})
            assert answer.status_code == 403 and answer.json()["detail"]["error"] == "csrf"


async def test_an_admin_edits_checks_saves_and_restores(tmp_path: Path) -> None:
    async with agent_from_file(tmp_path) as agent, signed_in(agent, "admin1", Role.ADMIN) as admin:
        assert agent.config_path is not None
        config = (await admin.get("/api/config")).json()
        original = config["toml"]
        edited = original.replace("keepalive_s = 30", "keepalive_s = 45")
        # Check only: problems by key path, nothing written.
        bad = original.replace("keepalive_s = 30", "keepalive_s = 1\nmystery = 2")
        check = (await admin.post("/api/config/check", json={"toml": bad})).json()
        assert check["ok"] is False
        assert {p["key"] for p in check["problems"]} == {"cloud.keepalive_s", "cloud.mystery"}
        good = (await admin.post("/api/config/check", json={"toml": edited})).json()
        assert good == {"ok": True, "problems": [], "restart_needed": ["cloud.keepalive_s"]}
        # Saving an invalid text: 422 with the problems; the file is untouched.
        answer = await admin.put("/api/config", json={"toml": bad, "base_version": config["version"]})
        assert answer.status_code == 422
        assert {p["key"] for p in answer.json()["detail"]["problems"]} == {"cloud.keepalive_s", "cloud.mystery"}
        assert agent.config_path.read_text() == original
        # A valid save: written, the old text kept as a version, and the restart named honestly.
        answer = await admin.put("/api/config", json={"toml": edited, "base_version": config["version"]})
        assert answer.status_code == 200, answer.text
        saved = answer.json()
        assert saved["changed"] == ["cloud.keepalive_s"] and saved["restart_needed"] == ["cloud.keepalive_s"]
        assert saved["applied_live"] == [] and saved["restart_required"] is True
        assert agent.config_path.read_text() == edited
        assert agent.config.cloud.keepalive_s == 30  # nothing is applied to the running agent
        # Another editor's save from the old version is refused: 409, nothing written.
        stale = original.replace("keepalive_s = 30", "keepalive_s = 50")
        answer = await admin.put("/api/config", json={"toml": stale, "base_version": config["version"]})
        assert answer.status_code == 409 and answer.json()["detail"]["current_version"] == saved["version"]
        assert agent.config_path.read_text() == edited
        # The versions: the original is kept and can be read and restored.
        versions = (await admin.get("/api/config/versions")).json()
        assert versions["kept"] == 10 and [v["id"] for v in versions["versions"]] == [saved["saved_previous_as"]]
        kept = (await admin.get(f"/api/config/versions/{saved['saved_previous_as']}")).json()
        assert kept["toml"] == original
        answer = await admin.post(
            f"/api/config/versions/{saved['saved_previous_as']}/restore", json={"base_version": saved["version"]}
        )
        assert answer.status_code == 200, answer.text
        assert agent.config_path.read_text() == original and answer.json()["restart_needed"] == []
        # Unknown version, a path in the id, unknown body fields, a malformed version: clear 4xx answers.
        assert (await admin.get("/api/config/versions/nope")).status_code == 404
        assert (await admin.get("/api/config/versions/..%2Fagent")).status_code == 404
        answer = await admin.put("/api/config", json={"toml": edited, "base_version": "x" * 64, "force": True})
        assert answer.status_code == 422
        answer = await admin.put("/api/config", json={"toml": edited, "base_version": "short"})
        assert answer.status_code == 422


async def test_an_agent_without_a_file_says_so(tmp_path: Path) -> None:
    async with running_agent(agent_config(tmp_path / "data", None)) as agent, \
            signed_in(agent, "admin1", Role.ADMIN) as admin:
        answer = await admin.get("/api/config")
        assert answer.status_code == 404 and answer.json()["detail"]["error"] == "no_config_file"
        answer = await admin.put("/api/config", json={"toml": "", "base_version": "0" * 64})
        assert answer.status_code == 404


async def test_the_api_docs_need_a_session_and_use_no_cdn(tmp_path: Path) -> None:
    async with running_agent(agent_config(tmp_path / "data", None)) as agent:
        base = f"http://127.0.0.1:{agent.web_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as anonymous:
            assert (await anonymous.get("/docs")).status_code == 401
            page = await anonymous.get("/docs", headers={"Accept": "text/html"})
            assert page.status_code == 303 and page.headers["location"].startswith("/login")
            assert (await anonymous.get("/docs/assets/swagger-ui-bundle.js")).status_code == 401
            assert (await anonymous.get("/openapi.json")).status_code == 401
        async with signed_in(agent, "staff1", Role.STAFF) as staff:
            assert (await staff.get("/docs")).status_code == 403
        async with signed_in(agent, "tech1", Role.TECHNICIAN) as tech:
            page = await tech.get("/docs")
            assert page.status_code == 200
            html = page.text
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE), "no external URL"
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert "unsafe-inline" not in page.headers["content-security-policy"].split("script-src")[1].split(";")[0]
            assert "<script>" not in html  # no inline script: the start-up is a file
            for src in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', html):
                asset = await tech.get(src)
                assert asset.status_code == 200 and len(asset.content) > 100, src
            assert (await tech.get("/docs/assets/../../etc/passwd")).status_code == 404
            assert (await tech.get("/docs/assets/index.html")).status_code == 404
            paths = (await tech.get("/openapi.json")).json()["paths"]
            for documented in ("/api/config", "/api/config/versions", "/api/users", "/api/events", "/api/audit",
                               "/api/audit/verify", "/api/diagnostics.zip"):
                assert documented in paths, documented


async def test_bad_text_is_a_clear_answer(tmp_path: Path) -> None:
    async with agent_from_file(tmp_path) as agent, signed_in(agent, "admin1", Role.ADMIN) as admin:
        version = (await admin.get("/api/config")).json()["version"]
        for text in ('a = "\\ud800"', "\x00", "[agent\n", "x" * 300_000):
            body = '{"toml": "' + text.replace("\n", "\\n").replace("\x00", "\\u0000") + '", "base_version": "' + version + '"}'
            answer = await admin.put("/api/config", content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 422, (text[:20], answer.text[:200])
        assert agent.config_path is not None
        assert agent.config_path.read_text() == CONFIG.format(data=tmp_path / "data")
