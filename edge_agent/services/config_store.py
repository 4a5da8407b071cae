"""The configuration file as the web UI edits it: checked like `edge-agent check-config`, written atomically,
the last few versions kept, and a lost update refused.

- Check: the same code path as the CLI (`loads_config`, then `missing_secrets` against the agent's
  environment), relative paths resolved against the file's folder; problems come back by key path.
- Write: a temporary file in the same folder, fsync, `os.replace`, fsync of the folder, so a power cut leaves
  either the old file or the new one, never half of each.
- Versions: before each write the file being replaced is copied to `<name>.versions/<UTC time>-<hash>.toml`
  beside it; the newest `keep` copies stay (default 10).
- Lost updates: every write names the version (SHA-256 of the text) it was edited from; if the file changed
  since, the write is refused (the API answers 409) and nothing is touched.

The agent applies no configuration while running: every change takes effect at the next start. `SaveResult`
says which keys changed and which differ from what the running agent uses (all of which need a restart).
"""

from __future__ import annotations

import calendar
import hashlib
import os
import re
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig, ConfigError, loads_config
from edge_agent.secrets import missing_secrets

VERSIONS_KEPT = 10
MAX_CONFIG_BYTES = 256 * 1024
REDACTED = "<redacted>"
# Keys that would hold a secret if someone put one in the file (the model has none by design).
SECRET_KEY_RE = re.compile(r"(password|passwd|secret|token|passphrase|credential)|(^|_)key$", re.IGNORECASE)
_VERSION_ID_RE = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{12}$")


class ConfigStoreError(Exception):
    """Base of the store's errors; `error` is the API's machine-readable code."""

    error = "config_error"


class ConfigUnavailableError(ConfigStoreError):
    error = "no_config_file"


class ConfigConflictError(ConfigStoreError):
    error = "conflict"

    def __init__(self, current_version: str) -> None:
        super().__init__(
            "the configuration file changed since you loaded it; reload, re-apply your edit, and save again"
        )
        self.current_version = current_version


class ConfigInvalidError(ConfigStoreError):
    error = "invalid"

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the configuration; nothing was written")
        self.problems = problems


class VersionNotFoundError(ConfigStoreError):
    error = "not_found"


class ConfigWriteError(ConfigStoreError):
    """The file or its version copy could not be written (a read-only /etc, a full disk); the file is as it was."""

    error = "write_failed"


@dataclass(frozen=True)
class Problem:
    key: str  # dotted key path ("cloud.port", "kiosks.0.id"), or the file for a syntax error
    message: str

    @classmethod
    def parse(cls, line: str) -> Problem:
        key, sep, message = line.partition(": ")
        return cls(key, message) if sep else cls("(top level)", line)

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "message": self.message}


@dataclass(frozen=True)
class ConfigText:
    text: str
    version: str  # SHA-256 of the UTF-8 text


@dataclass(frozen=True)
class VersionInfo:
    id: str
    saved_ms: int
    size: int
    version: str  # the SHA-256 of the text, as a base_version would name it

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "saved_ms": self.saved_ms, "size": self.size, "version": self.version}


@dataclass(frozen=True)
class SaveResult:
    version: str
    saved_previous_as: str | None
    changed: list[str]  # key paths that differ from the file before this save
    restart_needed: list[str]  # key paths that differ from the configuration the agent is running with
    applied_live: list[str] = field(default_factory=list)  # always empty: nothing is applied while running

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "saved_previous_as": self.saved_previous_as,
            "changed": self.changed,
            "restart_needed": self.restart_needed,
            "applied_live": self.applied_live,
            "restart_required": bool(self.restart_needed),
        }


def text_version(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"cloud": {"port": 1}} -> {"cloud.port": 1}; lists of tables by index ("kiosks.0.id")."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        if not value and prefix:
            out[prefix] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        if not value and prefix:
            out[prefix] = []
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}.{i}"))
    else:
        out[prefix] = value
    return out


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Key paths whose value differs between two configurations given as plain data (model_dump)."""
    a, b = flatten(dict(old)), flatten(dict(new))
    return sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


def redact(value: Any) -> Any:
    """A copy of plain data with every value under a secret-looking key replaced by <redacted>."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if SECRET_KEY_RE.search(str(k)) and v is not None else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


_TOML_KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_.\"'-]+)(\s*=\s*)(.*)$")


def redact_toml_text(text: str) -> str:
    """The TOML text with the value of any secret-looking key replaced (for the diagnostics bundle)."""
    lines = []
    for line in text.splitlines():
        match = _TOML_KEY_LINE.match(line)
        if match and SECRET_KEY_RE.search(match.group(2).strip("\"'").rsplit(".", 1)[-1]):
            lines.append(f'{match.group(1)}{match.group(2)}{match.group(3)}"{REDACTED}"')
        else:
            lines.append(line)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old content or the new, never a mix."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o640
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


