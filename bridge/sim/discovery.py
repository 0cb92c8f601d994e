"""The NVR's UDP discovery responder (SDK guide section 1).

A client broadcasts a 22-byte inquiry to port 31501; each NVR answers the sender with a
``DeviceInfo`` XML document. One responder may answer for several simulated NVRs (one
datagram each), as a fleet on one host would. Other datagrams are ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import structlog

log = structlog.get_logger("bridge.sim")

DISCOVERY_PORT = 31501
MAGIC = bytes((0x26, 0x98, 0x23, 0x34))
INQUIRY_CMD = bytes((0x04, 0x01))
INQUIRY_SIZE = 22


def inquiry(sender_mac: bytes = bytes(6)) -> bytes:
    """The 22-byte inquiry: magic, command 0x0401, MACs, DeviceInfo XML wanted, no payload."""
    return MAGIC + INQUIRY_CMD + sender_mac + bytes(6) + bytes((1, 0)) + bytes(2)


def is_inquiry(datagram: bytes) -> bool:
    """Whether a datagram is the device-information inquiry."""
    return len(datagram) == INQUIRY_SIZE and datagram[:4] == MAGIC and datagram[4:6] == INQUIRY_CMD


class DiscoveryResponder(asyncio.DatagramProtocol):
    """Answers each inquiry with one DeviceInfo XML per device ``answers`` returns."""

    def __init__(self, answers: Callable[[], list[str]]) -> None:
        self._answers = answers
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the socket to answer on."""
        # A datagram endpoint's transport, though CPython's class does not say so before 3.12.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        """Answer an inquiry; ignore anything else."""
        if self._transport is None or not is_inquiry(data):
            log.debug("discovery datagram ignored", size=len(data))
            return
        for xml in self._answers():
            self._transport.sendto(xml.encode("utf-8"), addr)


async def start_responder(
    answers: Callable[[], list[str]], host: str, port: int
) -> tuple[asyncio.DatagramTransport, int]:
    """Bind a responder on ``host:port`` (0 = ephemeral); returns its transport and port."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: DiscoveryResponder(answers), local_addr=(host, port)
    )
    bound = int(transport.get_extra_info("sockname")[1])
    log.info("discovery listening", host=host, port=bound)
    return transport, bound
