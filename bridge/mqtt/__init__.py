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

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.mqtt.link import LinkError, MqttLink, tls_context
    from bridge.publishing import InboundMessage

__all__ = ["InboundMessage", "LinkError", "MqttLink", "tls_context"]


def __getattr__(name: str) -> Any:
    """The link's names on first use: the codec and the port import without the link."""
    if name == "InboundMessage":
        from bridge.publishing import InboundMessage  # noqa: PLC0415

        return InboundMessage
    if name in __all__:
        from bridge.mqtt import link  # noqa: PLC0415

        return getattr(link, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
