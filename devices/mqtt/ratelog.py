"""At most one log line per key (a device) per interval, with a count of what was left out.

A broken or hostile device can send thousands of bad messages a second; each is still counted in the
metrics, but the log gets one line per device per minute. The table of keys is bounded: when full, the
key logged longest ago is forgotten (its next bad message is then logged at once, which is harmless).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimitedLog:
    def __init__(
        self, interval_s: float = 60.0, max_keys: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._clock = clock
        # key -> (when last logged, how many were suppressed since); oldest logged first.
        self._keys: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def allow(self, key: str) -> int | None:
        """None: stay quiet this time. Otherwise log now; the value is how many were suppressed before."""
        now = self._clock()
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.interval_s:
            self._keys[key] = (entry[0], entry[1] + 1)
            return None
        suppressed = entry[1] if entry is not None else 0
        self._keys[key] = (now, 0)
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return suppressed

    def __len__(self) -> int:
        return len(self._keys)
