"""Bytes on serial lines: transports, frame codecs, reliable links and drivers per protocol; emulators apart.

    base_station/   our base-station protocol: frames, messages, the reliable link, the agent's client
    kerong/         Kerong lock boards on RS485: the frame codec and the bus driver
    scanners/       serial barcode scanners: the line codec
    emulators/      every device emulator and its control socket (drivers never import them)
    cobs, serial_port, picture, tag_types
                    shared by several protocols or their users: byte stuffing, a serial port by URL,
                    the tag picture format, the tag models

This package imports nothing else of ours (DESIGN.md section 3).
"""
