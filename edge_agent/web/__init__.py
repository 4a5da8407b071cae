"""The agent's web server: health, metrics, and (later) the technician UI, kiosk and scan links."""
