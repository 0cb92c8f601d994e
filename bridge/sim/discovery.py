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

from bridge.discovery import DISCOVERY_PORT, inquiry, is_inquiry

log = structlog.get_logger("bridge.sim")

# The inquiry's format is the bridge's own (bridge.discovery): one definition serves the
# client and this responder.
__all__ = ["DISCOVERY_PORT", "DiscoveryResponder", "inquiry", "is_inquiry", "start_responder"]


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
