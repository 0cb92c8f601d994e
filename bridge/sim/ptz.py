"""The PTZ commands of ``POST /device/ptzControl`` (SDK guide 2.9 to 2.16), per channel.

Pure state: presets (token -> name), the tour and what the camera is doing. Each command
is a small handler in a dispatch table; a refused command raises ``PtzError``, which the
REST layer turns into ``{"Result": "Error", "Description": ...}``.

Only some cameras have PTZ (by default channels 1 and 2, each with a few presets already
set); every command to another channel is refused, ``get_presets`` included, as a fixed
camera answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

MOVE_COMMANDS = frozenset(
    {"tilt_up", "tilt_down", "pan_left", "pan_right", "zoom_in", "zoom_out", "stop"}
)
OK: dict[str, Any] = {"Result": "OK"}
DEFAULT_PTZ_CHANNELS = (1, 2)
# Presets a PTZ camera comes with, by channel; other PTZ channels get GENERIC_PRESETS.
PRESET_NAMES: dict[int, tuple[str, ...]] = {
    1: ("Entrance", "Parking"),
    2: ("Gate", "Loading dock", "Fence"),
}
GENERIC_PRESETS = ("Home", "Overview")


class PtzError(ValueError):
    """A PTZ command the camera refuses; the message says why."""


@dataclass
class ChannelPtz:
    """One camera's PTZ state."""

    presets: dict[str, str] = field(default_factory=dict)
    tour: list[dict[str, Any]] = field(default_factory=list)
    touring: bool = False
    moving: str | None = None
    at_preset: str | None = None
    next_token: int = 1

    @classmethod
    def with_presets(cls, names: Iterable[str]) -> ChannelPtz:
        """A camera with these presets already set (tokens ``"1"``, ``"2"``...)."""
        presets = {str(token): name for token, name in enumerate(names, start=1)}
        return cls(presets=presets, next_token=len(presets) + 1)


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise PtzError("parameters must be a JSON object")
    return parameters


def _speed(value: Any, *, maximum: float | None) -> None:
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise PtzError(f"speed must be a non-negative number, not {value!r}")
    if maximum is not None and value > maximum:
        raise PtzError(f"speed must be at most {maximum}, not {value!r}")


def _token(parameters: dict[str, Any], ptz: ChannelPtz) -> str:
    """The ``preset_token`` of the parameters, which must name an existing preset."""
    token = parameters.get("preset_token")
    if not isinstance(token, str):
        raise PtzError("preset_token must be a string")
    if token not in ptz.presets:
        raise PtzError(f"no preset with token {token!r}")
    return token


def _move(ptz: ChannelPtz, body: dict[str, Any]) -> dict[str, Any]:
    _speed(body.get("speed"), maximum=None)
    command = body["command"]
    ptz.moving = None if command == "stop" else command
    ptz.touring = ptz.touring and command != "stop"
    return OK


def _set_preset(ptz: ChannelPtz, body: dict[str, Any]) -> dict[str, Any]:
    parameters = _parameters(body)
    name = parameters.get("preset_name")
    if not isinstance(name, str) or not name:
        raise PtzError("preset_name is required and must be a non-empty string")
    # With a token, the preset is renamed; without, a new one is made (guide 2.10).
    if "preset_token" in parameters:
        token = _token(parameters, ptz)
    else:
        token = str(ptz.next_token)
        ptz.next_token += 1
    ptz.presets[token] = name
    return {"PresetToken": token}


def _remove_preset(ptz: ChannelPtz, body: dict[str, Any]) -> dict[str, Any]:
    token = _token(_parameters(body), ptz)
    del ptz.presets[token]
    ptz.tour = [p for p in ptz.tour if p["preset_token"] != token]
    return OK


def _goto_preset(ptz: ChannelPtz, body: dict[str, Any]) -> dict[str, Any]:
    parameters = _parameters(body)
    token = _token(parameters, ptz)
    _speed(parameters.get("speed"), maximum=1.0)
    ptz.at_preset, ptz.moving = token, None
    return OK


def _get_presets(ptz: ChannelPtz, body: dict[str, Any]) -> dict[str, Any]:
    del body
    return {"presets": [{"name": n, "preset_token": t} for t, n in ptz.presets.items()]}


def _start_tour(ptz: ChannelPtz, body: dict[str, Any]) -> dict[str, Any]:
    parameters = _parameters(body)
    _speed(parameters.get("speed"), maximum=1.0)
    picked = parameters.get("picked_presets", [])
    if not isinstance(picked, list):
        raise PtzError("picked_presets must be a list")
    tour: list[dict[str, Any]] = []
    for entry in picked:
        if not isinstance(entry, dict):
            raise PtzError("each picked preset must be a JSON object")
        name, seconds = entry.get("name"), entry.get("time")
        token = _token(entry, ptz)
        if not isinstance(name, str):
            raise PtzError("each picked preset needs a name")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
            raise PtzError("each picked preset needs a positive time in seconds")
        tour.append({"name": name, "preset_token": token, "time": seconds})
    # No picked presets clears the tour and stops it (guide 2.14).
    ptz.tour, ptz.touring = tour, bool(tour)
    return OK


def _stop_tour(ptz: ChannelPtz, body: dict[str, Any]) -> dict[str, Any]:
    del body
    ptz.touring = False
    return OK


def _get_tour_presets(ptz: ChannelPtz, body: dict[str, Any]) -> dict[str, Any]:
    del body
    return {"presets": [{"name": p["name"], "preset_token": p["preset_token"]} for p in ptz.tour]}


PTZ_COMMANDS: dict[str, Callable[[ChannelPtz, dict[str, Any]], dict[str, Any]]] = {
    **dict.fromkeys(MOVE_COMMANDS, _move),
    "set_preset": _set_preset,
    "remove_preset": _remove_preset,
    "goto_preset": _goto_preset,
    "get_presets": _get_presets,
    "start_tour": _start_tour,
    "stop_tour": _stop_tour,
    "get_tour_presets": _get_tour_presets,
}


class PtzCameras:
    """The PTZ state of each channel that has PTZ; the others refuse every command."""

    def __init__(self, channels: Iterable[int] = DEFAULT_PTZ_CHANNELS) -> None:
        self.channels: dict[int, ChannelPtz] = {
            channel: ChannelPtz.with_presets(PRESET_NAMES.get(channel, GENERIC_PRESETS))
            for channel in channels
        }

    def command(self, channel: int, body: Any) -> dict[str, Any]:
        """Run one ptzControl body on ``channel``; PtzError when the camera refuses it."""
        ptz = self.channels.get(channel)
        if ptz is None:
            raise PtzError(f"the camera on channel {channel} has no PTZ")
        if not isinstance(body, dict):
            raise PtzError("the body must be a JSON object with a command")
        command = body.get("command")
        handler = PTZ_COMMANDS.get(command) if isinstance(command, str) else None
        if handler is None:
            raise PtzError(f"unknown PTZ command {command!r}")
        return handler(ptz, body)
