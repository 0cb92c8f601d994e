"""The simulated NVR's fault knobs: each works on any REST path, in-process and over /_sim/."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from bridge.sim import SimulatedNvr
from bridge.sim.faults import DEFAULT_DEPTH, DEFAULT_OVERSIZE_BYTES, deep_json
from tests.test_sim import call, login

# A served path, an endpoint the simulator does not have, and the snapshot download.
PATHS = ["/system/getSystemInfo", "/no/such/endpoint", "/device/download/"]


@pytest.fixture
async def nvr() -> AsyncIterator[SimulatedNvr]:
    async with SimulatedNvr(channels=2, seed=19) as sim:
        yield sim


@pytest.fixture
async def client(nvr: SimulatedNvr) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        status, answer = await login(session, nvr)
        assert (status, answer["Result"]) == (200, "OK")
        yield session


async def raw(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, path: str, **kwargs: Any
) -> tuple[int, str, bytes, aiohttp.ClientResponse]:
    async with client.get(nvr.url + path, allow_redirects=False, **kwargs) as response:
        return response.status, response.content_type, await response.read(), response


def nesting(document: Any) -> int:
    """The depth of a parsed JSON document, without recursion."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return deepest


@pytest.mark.parametrize("path", PATHS)
async def test_garbage_is_200_json_that_is_not_json(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, path: str
) -> None:
    nvr.set_fault(path, "garbage")
    status, content_type, body, _ = await raw(client, nvr, path)
    assert (status, content_type) == (200, "application/json")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    assert len(nvr.calls_to(path)) == 1


@pytest.mark.parametrize("path", PATHS)
async def test_nonjpeg_is_an_image_that_is_not_a_jpeg(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, path: str
) -> None:
    nvr.set_fault(path, "nonjpeg")
    status, content_type, body, _ = await raw(client, nvr, path)
    assert (status, content_type) == (200, "image/jpeg")
    assert body and body[:2] != b"\xff\xd8"


@pytest.mark.parametrize("path", PATHS)
async def test_deep_is_valid_json_nested_as_deep_as_asked(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, path: str
) -> None:
    nvr.set_fault(path, "deep")
    status, content_type, body, _ = await raw(client, nvr, path)
    assert (status, content_type) == (200, "application/json")
    assert nesting(orjson.loads(body)) == DEFAULT_DEPTH
    nvr.set_fault(path, "deep", depth=3)
    assert orjson.loads((await raw(client, nvr, path))[2]) == {"Result": "OK", "Data": [[]]}


def test_deep_json_has_exactly_the_depth() -> None:
    assert orjson.loads(deep_json(1)) == {"Result": "OK", "Data": None}
    for depth in (1, 2, 10, 500):
        assert nesting(orjson.loads(deep_json(depth))) == depth


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("status", [302, 307])
async def test_redirect_points_elsewhere(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, path: str, status: int
) -> None:
    nvr.set_fault(path, "redirect", status=status, location="https://evil.invalid/steal")
    got, _, _, response = await raw(client, nvr, path)
    assert got == status
    assert response.headers["Location"] == "https://evil.invalid/steal"
    nvr.set_fault(path, "redirect")
    got, _, _, response = await raw(client, nvr, path)
    assert (got, response.headers["Location"]) == (302, "http://127.0.0.1:1/redirected")


@pytest.mark.parametrize("path", PATHS)
async def test_oversize_streams_a_valid_json_of_the_size_asked(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, path: str
) -> None:
    nvr.set_fault(path, "oversize", size=3 * 1024 * 1024 + 7)
    status, content_type, body, response = await raw(client, nvr, path)
    assert (status, content_type) == (200, "application/json")
    assert "Content-Length" not in response.headers
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert len(body) == 3 * 1024 * 1024 + 7
    assert orjson.loads(body)["Result"] == "OK"


