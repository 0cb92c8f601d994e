"""Candidate ``aiomqtt``: aiomqtt 2.5.1 (on paho-mqtt 2.2) through its public API.

``await client.publish(topic, payload, qos=1)`` returns once the PUBACK arrived (at QoS 0:
once paho wrote the packet), so the window is kept with a task per message and an
``asyncio.Semaphore(window)``, the way aiomqtt's documentation suggests for concurrency.
``client.pending_calls_threshold`` (a public attribute) is raised above the window:
otherwise aiomqtt logs a warning for every publish beyond 10 pending ones.

Findings (printed by the bench):

- the PUBACK is observable (the awaited publish), but not its reason code: aiomqtt's
  ``_on_publish`` ignores it, so a publish the broker refused (0x87 not authorized, ...)
  returns like a delivered one;
- the CONNACK's properties are dropped (aiomqtt's ``_on_connect`` ignores them), so the
  broker's Receive Maximum and Maximum Packet Size are not public; paho 2.2 does not apply
  them either (its own ``max_inflight_messages``, 20 by default, bounds QoS 1/2 instead,
  and it sends packets larger than the broker's maximum);
- no abort: leaving ``async with Client(...)`` always sends DISCONNECT (reason 0); the
  Will fires only if the process or the socket dies;
- MQTT 3.1, 3.1.1 (the default) and 5 (``protocol=ProtocolVersion.V5``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

NAME = "aiomqtt"
PROTOCOLS = ("5", "3.1.1")
CAPABILITIES = {
    "puback_observable": "yes: await publish(qos=1) returns on the PUBACK (one awaiting "
    "task per message in flight)",
    "puback_reason_code": "NO: ignored (a refused publish returns like a delivered one)",
    "receive_maximum_from_connack": "NO: CONNACK properties are dropped; paho bounds "
    "QoS 1/2 with its own max_inflight_messages (20 by default)",
    "max_packet_size_from_connack": "NO: not exposed, not enforced",
    "abort_without_disconnect": "NO: leaving `async with` always sends DISCONNECT",
    "protocols": "3.1, 3.1.1 and 5: protocol=ProtocolVersion.V5 (3.1.1 by default)",
}
RECEIVE_MAXIMUM = 64  # what we accept at once (as the bridge announces)
MAX_MESSAGES = 10_000_000  # bound of the inbound reader loop


class Port:
    """One aiomqtt.Client, entered with an AsyncExitStack."""

    acks_observable = True

    def __init__(self, protocol: str, window: int) -> None:
        self.protocol = protocol
        self.window = window
        self.receive_maximum: int | None = None  # not public
        self.max_packet_size: int | None = None
        self.acked = 0
        self.refused = None
        self.errors = 0
        self.first_error: str | None = None
        self.last_ack_ns: int | None = None
        self.lost: str | None = None
        self.closed = False
        self.client: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._sem = asyncio.Semaphore(window)
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self.info: dict[str, Any] = {}

    async def connect(
        self, host: str, port: int, client_id: str, will: tuple[str, bytes] | None = None
    ) -> None:
        v5 = self.protocol == "5"
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
        client = aiomqtt.Client(
            host,
            port,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=None if will is None else aiomqtt.Will(will[0], will[1], qos=1),
            keepalive=60,
            properties=properties,
            max_inflight_messages=self.window,
        )
        client.pending_calls_threshold = 4 * self.window + 10
        self.client = client
        await self._stack.enter_async_context(client)
        self.info = {"window": self.window, "paho_max_inflight_messages": self.window}

    # --- sending ----------------------------------------------------------------------

    async def send(self, topic: str, topic_b: bytes, payload: bytes, qos: int) -> None:
        await self._sem.acquire()
        if self.lost is not None:
            self._sem.release()
            raise ConnectionError(self.lost)
        task = asyncio.create_task(self._publish(topic, payload, qos))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, topic: str, payload: bytes, qos: int) -> None:
        try:
            await self.client.publish(topic, payload, qos=qos, timeout=60)
        except aiomqtt.MqttError as exc:
            self.errors += 1
            if self.first_error is None:
                self.first_error = str(exc)
            self.lost = str(exc)
        else:
            if qos:
                self.acked += 1
                self.last_ack_ns = time.time_ns()
        finally:
            self._sem.release()

    async def drain(self) -> int | None:
        if self._tasks:
            await asyncio.gather(*self._tasks)
        if self.errors:
            self.info["errors"] = self.errors
            self.info["first_error"] = self.first_error
        return self.last_ack_ns

    # --- receiving --------------------------------------------------------------------

    async def subscribe(self, topic_filter: str, qos: int, on_message: Callable[[bytes], None]):
        await self.client.subscribe(topic_filter, qos=qos)

        async def read() -> None:
            messages = self.client.messages
            for _ in range(MAX_MESSAGES):
                message = await anext(messages)
                on_message(message.payload)

        self._reader = asyncio.create_task(read())

    # --- closing ----------------------------------------------------------------------

    async def close(self) -> None:
        self.closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._stack.aclose()

    async def abort(self) -> str | None:
        return None  # nothing public closes without DISCONNECT
