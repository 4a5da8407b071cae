"""Pickup lockers: lock boards (RS485 vendor boards or GPIO), compartments, and the locker service."""
