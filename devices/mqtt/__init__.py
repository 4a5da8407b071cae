"""Wi-Fi devices on the in-store broker (kiosks, tablets, handheld scanners): the parts of the gateway.

- `messages`: topics and payload validation (docs/mqtt-devices.md sections 1 and 3);
- `registry`: the devices the agent has heard of, discovered or adopted, with availability and state;
- `coalesce`: device state to the cloud, latest only, at most once per window;
- `ratelog`: log lines about bad input, at most once per device per interval.

The connection itself, commands to devices and the dispatch live in `devices.mqtt_gateway`.
"""
