"""The simulated NVR's snapshots: valid JPEGs, download, search and delete, over real HTTP."""

from __future__ import annotations

import io
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bridge.sim import SimulatedNvr
from bridge.sim.jpeg import BlockPicture, encode, rgb_to_ycbcr
from bridge.sim.snapshots import SnapshotStore, snapshot_jpeg, snapshot_picture
from tests.test_sim import T0_MS, T0_S, call, login, until

DOWNLOAD = "/device/download/"


@pytest.fixture
async def nvr() -> AsyncIterator[SimulatedNvr]:
    async with SimulatedNvr(channels=4, seed=11) as sim:
        yield sim


@pytest.fixture
async def client(nvr: SimulatedNvr) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        status, answer = await login(session, nvr)
        assert (status, answer["Result"]) == (200, "OK")
        yield session


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every scan line: a broken entropy stream fails here
    return image


async def download(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, path: str
) -> tuple[int, str, bytes]:
    url = f"{nvr.url}{DOWNLOAD}?snapshot={urllib.parse.quote(path, safe='')}"
    async with client.get(url) as response:
        return response.status, response.content_type, await response.read()


# -- the encoder ----------------------------------------------------------------------


def test_flat_and_textured_blocks_decode_to_their_samples() -> None:
    """A picture of flat blocks and one gradient block decodes close to what was drawn."""
    gradient = tuple(16 + 3 * (y * 8 + x) for y in range(8) for x in range(8))
    red = rgb_to_ycbcr(200, 30, 30)
    blocks: list[Any] = [red, (gradient, 128, 128), (40, 128, 128), (220, 128, 128)]
    image = decode(encode(BlockPicture(16, 16, blocks)))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (16, 16))
    r, g, b = image.getpixel((3, 3))
    assert abs(r - 200) <= 4 and abs(g - 30) <= 4 and abs(b - 30) <= 4
    grey = image.convert("L")
    drawn = [grey.getpixel((8 + x, y)) for y in range(8) for x in range(8)]
    assert max(abs(got - want) for got, want in zip(drawn, gradient, strict=True)) <= 6
    assert abs(grey.getpixel((4, 12)) - 40) <= 3
    assert abs(grey.getpixel((12, 12)) - 220) <= 3


def test_a_picture_whose_size_is_no_multiple_of_eight_is_cropped() -> None:
    blocks = [(100, 128, 128)] * 6
    assert decode(encode(BlockPicture(20, 10, blocks))).size == (20, 10)
    with pytest.raises(ValueError, match="blocks"):
        encode(BlockPicture(20, 10, blocks[:5]))


def test_snapshots_are_small_valid_jpegs_that_differ_by_channel_and_time() -> None:
    images = {
        (channel, seq): snapshot_jpeg(channel, T0_MS + seq * 1000, seq)
        for channel in (1, 2, 3)
        for seq in (1, 2)
    }
    for data in images.values():
        assert data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")
        assert 2_000 < len(data) < 20_000
        assert decode(data).size == (320, 180)
    assert len(set(images.values())) == len(images)
    # Same record, same bytes (so a path always downloads the same image).
    assert snapshot_jpeg(2, T0_MS + 2000, 2) == images[2, 2]
    # The channels look different, not only in their text.
    middle = [decode(images[ch, 1]).getpixel((160, 60)) for ch in (1, 2, 3)]
    assert len(set(middle)) == 3


def test_a_fresh_snapshot_costs_milliseconds() -> None:
    """Encoding takes a few ms (the bound is loose for slow machines)."""
    snapshot_jpeg(1, T0_MS, 1)  # warm the block caches
    started = time.perf_counter()
    for seq in range(2, 22):
        encode(snapshot_picture(1 + seq % 4, T0_MS + seq * 1000, seq))
    assert (time.perf_counter() - started) / 20 < 0.025


# -- getSnapshot and download ---------------------------------------------------------