async def test_oversize_defaults_to_50_mb_and_a_client_may_stop_reading(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    """A client that reads its limit and leaves ends the stream; the NVR keeps serving."""
    nvr.set_fault("/dio/GetPinStatus", "oversize")
    assert nvr.faults["/dio/GetPinStatus"]["size"] == DEFAULT_OVERSIZE_BYTES == 50 * 1024 * 1024
    read = 0
    async with client.get(nvr.url + "/dio/GetPinStatus") as response:
        async for chunk in response.content.iter_chunked(64 * 1024):
            read += len(chunk)
            if read >= 4 * 1024 * 1024:
                break
        response.close()
    assert read >= 4 * 1024 * 1024
    # The whole body, counted as it streams (never held by the simulator).
    total = 0
    async with asyncio.timeout(20), client.get(nvr.url + "/dio/GetPinStatus") as response:
        async for chunk in response.content.iter_chunked(1024 * 1024):
            total += len(chunk)
    assert total == DEFAULT_OVERSIZE_BYTES
    nvr.set_fault("/dio/GetPinStatus", None)
    assert (await call(client, nvr, "GET", "/dio/GetPinStatus"))[0] == 200


async def test_slow_still_delays_then_answers_any_new_endpoint(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    nvr.set_fault("/storage/getStorages", "slow", delay=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, disks = await call(client, nvr, "GET", "/storage/getStorages")
    assert status == 200 and len(disks) == 2
    assert loop.time() - started >= 0.2


@pytest.mark.parametrize(
    ("kwargs", "mentions"),
    [
        ({"mode": "oversize", "size": 3}, "size"),
        ({"mode": "deep", "depth": 0}, "depth"),
        ({"mode": "redirect", "status": 200}, "status"),
        ({"mode": "redirect", "location": ""}, "location"),
        ({"mode": "slow", "delay": -1}, "delay"),
        ({"mode": "explode"}, "fault mode"),
    ],
)
def test_bad_fault_parameters_are_errors(kwargs: dict[str, Any], mentions: str) -> None:
    with pytest.raises(ValueError, match=mentions):
        SimulatedNvr().set_fault("/x", **kwargs)


async def test_control_api_sets_every_knob_with_its_parameters(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    async def control(body: Any) -> tuple[int, Any]:
        return await call(client, nvr, "POST", "/_sim/fault", body)

    settings = [
        {"path": "/a", "mode": "garbage"},
        {"path": "/b", "mode": "oversize", "size": 1000},
        {"path": "/c", "mode": "nonjpeg"},
        {"path": "/d", "mode": "deep", "depth": 7},
        {"path": "/e", "mode": "redirect", "location": "http://other:8080/", "status": 307},
    ]
    for setting in settings:
        assert await control(setting) == (200, {"Result": "OK"})
    _, state = await call(client, nvr, "GET", "/_sim/state")
    faults = state["faults"]
    assert {path: faults[path]["mode"] for path in faults} == {
        "/a": "garbage",
        "/b": "oversize",
        "/c": "nonjpeg",
        "/d": "deep",
        "/e": "redirect",
    }
    assert (faults["/b"]["size"], faults["/d"]["depth"]) == (1000, 7)
    assert (faults["/e"]["location"], faults["/e"]["status"]) == ("http://other:8080/", 307)
    assert len((await raw(client, nvr, "/b"))[2]) == 1000
    assert nesting(orjson.loads((await raw(client, nvr, "/d"))[2])) == 7
    status, _, _, response = await raw(client, nvr, "/e")
    assert (status, response.headers["Location"]) == (307, "http://other:8080/")
    for bad in (
        {"path": "/b", "mode": "oversize", "size": "big"},
        {"path": "/d", "mode": "deep", "depth": 0},
        {"path": "/e", "mode": "redirect", "location": 5},
        {"path": "/e", "mode": "redirect", "status": 200},
    ):
        assert (await control(bad))[0] == 400, bad
    await control({"path": "/a", "mode": None})
    assert "/a" not in nvr.faults
