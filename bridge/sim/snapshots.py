"""The simulated NVR's snapshots: what was taken when (SDK guide 3.6 to 3.9) and the images.

A snapshot is a record (channel, type, time, a sequence number, its path); its JPEG is
drawn on demand from the record alone, so the same path always downloads the same bytes
and nothing but the record is kept. Each channel has its own scene (sky, ground and
buildings of its own colours and shapes); over it go the time, the channel and the
sequence number in an on-screen display, a moving figure and windows that light up, so
two snapshots always differ. The scene is made of flat 8x8 blocks and the text of a few
glyph blocks, which ``jpeg`` encodes from its cache: a fresh image costs about 1 ms.

Errors::

    SearchError        a searchSnapshotPath body the NVR would refuse (from ``history``)
"""

from __future__ import annotations

import datetime as dt
import random
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, get_args

from bridge.sim.history import SearchError
from bridge.sim.jpeg import Block, BlockPicture, BlockTriple, encode, rgb_to_ycbcr

SnapshotType = Literal["Manual", "Normal", "Motion", "InputAlarm"]
SNAPSHOT_TYPES: tuple[str, ...] = get_args(SnapshotType)
DEFAULT_LIMIT = 1_000
WIDTH, HEIGHT = 320, 180
COLUMNS, ROWS = WIDTH // 8, -(-HEIGHT // 8)
HORIZON_ROW = 11
FIGURE_ROWS = (14, 17)
OSD_BLACK = rgb_to_ycbcr(0, 0, 0)
OSD_WHITE, OSD_DARK = 235, 16
# A 5x7 font: each glyph is seven rows of five bits, most significant bit leftmost.
FONT: dict[str, tuple[int, ...]] = {
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E),
    "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F),
    "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02),
    "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E),
    "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E),
    "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    ":": (0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00),
    "-": (0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00),
    "#": (0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E),
    "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    " ": (0,) * 7,
}
# Per-channel palettes (RGB): sky at the top, ground at the horizon.
SKIES = ((70, 120, 190), (190, 110, 70), (110, 160, 200), (120, 110, 150), (60, 80, 130))
GROUNDS = ((90, 90, 95), (70, 120, 60), (150, 130, 90), (110, 100, 80), (60, 70, 60))
BUILDINGS = ((130, 125, 120), (160, 110, 90), (100, 105, 120), (170, 160, 140))
WINDOW_LIT, WINDOW_DARK = rgb_to_ycbcr(250, 220, 120), rgb_to_ycbcr(40, 45, 60)
FIGURE = rgb_to_ycbcr(200, 40, 40)


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """One snapshot the NVR took; ``time_ms`` in epoch milliseconds."""

    channel: int
    type: str
    time_ms: int
    seq: int

    @property
    def path(self) -> str:
        """The path getSnapshot and searchSnapshotPath name, unique per NVR."""
        return f"/snapshot/ch{self.channel}_{self.time_ms // 1000}_{self.seq}.jpg"

    def entry(self) -> dict[str, Any]:
        """The searchSnapshotPath result entry (guide 3.7; ``timeStamp`` epoch seconds)."""
        return {
            "channel": self.channel,
            "timeStamp": self.time_ms // 1000,
            "type": self.type,
            "snapshotPath": self.path,
        }


def _channels_filter(body: dict[str, Any]) -> frozenset[int]:
    value = body.get("channels")
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise SearchError(f"channels is required: a list of channel numbers, not {value!r}")
    return frozenset(value)


def _types_filter(body: dict[str, Any]) -> frozenset[str] | None:
    value = body.get("types")
    if value is None:
        return None
    if not isinstance(value, list) or not all(v in SNAPSHOT_TYPES for v in value):
        raise SearchError(f"types must be a list of {', '.join(SNAPSHOT_TYPES)}, not {value!r}")
    return frozenset(value)


