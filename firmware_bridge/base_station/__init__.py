"""Our serial protocol to the radio base station of e-ink tags: frames, messages, the reliable link and
the agent's client. Specified byte by byte in docs/base-station-protocol.md. The base station's emulator
is `firmware_bridge.emulators.base_station`."""
