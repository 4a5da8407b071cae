"""Test support: real Mosquitto brokers, a cloud-side subscriber, fault-injecting TCP proxies."""
