"""Our serial protocol to the radio base station of e-ink tags: frames, messages, the reliable link,
and the base station's emulator. Specified byte by byte in docs/base-station-protocol.md."""
