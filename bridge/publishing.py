"""What the NVR side needs of MQTT: a publication, an inbound message, a publisher.

The stream listeners, pollers and command runner depend on this small interface, not on
the MQTT link: ``Publisher.publish`` hands over a ``Publication`` and never waits,
``wait_for_room`` is the readers' backpressure. ``bridge.mqtt.MqttLink`` implements it.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from bridge.nvr.models import StreamName


class Publication(NamedTuple):
    """One MQTT message to publish; ``stream`` labels metrics (None: the bridge's own).

    A named tuple: immutable, and built for every message at a third of the cost of a
    frozen dataclass.
    """

    topic: str
    payload: bytes
    retain: bool
    nvr: str
    stream: StreamName | None = None
    correlation_data: bytes | None = None


class InboundMessage(NamedTuple):
    """A message received on one of the bridge's subscriptions.

    ``retain`` is the publisher's flag (MQTT 5 Retain As Published; with 3.1.1 only a
    retained message sent at subscription time shows it). ``packet_id`` is the broker's
    id of a QoS 1/2 delivery (0 at QoS 0), ``duplicate`` its DUP flag: a redelivery of a
    message whose acknowledgement was lost.
    """

    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None
    packet_id: int = 0
    duplicate: bool = False


class Publisher(Protocol):
    """Where publications go (the MQTT link)."""

    def publish(self, publication: Publication) -> None:
        """Queue a publication; never waits."""

    async def wait_for_room(self) -> None:
        """Wait while the broker lags far behind (backpressure for readers)."""

    @property
    def max_payload(self) -> int:
        """The largest payload the broker takes now; a larger publication would be dropped.

        The broker's Maximum Packet Size less room for the topic and the headers.
        """