def _seconds(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise SearchError(f"{key} is required: a number of epoch seconds, not {value!r}")
    return float(value)


class SnapshotStore:
    """The snapshots taken, by path, oldest forgotten first beyond ``limit``."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._records: OrderedDict[str, SnapshotRecord] = OrderedDict()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._records)

    def take(self, channel: int, kind: str, time_ms: int) -> SnapshotRecord:
        """Record a new snapshot of ``channel``; its image is drawn when downloaded."""
        if kind not in SNAPSHOT_TYPES:
            raise ValueError(f"snapshot type must be one of {', '.join(SNAPSHOT_TYPES)}")
        self._seq += 1
        record = SnapshotRecord(channel, kind, time_ms, self._seq)
        self._records[record.path] = record
        while len(self._records) > self._limit:
            self._records.popitem(last=False)
        return record

    def get(self, path: str) -> SnapshotRecord | None:
        """The snapshot at ``path``, None when there is none (never taken or deleted)."""
        return self._records.get(path)

    def delete(self, path: str) -> bool:
        """Forget a snapshot (deleteSnapshot, guide 3.8); False when there was none."""
        return self._records.pop(path, None) is not None

    def image(self, path: str) -> bytes | None:
        """The JPEG of the snapshot at ``path``, None when there is none."""
        record = self._records.get(path)
        return None if record is None else snapshot_jpeg(record.channel, record.time_ms, record.seq)

    def search(self, body: Any) -> list[dict[str, Any]]:
        """Answer searchSnapshotPath (guide 3.7): bounds in whole seconds, inclusive."""
        if not isinstance(body, dict):
            raise SearchError("the search body must be a JSON object")
        channels, types = _channels_filter(body), _types_filter(body)
        start, end = _seconds(body, "startTime"), _seconds(body, "endTime")
        found = [
            r
            for r in self._records.values()
            if r.channel in channels
            and (types is None or r.type in types)
            and start <= r.time_ms // 1000 <= end
        ]
        found.sort(key=lambda r: (r.time_ms, r.seq))
        return [r.entry() for r in found]


# -- the pictures ---------------------------------------------------------------------


def _mix(colour: tuple[int, int, int], other: tuple[int, int, int], share: float) -> BlockTriple:
    r, g, b = (round(a + (o - a) * share) for a, o in zip(colour, other, strict=True))
    return rgb_to_ycbcr(r, g, b)


@dataclass(frozen=True, slots=True)
class _Scene:
    """A channel's unchanging picture and where its windows are."""

    blocks: tuple[BlockTriple, ...]
    windows: tuple[int, ...]


@lru_cache(maxsize=64)
def _scene(channel: int) -> _Scene:
    """The channel's own view: its sky, ground and buildings (block indices row-major)."""
    rng = random.Random(channel)
    sky, ground = SKIES[channel % len(SKIES)], GROUNDS[channel % len(GROUNDS)]
    blocks: list[BlockTriple] = []
    for row in range(ROWS):
        if row < HORIZON_ROW:
            colour = _mix(sky, (235, 235, 240), row / HORIZON_ROW * 0.7)
        else:
            colour = _mix(ground, (20, 20, 20), (row - HORIZON_ROW) / (ROWS - HORIZON_ROW) * 0.6)
        blocks.extend([colour] * COLUMNS)
    windows: list[int] = []
    column = rng.randint(0, 4)
    while column < COLUMNS - 3:
        width, height = rng.randint(3, 7), rng.randint(3, 8)
        wall = _mix(rng.choice(BUILDINGS), (0, 0, 0), rng.random() * 0.3)
        for row in range(HORIZON_ROW - height, HORIZON_ROW):
            for col in range(column, min(column + width, COLUMNS)):
                index = row * COLUMNS + col
                blocks[index] = wall
                inside = column < col < column + width - 1 and row > HORIZON_ROW - height
                if inside and (row - HORIZON_ROW) % 2 and (col - column) % 2:
                    windows.append(index)
        column += width + rng.randint(1, 4)
    return _Scene(tuple(blocks), tuple(windows))


@lru_cache(maxsize=256)
def _glyph_block(char: str, quadrant: int) -> Block:
    """One quarter (0..3, row-major) of a character drawn twice size in a 16x16 cell."""
    rows = FONT.get(char, FONT[" "])
    top, left = (quadrant // 2) * 8, (quadrant % 2) * 8
    samples = []
    for y in range(top, top + 8):
        glyph_y = (y - 1) // 2
        for x in range(left, left + 8):
            glyph_x = (x - 3) // 2
            on = 0 <= glyph_y < 7 and 0 <= glyph_x < 5 and rows[glyph_y] >> (4 - glyph_x) & 1
            samples.append(OSD_WHITE if on else OSD_DARK)
    if len(set(samples)) == 1:
        return samples[0]
    return tuple(samples)


def _write(blocks: list[BlockTriple], text: str, row: int, column: int) -> None:
    """Draw ``text`` (white on black, 16x16 per character) from block (row, column)."""
    for i, char in enumerate(text):
        for quadrant in range(4):
            r, c = row + quadrant // 2, column + 2 * i + quadrant % 2
            if 0 <= r < ROWS and 0 <= c < COLUMNS:
                blocks[r * COLUMNS + c] = (_glyph_block(char, quadrant), OSD_BLACK[1], OSD_BLACK[2])


def snapshot_picture(channel: int, time_ms: int, seq: int) -> BlockPicture:
    """The picture of a snapshot: the channel's scene at that time, with its OSD."""
    scene = _scene(channel)
    blocks = list(scene.blocks)
    rng = random.Random(seq * 7919 + channel)
    for index in scene.windows:
        blocks[index] = WINDOW_LIT if rng.random() < 0.35 else WINDOW_DARK
    # A figure crossing the ground, two columns a second.
    second = time_ms // 1000
    left = (second * 2 + channel * 5) % (COLUMNS - 2)
    for row in range(*FIGURE_ROWS):
        for col in (left, left + 1):
            blocks[row * COLUMNS + col] = FIGURE
    blocks[: 2 * COLUMNS] = [OSD_BLACK] * (2 * COLUMNS)
    when = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    _write(blocks, when, 0, 1)
    label = f"CH{channel} #{seq % 100_000}"
    _write(blocks, label, ROWS - 3, 1)
    return BlockPicture(WIDTH, HEIGHT, blocks)


@lru_cache(maxsize=32)
def snapshot_jpeg(channel: int, time_ms: int, seq: int) -> bytes:
    """The JPEG of a snapshot; the last few are cached (one cache for every NVR)."""
    return encode(snapshot_picture(channel, time_ms, seq))