async def test_get_snapshot_then_download_the_jpeg(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    status, answer = await call(client, nvr, "GET", "/device/getSnapshot?ChannelID=2")
    assert status == 200 and set(answer) == {"snapshotPath"}
    path = answer["snapshotPath"]
    status, content_type, body = await download(client, nvr, path)
    assert (status, content_type) == (200, "image/jpeg")
    assert body[:2] == b"\xff\xd8"
    assert decode(body).size == (320, 180)
    [recorded] = nvr.calls_to(DOWNLOAD)
    assert recorded.query == {"snapshot": path}
    # Downloading again gives the same image; a second snapshot is another one.
    assert (await download(client, nvr, path))[2] == body
    _, second = await call(client, nvr, "GET", "/device/getSnapshot?ChannelID=2")
    assert second["snapshotPath"] != path
    assert (await download(client, nvr, second["snapshotPath"]))[2] != body


async def test_download_of_an_unknown_snapshot_is_a_json_error(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    for path in ("/snapshot/ch1_0_999.jpg", ""):
        status, content_type, body = await download(client, nvr, path)
        assert (status, content_type) == (200, "application/json")
        assert b'"Result":"Error"' in body
    # The guide's path has a trailing slash; without it there is no such endpoint.
    assert (await call(client, nvr, "GET", "/device/download?snapshot=x"))[0] == 404


async def test_a_snapshot_of_an_offline_camera_is_refused(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    nvr.device.online[3] = False
    _, answer = await call(client, nvr, "GET", "/device/getSnapshot?ChannelID=3")
    assert answer["Result"] == "Error" and "offline" in answer["Description"]


async def test_delete_snapshot_removes_it_from_download_and_search(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    path = nvr.take_snapshot(1).path
    body = {"snapshotPath": path}
    assert await call(client, nvr, "POST", "/device/deleteSnapshot", body) == (
        200,
        {"Result": "OK"},
    )
    assert (await call(client, nvr, "POST", "/device/deleteSnapshot", body))[1]["Result"] == "Error"
    assert b"Error" in (await download(client, nvr, path))[2]


# -- searchSnapshotPath ---------------------------------------------------------------


async def test_search_snapshot_path_filters_by_channel_type_and_time(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    nvr.take_snapshot(1, "Motion", T0_MS)
    nvr.take_snapshot(2, "InputAlarm", T0_MS + 5_000)
    nvr.take_snapshot(1, "Manual", T0_MS + 10_999)
    nvr.take_snapshot(3, "Normal", T0_MS + 20_000)
    query = {"channels": [1, 2], "startTime": T0_S, "endTime": T0_S + 10}
    status, found = await call(client, nvr, "POST", "/device/searchSnapshotPath", query)
    assert status == 200
    assert [(f["channel"], f["type"], f["timeStamp"]) for f in found] == [
        (1, "Motion", T0_S),
        (2, "InputAlarm", T0_S + 5),
        (1, "Manual", T0_S + 10),
    ]
    assert all(set(f) == {"channel", "timeStamp", "type", "snapshotPath"} for f in found)
    typed = {**query, "types": ["Motion", "Manual"], "startTime": T0_S + 1}
    _, found = await call(client, nvr, "POST", "/device/searchSnapshotPath", typed)
    assert [f["type"] for f in found] == ["Manual"]
    status, content_type, body = await download(client, nvr, found[0]["snapshotPath"])
    assert (status, content_type, body[:2]) == (200, "image/jpeg", b"\xff\xd8")


@pytest.mark.parametrize(
    "body",
    [
        {"startTime": T0_S, "endTime": T0_S + 1},
        {"channels": "1", "startTime": T0_S, "endTime": T0_S + 1},
        {"channels": [1], "endTime": T0_S},
        {"channels": [1], "startTime": T0_S, "endTime": "later"},
        {"channels": [1], "startTime": T0_S, "endTime": T0_S, "types": ["Tag"]},
        [1, 2],
    ],
)
async def test_search_snapshot_path_refuses_bad_bodies(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, body: Any
) -> None:
    status, answer = await call(client, nvr, "POST", "/device/searchSnapshotPath", body)
    assert (status, answer["Result"]) == (200, "Error")


def test_the_snapshot_store_is_bounded() -> None:
    store = SnapshotStore(limit=3)
    paths = [store.take(1, "Motion", T0_MS + i).path for i in range(5)]
    assert len(set(paths)) == 5
    assert store.get(paths[0]) is None and store.get(paths[4]) is not None
    assert len(store) == 3
    with pytest.raises(ValueError, match="snapshot type"):
        store.take(1, "Selfie", T0_MS)


async def test_control_api_takes_a_snapshot(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    status, entry = await call(
        client, nvr, "POST", "/_sim/snapshot", {"channel": 4, "type": "Motion", "time_ms": T0_MS}
    )
    assert status == 200
    assert (entry["channel"], entry["type"], entry["timeStamp"]) == (4, "Motion", T0_S)
    assert (await download(client, nvr, entry["snapshotPath"]))[1] == "image/jpeg"
    for bad in ({"channel": 9}, {"channel": 1, "type": "Selfie"}, {"channel": "1"}):
        assert (await call(client, nvr, "POST", "/_sim/snapshot", bad))[0] == 400
    _, state = await call(client, nvr, "GET", "/_sim/state")
    assert state["snapshots"] == 1


async def test_traffic_takes_event_snapshots_that_search_finds() -> None:
    async with (
        SimulatedNvr(traffic=True, traffic_rate=60, seed=5) as nvr,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session,
    ):
        await login(session, nvr)
        await until(lambda: len(nvr.snapshots) >= 3, timeout=10)
        query = {"channels": [1, 2, 3, 4], "startTime": 0, "endTime": time.time() + 1}
        _, found = await call(session, nvr, "POST", "/device/searchSnapshotPath", query)
        assert len(found) >= 3
        assert {f["type"] for f in found} <= {"Motion", "InputAlarm"}
        status, content_type, body = await download(session, nvr, found[0]["snapshotPath"])
        assert (status, content_type) == (200, "image/jpeg")
        decode(body)
