"""Kerong KR-CU16 lock boards on an RS485 bus (docs/lock-boards.md): the host's side only.

`frames` is the sans-IO codec (requests, replies, checksum, stream decoder); `bus` drives one RS485 line
from the agent, one request at a time. The boards' emulator is `firmware_bridge.emulators.kerong`.
"""
