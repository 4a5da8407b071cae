"""MQTT on the event loop, shared by the cloud link and the in-store devices; imports nothing of ours.

- `driver`: one MQTT connection, paho 2.x driven by the asyncio loop (no paho thread);
- `reconnect`: the one loop that keeps a connection up (full-jitter backoff, attempt counting, stop);
- `flow`: flow control for a queue fed by a connection (stop reading while the queue is long);
- `strict_json`: parsing untrusted JSON payloads strictly, with one error type.
"""
