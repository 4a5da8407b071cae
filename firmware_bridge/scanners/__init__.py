"""Serial barcode scanners: the line codec (`lines`) that turns a scanner's bytes into codes.

The scanner driver that opens the port lives in `devices.scanners.serial_scanner`; the scanner's
emulator is `firmware_bridge.emulators.scanner`.
"""
