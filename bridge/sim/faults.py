"""Faults a test can inject into the simulated NVR: how logins and REST calls misbehave.

A fault is set per REST path (any path, whether the NVR serves it or not) and replaces
the answer; the call is still recorded. The modes:

- ``error``: 200 ``{"Result": "Error", "Description": "Simulated failure"}``;
- ``http500``: 500 with an error body; ``http404``: 404 with a plain-text reason;
- ``slow``: the normal answer, ``delay`` seconds late;
- ``garbage``: 200 ``application/json`` whose body is not JSON (nor valid UTF-8);
- ``oversize``: 200, a valid JSON object of ``size`` bytes (default 50 MB), streamed in
  chunks without a Content-Length and never held in memory;
- ``nonjpeg``: 200 ``image/jpeg`` whose body does not start with the JPEG marker FF D8;
- ``deep``: 200, valid JSON nested ``depth`` levels deep (default 1000);
- ``redirect``: a ``status`` redirect (default 302; 301, 303, 307, 308 too) to
  ``location`` (default ``http://127.0.0.1:1/redirected``, another port on loopback).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal, get_args

from aiohttp import web

from bridge.sim.rest import Answer

LoginMode = Literal["ok", "refuse", "refuse401", "error500", "slow"]
FaultMode = Literal[
    "error", "http500", "slow", "http404", "garbage", "oversize", "nonjpeg", "deep", "redirect"
]
LOGIN_MODES: tuple[str, ...] = get_args(LoginMode)
FAULT_MODES: tuple[str, ...] = get_args(FaultMode)

DEFAULT_DELAY = 15.0
DEFAULT_OVERSIZE_BYTES = 50 * 1024 * 1024
MIN_OVERSIZE_BYTES = 32
DEFAULT_DEPTH = 1000
DEFAULT_LOCATION = "http://127.0.0.1:1/redirected"
DEFAULT_REDIRECT_STATUS = 302
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 64 * 1024

LOGIN_REFUSED = {"Result": "Error", "Description": "Invalid username or password"}
INTERNAL_ERROR = {"Result": "Error", "Description": "Internal error"}

# What a faulted REST path answers in the modes that are one fixed answer.
FAULT_ANSWERS: dict[str, Answer] = {
    "error": Answer(200, {"Result": "Error", "Description": "Simulated failure"}),
    "http500": Answer(500, INTERNAL_ERROR),
    "http404": Answer(404),
    "garbage": Answer(200, data=b'<html><body>Bad Gateway</body></html>\x00\xff\xfe{"Result": '),
    "nonjpeg": Answer(
        200, data=b"<html><body>snapshot not ready</body></html>", content_type="image/jpeg"
    ),
}
# What POST /admin/login answers in each refusing login mode.
LOGIN_ANSWERS: dict[str, Answer] = {
    "refuse": Answer(200, LOGIN_REFUSED),
    "refuse401": Answer(401, LOGIN_REFUSED),
    "error500": Answer(500, INTERNAL_ERROR),
}

_OVERSIZE_HEAD = b'{"Result": "OK", "Data": "'
_OVERSIZE_TAIL = b'"}'
_FILLER = b"x" * CHUNK_BYTES


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault set on one REST path; each parameter matters for its own mode only."""

    mode: FaultMode
    delay: float = DEFAULT_DELAY
    size: int = DEFAULT_OVERSIZE_BYTES
    depth: int = DEFAULT_DEPTH
    location: str = DEFAULT_LOCATION
    status: int = DEFAULT_REDIRECT_STATUS

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(
                f"fault mode must be one of {', '.join(FAULT_MODES)}, not {self.mode!r}"
            )
        if self.delay < 0:
            raise ValueError(f"delay must not be negative, not {self.delay}")
        if self.size < MIN_OVERSIZE_BYTES:
            raise ValueError(f"size must be at least {MIN_OVERSIZE_BYTES} bytes, not {self.size}")
        if self.depth < 1:
            raise ValueError(f"depth must be at least 1, not {self.depth}")
        if self.status not in REDIRECT_STATUSES:
            raise ValueError(
                f"redirect status must be one of {sorted(REDIRECT_STATUSES)}, not {self.status}"
            )
        if not self.location:
            raise ValueError("location must be a non-empty URL")

    def to_json(self) -> dict[str, Any]:
        """The fault as the control API's state shows it."""
        return {
            "mode": self.mode,
            "delay": self.delay,
            "size": self.size,
            "depth": self.depth,
            "location": self.location,
            "status": self.status,
        }


def deep_json(depth: int) -> bytes:
    """A valid JSON document of ``depth`` nested containers: an object holding arrays."""
    inner = depth - 1
    data = b"[" * inner + b"]" * inner if inner else b"null"
    return b'{"Result": "OK", "Data": ' + data + b"}"


async def serve_fault(fault: Fault, request: web.Request) -> web.StreamResponse:
    """The response of a faulted call, in any mode but ``slow`` (which answers normally)."""
    if fault.mode == "oversize":
        return await _stream_oversize(request, fault.size)
    if fault.mode == "deep":
        return Answer(200, data=deep_json(fault.depth)).to_response()
    if fault.mode == "redirect":
        return web.Response(
            status=fault.status,
            headers={"Location": fault.location},
            text=f"moved to {fault.location}",
        )
    return FAULT_ANSWERS[fault.mode].to_response()


async def _stream_oversize(request: web.Request, size: int) -> web.StreamResponse:
    """A JSON object of exactly ``size`` bytes, written chunk by chunk from one buffer."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    left = size - len(_OVERSIZE_HEAD) - len(_OVERSIZE_TAIL)
    # A client that stops reading past its limit and leaves ends the stream early.
    with contextlib.suppress(ConnectionError):
        await response.write(_OVERSIZE_HEAD)
        filler = memoryview(_FILLER)
        while left > 0:
            step = min(left, CHUNK_BYTES)
            await response.write(filler[:step])
            left -= step
        await response.write(_OVERSIZE_TAIL)
        await response.write_eof()
    return response
