"""The locker's alarm signal: a status LED that blinks and a buzzer that beeps while an alarm is open.

Wired to GPIO through gpiozero (on a Raspberry Pi, lgpio; in tests and the demo, gpiozero's MockFactory
via GPIOZERO_PIN_FACTORY=mock). Either part may be absent. `set` is idempotent: the locker service
calls it after every sensor poll, and gpiozero restarts a blink from scratch when told again.
"""

from __future__ import annotations

import contextlib
from typing import Any

from gpiozero import LED, Buzzer


class AlarmSignal:
    def __init__(self, led_pin: int | None = None, buzzer_pin: int | None = None, *, pin_factory: Any = None) -> None:
        if led_pin is not None and led_pin == buzzer_pin:
            raise ValueError(f"the LED and the buzzer cannot share GPIO {led_pin}")
        self.led = LED(led_pin, pin_factory=pin_factory) if led_pin is not None else None
        self.buzzer = Buzzer(buzzer_pin, pin_factory=pin_factory) if buzzer_pin is not None else None
        self.on = False

    def set(self, on: bool) -> None:
        if on == self.on:
            return
        if self.led is not None:
            if on:
                self.led.blink(on_time=0.25, off_time=0.25)
            else:
                self.led.off()
        if self.buzzer is not None:
            if on:
                self.buzzer.beep(on_time=0.2, off_time=0.8)
            else:
                self.buzzer.off()
        # Said only once the outputs follow: the technician's GPIO page reads `on` and the pins from a worker
        # thread, and off() first joins the blink thread, so "off" must never show beside a lit LED.
        self.on = on

    def close(self) -> None:
        for device in (self.led, self.buzzer):
            if device is not None:
                with contextlib.suppress(Exception):
                    device.close()
