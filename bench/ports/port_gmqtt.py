"""Candidate ``gmqtt``: gmqtt 0.8.0 through its public, documented API only.

Public here means what gmqtt's README documents: ``gmqtt.Client(client_id, will_message=,
**connect_properties)``, ``connect(host, port, keepalive=, version=)``, ``publish(topic,
payload, qos=)``, ``subscribe(topic, qos=)``, ``disconnect(reason_code=)`` and the
``on_connect`` / ``on_message`` / ``on_subscribe`` / ``on_disconnect`` callbacks.

What that API cannot do, and how this candidate copes (findings, printed by the bench):

- no acknowledgement: ``publish()`` returns None and no callback reports a PUBACK (PUBACKs
  only free gmqtt's internal packet ids and stored copies). So "first publish to last
  PUBACK" cannot be measured, only "until the subscriber has all", and an application
  cannot know when a message is safe (nor that the broker refused it: the PUBACK's reason
  code is not even parsed);
- the only bound on unconfirmed publishes is gmqtt's packet id pool, which it sizes from
  the CONNACK's Receive Maximum: ``publish()`` raises ``OverflowError`` once Receive
  Maximum - 1 publishes are unacknowledged (19 with mosquitto's 20). The sender here
  catches it and retries after ``asyncio.sleep(0)`` -- polling, so the CPU figures of
  gmqtt's QoS 1 burst include that spinning;
- ``on_connect``'s properties merge the CONNACK's with the client's own CONNECT
  properties, the client's winning: with ``receive_maximum=64`` set (as every MQTT 5
  candidate here announces) it shows 64, not the broker's 20;
- no abort: ``disconnect()`` always sends DISCONNECT. In MQTT 5 ``disconnect(reason_code=4)``
  ("Disconnect with Will Message") makes the broker publish the Will anyway; in 3.1.1
  nothing public does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

NAME = "gmqtt"
PROTOCOLS = ("5", "3.1.1")
CAPABILITIES = {
    "puback_observable": "NO: publish() returns None, no callback for PUBACK; the only "
    "public signal is publish() raising OverflowError while Receive Maximum - 1 are "
    "unacknowledged",
    "puback_reason_code": "NO: not parsed (a refused publish looks delivered)",
    "receive_maximum_from_connack": "internal only: applied as the OverflowError bound; "
    "on_connect's properties show it only if the client set no receive_maximum itself",
    "max_packet_size_from_connack": "NO: neither exposed (beyond on_connect's properties) "
    "nor enforced",
    "abort_without_disconnect": "MQTT 5 only: disconnect(reason_code=4), a DISCONNECT "
    "'with Will Message'; 3.1.1: no (disconnect() always sends DISCONNECT)",
    "protocols": "3.1.1 and 5: version=MQTTv311 or MQTTv50 (downgrades on CONNACK code 1)",
}
RECEIVE_MAXIMUM = 64  # what we accept at once (as the bridge announces)
SPIN_LIMIT = 50_000_000  # bound of the OverflowError retry loop (the workload has a timeout)


class Port:
    """One gmqtt.Client."""

    acks_observable = False

    def __init__(self, protocol: str, window: int) -> None:
        self.protocol = protocol
        self.window = window
        self.receive_maximum: int | None = None  # not reliably public, see the module doc
        self.max_packet_size: int | None = None
        self.acked = None
        self.refused = None
        self.spins = 0
        self.lost: str | None = None
        self.closed = False
        self.client: Any = None
        self._connack_properties: dict[str, Any] = {}
        self._subscribed = asyncio.Event()
        self._on_message: Callable[[bytes], None] = lambda _payload: None
        self.info: dict[str, Any] = {}

    async def connect(
        self, host: str, port: int, client_id: str, will: tuple[str, bytes] | None = None
    ) -> None:
        properties = {"receive_maximum": RECEIVE_MAXIMUM} if self.protocol == "5" else {}
        will_message = None if will is None else gmqtt.Message(will[0], will[1], qos=1)
        client = gmqtt.Client(
            client_id, clean_session=True, will_message=will_message, **properties
        )
        client.on_connect = self._connected
        client.on_message = self._message
        client.on_subscribe = self._subscribe_acked
        client.on_disconnect = self._disconnected
        self.client = client
        version = MQTTv50 if self.protocol == "5" else MQTTv311
        await client.connect(host, port, keepalive=60, version=version)
        seen = self._connack_properties.get("receive_maximum")
        self.info = {
            "on_connect_receive_maximum": seen[0] if isinstance(seen, list) else seen,
            "window": "gmqtt's own: publish() raises OverflowError at Receive Maximum - 1",
        }

    def _connected(self, client: Any, flags: Any, rc: Any, properties: Any) -> None:
        self._connack_properties = dict(properties or {})

    def _message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any):
        self._on_message(payload)
        return 0

    def _subscribe_acked(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        self._subscribed.set()

    def _disconnected(self, client: Any, packet: Any, exc: Any = None) -> None:
        self.lost = f"disconnected: {exc}"

    # --- sending ----------------------------------------------------------------------

    async def send(self, topic: str, topic_b: bytes, payload: bytes, qos: int) -> None:
        publish = self.client.publish
        for _ in range(SPIN_LIMIT):
            try:
                publish(topic, payload, qos=qos)
            except OverflowError:  # Receive Maximum - 1 unacknowledged: poll
                self.spins += 1
                await asyncio.sleep(0)
            else:
                return
        raise TimeoutError("gmqtt's packet ids stayed exhausted")

    async def drain(self) -> int | None:
        """Nothing public tells when the PUBACKs arrived: None."""
        return None

    # --- receiving --------------------------------------------------------------------

    async def subscribe(self, topic_filter: str, qos: int, on_message: Callable[[bytes], None]):
        self._on_message = on_message
        self._subscribed.clear()
        self.client.subscribe(topic_filter, qos=qos)
        await asyncio.wait_for(self._subscribed.wait(), 10)

    # --- closing ----------------------------------------------------------------------

    async def close(self) -> None:
        self.closed = True
        await self.client.disconnect()

    async def abort(self) -> str | None:
        if self.protocol != "5":
            return None
        self.closed = True
        await self.client.disconnect(reason_code=4)
        return "disconnect(reason_code=4): DISCONNECT 'with Will Message' (MQTT 5 only)"
