"""What each device is and does: labels, lock boards and GPIO, kiosks and MQTT devices."""
