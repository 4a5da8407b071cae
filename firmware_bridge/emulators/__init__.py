"""Every device emulator and its control socket, apart from the drivers (DESIGN.md sections 3 and 5).

Emulators are product code run by `edge-agent simulate ...` for the demo, the tests, the benchmarks and
technician training. They speak each protocol from the device's side, reusing the codecs (and, for the
base station, the `Link`) of the driver packages. The dependency points one way: emulators import the
drivers' codecs, drivers never import emulators (an import-linter contract in pyproject.toml).

    base_station, base_station_control, sim_tags    the radio base station, its control socket, its tags
    kerong, kerong_control                          Kerong lock boards and their control socket
    scanner                                         a serial barcode scanner
    pty_line                                        the emulator's end of a line: paced pty/TCP, faults
    support                                         the control-socket server, port choice and run loop
"""
