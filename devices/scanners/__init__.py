"""Barcode scanners attached to the mini-PC (serial); USB keyboard-wedge scanners are read by the kiosk page."""
