"""nvr-bridge: EverFocus NVR event streams and commands, bridged to MQTT."""

__version__ = "0.1.0"
