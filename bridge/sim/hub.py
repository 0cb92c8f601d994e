"""The simulated NVR's connected websockets, grouped by path, and fan-out to them.

Each client has a bounded queue of frames and its own writer task, so a broadcast only
enqueues: a slow client never delays the others. A client whose queue stays full for
``SEND_TIMEOUT`` seconds is stuck and its connection is aborted (the broadcast waits that
long for it, which is also what paces a burst to the clients' speed). Closing a client
(``close``) sends its pending frames first, then a close frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

log = structlog.get_logger("bridge.sim")

SEND_TIMEOUT = 2.0
CLOSE_TIMEOUT = 2.0
MAX_PENDING_FRAMES = 1_000


@dataclass(eq=False)
class WebsocketClient:
    """One connected websocket: its queue of frames and its connection."""

    path: str
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    queue: asyncio.Queue[bytes | None] = field(
        default_factory=lambda: asyncio.Queue(MAX_PENDING_FRAMES)
    )
    closing: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, frame: bytes) -> bool:
        """Queue a frame without waiting; False when the queue is full."""
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    def abort(self) -> None:
        """Drop the connection at once, without a close handshake."""
        if self.transport is not None:
            self.transport.abort()

    def request_close(self) -> None:
        """Close once the pending frames are sent; abort if the client is stuck."""
        if self.closing:
            return
        self.closing = True
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.abort()

    async def write(self, hub: StreamHub) -> None:
        """Send queued frames until asked to close; stops quietly when the peer is gone."""
        try:
            while (frame := await self.queue.get()) is not None:
                # Frames queued before the NVR went silent are not sent either.
                if not hub.silent:
                    await self.ws.send_frame(frame, WSMsgType.TEXT)
            await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"simulator closing")
        except ConnectionError:
            log.debug("client gone", path=self.path)


class StreamHub:
    """Every connected websocket, by path; ``silent`` stops all sending."""

    def __init__(self) -> None:
        self.silent = False
        self._clients: dict[str, set[WebsocketClient]] = {}

    def add(self, client: WebsocketClient) -> None:
        """Register a connected client."""
        self._clients.setdefault(client.path, set()).add(client)

    def remove(self, client: WebsocketClient) -> None:
        """Forget a client whose connection ended."""
        self._clients.get(client.path, set()).discard(client)

    def count(self, path: str) -> int:
        """How many clients are connected on ``path``."""
        return len(self._clients.get(path, ()))

    def clients(self, paths: Iterable[str] | None = None) -> list[WebsocketClient]:
        """The clients on ``paths`` (all paths when None)."""
        chosen = self._clients.keys() if paths is None else paths
        return [c for p in chosen for c in self._clients.get(p, ())]

    async def broadcast(self, path: str, frame: bytes) -> None:
        """Queue ``frame`` for every client on ``path``; drop clients stuck for too long."""
        if self.silent:
            return
        full = [c for c in self._clients.get(path, ()) if not c.closing and not c.offer(frame)]
        if full:
            await asyncio.gather(*(self._offer_patiently(c, frame) for c in full))

    async def _offer_patiently(self, client: WebsocketClient, frame: bytes) -> None:
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await client.queue.put(frame)
        except TimeoutError:
            log.warning("client stuck, dropped", path=client.path)
            client.abort()

    async def close(self, paths: Iterable[str] | None = None) -> None:
        """Close the clients on ``paths`` (all when None) and wait until they are gone."""
        clients = self.clients(paths)
        for client in clients:
            client.request_close()
        waits = [asyncio.ensure_future(c.finished.wait()) for c in clients]
        if not waits:
            return
        try:
            _, pending = await asyncio.wait(waits, timeout=CLOSE_TIMEOUT)
            if pending:
                for client in clients:
                    if not client.finished.is_set():
                        client.abort()
                await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)
        finally:
            for wait in waits:
                wait.cancel()
