"""The simulated NVR's disks, as ``GET /storage/getStorages`` reports them (SDK guide 9.4).

Two disks in one group. Recording fills them at a steady rate per channel, computed from
the time elapsed when asked (no ticker), shared evenly between the disks, until they are
nearly full, where the NVR overwrites the oldest video. A ``DiskError`` exception takes
the named disk out of service (``active`` false) for a while. Beyond the guide's fields,
each disk reports ``used`` and ``free`` like ``size`` but always in GiB (``1536.4G``),
so that they move every few minutes (an extension: the guide names no usage field).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

GIB = 1024**3
# Recording at about 0.5 Mbit/s per channel (the sub stream's rate on a quiet scene).
BYTES_PER_CHANNEL_SECOND = 64 * 1024
FULL_SHARE = 0.97
DISK_ERROR_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class DiskModel:
    """A disk as fitted: its device name, slot, model and size, and how full it started."""

    device: str
    slot: str
    model: str
    size_bytes: int
    initial_share: float


DISKS = (
    DiskModel("sda", "HDD-1", "WDC WD40PURZ-85A", 3_726 * GIB, 0.41),
    DiskModel("sdb", "HDD-2", "ST2000VX008-2E3", 1_863 * GIB, 0.12),
)


def human_size(size: float) -> str:
    """A disk's size as the NVR prints it: ``931.5G``, ``3.6T``."""
    gib = size / GIB
    if gib >= 1024:
        return f"{gib / 1024:.1f}T"
    return gib_size(size)


def gib_size(size: float) -> str:
    """A usage figure, always in GiB so that it moves in steps of 0.1G: ``1536.4G``."""
    return f"{size / GIB:.1f}G"


class Storage:
    """The disks' state: which are active and how full, growing with recording."""

    def __init__(self, serial: str, channels: int, started: float | None = None) -> None:
        self._serial = serial
        self._channels = channels
        self._started = time.time() if started is None else started
        self._out_until: dict[str, float] = {}

    def disk_error(self, device: str, now: float | None = None) -> bool:
        """Take a disk out of service for a while (a DiskError); False for an unknown disk."""
        if device not in {d.device for d in DISKS}:
            return False
        self._out_until[device] = (time.time() if now is None else now) + DISK_ERROR_SECONDS
        return True

    def observe_exception(self, item: Any) -> None:
        """Take note of an exceptionListen item: a DiskError puts its target out of service."""
        if isinstance(item, dict) and item.get("exception") == "DiskError":
            target = item.get("target")
            if isinstance(target, str):
                self.disk_error(target)

    def disks(self, now: float | None = None) -> list[dict[str, Any]]:
        """The getStorages answer at time ``now`` (epoch seconds, default the current time)."""
        now = time.time() if now is None else now
        written = max(0.0, now - self._started) * self._channels * BYTES_PER_CHANNEL_SECOND
        return [
            self._disk(disk, self._out_until.get(disk.device, 0.0) <= now, written / len(DISKS))
            for disk in DISKS
        ]

    def _disk(self, disk: DiskModel, active: bool, written: float) -> dict[str, Any]:
        used = min(disk.size_bytes * disk.initial_share + written, disk.size_bytes * FULL_SHARE)
        digest = hashlib.sha256(f"{self._serial}|{disk.device}".encode()).hexdigest()
        prefix = "WD-WCC7K" if disk.model.startswith("WDC") else "ZA"
        return {
            "active": active,
            "device": f"/dev/{disk.device}",
            "model": disk.model,
            "serial": prefix + digest[: 14 - len(prefix)].upper(),
            "size": human_size(disk.size_bytes),
            "mountpoint": f"/mnt/{disk.device}",
            "fstype": "ext4",
            "slot": disk.slot,
            "group": 1,
            "used": gib_size(used),
            "free": gib_size(disk.size_bytes - used),
        }
