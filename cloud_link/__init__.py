"""The uplink: durable outbox, the MQTT session to the cloud, command intake and the contract.

cloud_link never imports edge_agent, devices or firmware_bridge; what it needs from storage it gets
through the small interfaces in `cloud_link.ports`.
"""
