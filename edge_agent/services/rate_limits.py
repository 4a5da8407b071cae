"""Rate limits in memory, per client key, bounded in the keys they track. Two algorithms, each for a reason:

- `TokenBucket` (scan links): phones scanning a shelf come in bursts, and a burst of `burst` requests is
  served at once while the steady rate stays `per_minute`;
- `SlidingWindow` (kiosk orders): the configured `orders_per_minute` is an exact count in any 60 s, which is what
  an operator setting it expects to read back.

Neither holds a secret's guesses: pickup codes, staff PINs and web passwords are throttled by
services/throttle.py, whose growing lockouts live in SQLite and survive restarts.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_TRACKED_CLIENTS = 10_000
RATE_WINDOW_S = 60.0
RATE_CLIENTS_MAX = 4096


class TokenBucket:
    """A token bucket per client address, in memory, bounded (scan links: a burst of phones is welcome, the
    steady rate is held).

    At most `max_clients` addresses are tracked; the one seen longest ago is forgotten first (and starts
    again with a full bucket). So memory stays bounded under an address-spraying flood, at the price that
    such a flood is not limited per address, only by what the agent can serve.
    """

    def __init__(
        self,
        per_minute: int,
        burst: int,
        *,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def take(self, client: str) -> float:
        """0.0 when the request may go ahead, else the seconds until it may be retried."""
        now = self._clock()
        found = self._buckets.pop(client, None)
        if found is None:
            tokens = self.burst
            if len(self._buckets) >= self.max_clients:
                self._buckets.popitem(last=False)
        else:
            tokens = min(self.burst, found[0] + (now - found[1]) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


class SlidingWindow:
    """At most `per_minute` events per key in any 60 s, exactly (kiosk orders: `kiosk.orders_per_minute` is a
    count an operator sets and reads); keys beyond RATE_CLIENTS_MAX forget the oldest."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, key: str) -> float:
        """0 if allowed (and counted), else the seconds until it would be."""
        now = self._clock()
        times = self._seen.pop(key, None) or deque()
        while times and now - times[0] >= RATE_WINDOW_S:
            times.popleft()
        self._seen[key] = times
        while len(self._seen) > RATE_CLIENTS_MAX:
            self._seen.popitem(last=False)
        if len(times) >= self.per_minute:
            return RATE_WINDOW_S - (now - times[0])
        times.append(now)
        return 0.0
