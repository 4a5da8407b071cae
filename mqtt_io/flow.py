"""Flow control for a queue fed by an MQTT connection: read no more while it is long.

A receiver that acknowledges only after it stored a message must not drop one when it falls behind (the
broker would not send it again before the next connection), and it cannot rely on the broker's in-flight
limit to slow down (Mosquitto 2.0 exceeds it after a session resumes). So: at `high` queued messages the
connection the last one came on stops being read (TCP's window, then the broker, hold the rest); once the
consumer has the queue down to `low` it is read again.
"""

from __future__ import annotations

import logging

from mqtt_io.driver import MqttConnection

log = logging.getLogger(__name__)


class IntakeFlow:
    def __init__(self, name: str, high: int, low: int) -> None:
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high, got low={low}, high={high}")
        self.name = name
        self.high = high
        self.low = low
        self.pauses = 0
        self._paused: MqttConnection | None = None

    def arrived(self, depth: int, connection: MqttConnection | None) -> None:
        """A message was queued; `depth` is the queue's length now."""
        if connection is None or depth < self.high or connection.reading_paused:
            return
        connection.pause_reading()
        self._paused = connection
        self.pauses += 1
        log.debug("%s: %d messages waiting; not reading until %d", self.name, depth, self.low)

    def taken(self, depth: int) -> None:
        """The consumer took from the queue; `depth` is what is left."""
        if self._paused is not None and depth <= self.low:
            self._paused.resume_reading()
            self._paused = None

    def forget(self) -> None:
        """The connection ended: nothing to resume (a new one starts reading)."""
        self._paused = None
