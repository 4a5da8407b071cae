"""Bytes on serial lines: transports, frame codecs, the reliable link and firmware emulators.

This package imports nothing else of ours (DESIGN.md section 3).
"""
