"""What the rest of the agent may know of the label stations' lower layer, named once: the serial base station's
client and its error, and the tag types. The web UI reaches them here, never in firmware_bridge (an
import-linter contract keeps edge_agent.web off firmware_bridge)."""

from __future__ import annotations

from firmware_bridge.base_station.client import BaseStationClient, BaseStationError
from firmware_bridge.tag_types import TAG_TYPES

__all__ = ["TAG_TYPES", "BaseStationClient", "BaseStationError"]
