"""Pydantic models of the messages the NVR sends on its websocket streams.

Field names are the SDK guide's (sections 2.8, 4.2, 4.4, 10.13, 10.14). Unknown extra
fields are accepted and ignored (newer firmware adds some); a missing required field or a
value of the wrong kind makes the item invalid.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr

from bridge.limits import INT32_MAX

StreamName = Literal["event", "meta", "exception", "status", "message"]
STREAM_NAMES: tuple[StreamName, ...] = ("event", "meta", "exception", "status", "message")

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_CANONICAL_NUMBER = re.compile(r"[1-9][0-9]{0,9}")


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")  # noqa: TRY004 - pydantic wants ValueError
    return value


def _channel_number(value: Any) -> Any:
    """A channel as the NVR sends it: a JSON integer, or its canonical decimal text.

    ``"01"``, ``1.0`` and ``true`` are refused: each would alias channel 1's topics.
    """
    if type(value) is int:
        return value
    if type(value) is str and _CANONICAL_NUMBER.fullmatch(value):
        return int(value)
    raise ValueError(f"must be a channel number, an integer 1..{INT32_MAX}")


# A number as the NVR sends it: an integer (JSON 1 or "1" is tolerated), never a boolean,
# and within 64 bits (what JSON encoders and MQTT consumers can carry).
NvrInt = Annotated[int, BeforeValidator(_not_a_bool), Field(ge=INT64_MIN, le=INT64_MAX)]
# A channel number: 1..INT32_MAX (CONTRACT section 9); -1 or 0 never become topic levels.
ChannelNumber = Annotated[int, BeforeValidator(_channel_number), Field(ge=1, le=INT32_MAX)]
Channel = ChannelNumber | None


class NvrMessage(BaseModel):
    """Base of every stream message: extra fields ignored, models immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class EventHookMessage(NvrMessage):
    """An event from ``/meta/eventHook`` (section 4.2)."""

    channel: Channel = Field(default=None, alias="ChannelID")
    type: StrictStr = Field(alias="Type")
    state: StrictStr = Field(alias="State")


class MetaHookMessage(NvrMessage):
    """A metadata item from ``/meta/metaHook`` (section 4.4)."""

    channel: Channel = Field(default=None, alias="ChannelID")
    type: StrictStr = Field(alias="Type")
    data: StrictStr = Field(alias="Data")


class ExceptionMessage(NvrMessage):
    """An exception from ``/system/exceptionListen`` (section 10.13)."""

    exception: StrictStr
    target: Any = None
    time: NvrInt


class CameraStatusMessage(NvrMessage):
    """One channel's status from ``/device/cameraStatus`` (section 2.8), sent every second."""

    channel: ChannelNumber = Field(alias="ChannelID")
    online: StrictBool = Field(alias="Online")
    recording: StrictBool = Field(alias="Recording")
    event: StrictBool = Field(alias="Event")
    manual: StrictBool | None = Field(default=None, alias="Manual")


class SystemMessage(NvrMessage):
    """A notification from ``/system/messageListen`` (section 10.14)."""

    message: StrictStr
    time: NvrInt
    target: Any = None
    content: Any = None


STREAM_MODELS: dict[StreamName, type[NvrMessage]] = {
    "event": EventHookMessage,
    "meta": MetaHookMessage,
    "exception": ExceptionMessage,
    "status": CameraStatusMessage,
    "message": SystemMessage,
}

STREAM_PATHS: dict[StreamName, str] = {
    "event": "/meta/eventHook",
    "meta": "/meta/metaHook",
    "exception": "/system/exceptionListen",
    "status": "/device/cameraStatus",
    "message": "/system/messageListen",
}

# The names the SDK guide gives the streams, used for task names and logs.
STREAM_LABELS: dict[StreamName, str] = {
    "event": "eventHook",
    "meta": "metaHook",
    "exception": "exceptionListen",
    "status": "cameraStatus",
    "message": "messageListen",
}