_FILE_LOCKS: dict[Path, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    key = path.resolve()
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(key, threading.Lock())


class ConfigStore:
    """The configuration file at `path` and its kept versions. Blocking file I/O: call from a worker thread."""

    def __init__(
        self,
        path: Path,
        running: AgentConfig,
        *,
        keep: int = VERSIONS_KEPT,
        env: Mapping[str, str] | None = None,
        clock: Any = time.time,
    ) -> None:
        self.path = path
        self.versions_dir = path.with_name(path.name + ".versions")
        self.running = running
        self.keep = keep
        self._env = env
        self._clock = clock
        # One lock per file, not per instance: the config page and a lock-board adoption each make their own
        # store, and two saves at once must still read-check-write one after the other.
        self._lock = _lock_for(path)

    # -- reading -----------------------------------------------------------------------------------

    def read(self) -> ConfigText:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise ConfigUnavailableError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        text = raw.decode("utf-8", errors="replace")
        return ConfigText(text, text_version(text))

    def check(self, text: str) -> tuple[AgentConfig | None, list[Problem]]:
        """Validate `text` exactly as `edge-agent check-config` validates a file (secrets included)."""
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate sent as JSON "\ud800"
            return None, [Problem("(file)", "not valid Unicode text")]
        if size > MAX_CONFIG_BYTES:
            return None, [Problem("(file)", f"larger than {MAX_CONFIG_BYTES} bytes")]
        try:
            config = loads_config(text, source=str(self.path), base_dir=self.path.parent)
        except ConfigError as exc:
            return None, [Problem.parse(p) for p in exc.problems]
        problems = [Problem.parse(p) for p in missing_secrets(config, self._env)]
        return (None, problems) if problems else (config, [])

    def parsed(self, text: str) -> AgentConfig | None:
        config, _ = self.check(text)
        return config

    # -- writing -----------------------------------------------------------------------------------

    def save(self, text: str, base_version: str) -> SaveResult:
        """Validate and write `text` if the file is still at `base_version`. Raises ConfigInvalidError
        (nothing written) or ConfigConflictError (nothing written)."""
        new_config, problems = self.check(text)
        if new_config is None:
            raise ConfigInvalidError(problems)
        with self._lock:
            current = self.read()
            if current.version != base_version:
                raise ConfigConflictError(current.version)
            old_config = self.parsed(current.text)
            try:
                saved_as = self._keep_version(current.text) if current.text != text else None
                atomic_write(self.path, text.encode("utf-8"))
            except OSError as exc:
                raise ConfigWriteError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        new_data = new_config.model_dump(mode="json")
        old_data = old_config.model_dump(mode="json") if old_config is not None else {}
        return SaveResult(
            version=text_version(text),
            saved_previous_as=saved_as,
            changed=changed_keys(old_data, new_data),
            restart_needed=changed_keys(self.running.model_dump(mode="json"), new_data),
        )

    def restore(self, version_id: str, base_version: str) -> SaveResult:
        return self.save(self.version_text(version_id), base_version)

    # -- versions ----------------------------------------------------------------------------------

    def _keep_version(self, text: str) -> str:
        self.versions_dir.mkdir(mode=0o750, exist_ok=True)
        now = self._clock()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
        version_id = f"{stamp}-{text_version(text)[:12]}"
        atomic_write(self.versions_dir / f"{version_id}.toml", text.encode("utf-8"))
        for old in self._version_files()[: -self.keep]:
            old.unlink(missing_ok=True)
        return version_id

    def _version_files(self) -> list[Path]:
        """Oldest first (the names start with the UTC time, so name order is time order)."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p for p in self.versions_dir.glob("*.toml") if _VERSION_ID_RE.match(p.stem))

    def versions(self) -> list[VersionInfo]:
        """Kept versions, newest first."""
        infos = []
        for path in reversed(self._version_files()):
            try:
                text = path.read_bytes().decode("utf-8", errors="replace")
            except OSError:  # pruned by a save meanwhile
                continue
            saved = calendar.timegm(time.strptime(path.stem[:15], "%Y%m%dT%H%M%S"))
            saved_ms = saved * 1000 + int(path.stem[15:18])
            infos.append(VersionInfo(path.stem, saved_ms, len(text.encode("utf-8")), text_version(text)))
        return infos

    def version_text(self, version_id: str) -> str:
        if not _VERSION_ID_RE.match(version_id):
            raise VersionNotFoundError(f"no kept version {version_id!r}")
        path = self.versions_dir / f"{version_id}.toml"
        try:
            return path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            raise VersionNotFoundError(f"no kept version {version_id!r}") from None
