"""The cloud topic tree (docs/cloud-contract.md section 1)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Store and device ids appear in topics and in hand-formatted JSON: keep them to a safe alphabet.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Topics:
    prefix: str
    store_id: str

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.store_id}"

    def event(self, event_type: str) -> str:
        return f"{self.root}/events/{event_type}"

    def state(self, device_id: str) -> str:
        return f"{self.root}/state/{device_id}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def commands(self) -> str:
        return f"{self.root}/commands"

    @property
    def command_results(self) -> str:
        return f"{self.root}/commands/result"
