"""The bridge's MQTT side: a sans-I/O codec, a narrow client port, and the link on top.

- ``codec``: MQTT 3.1.1 and 5 packets to bytes and back (both directions, no I/O);
- ``connection``: ``MqttConnection``, one client connection over asyncio (the port:
  connect, publish with its acknowledgement, subscribe, close with or without
  DISCONNECT), on public interfaces only;
- ``link``: ``MqttLink``, the outbox, reconnects, retained state and the limits that keep
  any message from stopping the bridge.

The NVR side does not import this package: it publishes through the ``Publisher``
interface of ``bridge.publishing``.
"""

from bridge.mqtt.link import LinkError, MqttLink, tls_context
from bridge.publishing import InboundMessage

__all__ = ["InboundMessage", "LinkError", "MqttLink", "tls_context"]
