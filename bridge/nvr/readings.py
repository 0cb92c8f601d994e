"""What the NVR's state answers mean: pins, disks, presets, snapshot paths. Pure, bounded.

Each function takes a REST answer exactly as the NVR sent it (any JSON, perhaps hostile)
and returns what the bridge publishes, or None when the answer is not of the expected
shape; entries that do not fit are skipped, and every count and string is bounded.
Shapes are the SDK guide's: GetGPIOInfo (10.19), GetPinStatus (10.20), getStorages
(9.4), ptzControl get_presets (2.13), getSnapshot (3.6).
"""

from __future__ import annotations

from typing import Any

MAX_PINS = 256
MAX_PIN_NUMBER = 65_535
MAX_DISKS = 64
MAX_PRESETS = 256
MAX_TEXT = 200
MAX_PATH = 1024


def _pin_numbers(value: Any) -> list[int]:
    if not isinstance(value, list):
        return []
    pins = {pin for pin in value[:MAX_PINS] if type(pin) is int and 1 <= pin <= MAX_PIN_NUMBER}
    return sorted(pins)


def gpio_pins(answer: Any) -> tuple[list[int], list[int]] | None:
    """The NVR's own (``ch`` 0) input and output pin numbers; empty lists when absent.

    None when the answer is not GetGPIOInfo's list at all.
    """
    if not isinstance(answer, list):
        return None
    for entry in answer[:MAX_PINS]:
        if isinstance(entry, dict) and entry.get("ch") == 0 and type(entry.get("ch")) is int:
            return _pin_numbers(entry.get("alarmIn")), _pin_numbers(entry.get("alarmOut"))
    return [], []


def pin_values(answer: Any) -> dict[int, int] | None:
    """GetPinStatus as ``{pin: 0 or 1}``; None when the answer is not of its shape."""
    if not isinstance(answer, dict) or not isinstance(answer.get("pin_value"), list):
        return None
    values: dict[int, int] = {}
    for entry in answer["pin_value"][:MAX_PINS]:
        if not isinstance(entry, dict):
            continue
        pin, value = entry.get("pinNum"), entry.get("pinVal")
        if type(pin) is int and 1 <= pin <= MAX_PIN_NUMBER and type(value) is int:
            values[pin] = 1 if value else 0
    return values


def disks(answer: Any) -> list[Any] | None:
    """GetStorages' list of disks as the NVR sent it (at most ``MAX_DISKS``)."""
    if not isinstance(answer, list):
        return None
    return answer[:MAX_DISKS]


def presets(answer: Any) -> list[dict[str, str]] | None:
    """get_presets' ``presets`` as ``[{"name", "preset_token"}]``; None without a list.

    An answer without a ``presets`` list (an error, a camera without PTZ) is None.
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("presets"), list):
        return None
    out: list[dict[str, str]] = []
    for entry in answer["presets"][:MAX_PRESETS]:
        if not isinstance(entry, dict):
            continue
        name, token = entry.get("name"), entry.get("preset_token")
        if isinstance(token, str) and token and len(token) <= MAX_TEXT:
            label = name if isinstance(name, str) and name else token
            out.append({"name": label[:MAX_TEXT], "preset_token": token})
    return out


def preset_options(known: list[dict[str, str]]) -> list[str]:
    """One label per preset: its name, or for a repeated name ``name (token)``.

    Home Assistant's preset select offers these; ``preset_token`` takes them back.
    """
    labels: list[str] = []
    for entry in known:
        name = entry["name"]
        labels.append(f"{name} ({entry['preset_token']})" if name in labels else name)
    return labels


def preset_token(known: list[dict[str, str]], wanted: str) -> str | None:
    """The token of the preset named ``wanted`` (exactly, then in any case), or with it.

    A label of ``preset_options`` names its own preset, also for a repeated name.
    """
    for entry, label in zip(known, preset_options(known), strict=True):
        if label == wanted:
            return entry["preset_token"]
    for entry in known:
        if entry["preset_token"] == wanted:
            return entry["preset_token"]
    folded = wanted.casefold()
    for entry in known:
        if entry["name"].casefold() == folded:
            return entry["preset_token"]
    return None


def snapshot_path(answer: Any) -> str | None:
    """GetSnapshot's ``snapshotPath``, when it is a plausible path."""
    if not isinstance(answer, dict):
        return None
    path = answer.get("snapshotPath")
    if isinstance(path, str) and path and len(path) <= MAX_PATH and "\x00" not in path:
        return path
    return None
