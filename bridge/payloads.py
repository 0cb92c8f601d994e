"""The JSON payloads the bridge publishes, as TypedDicts (docs/mqtt.md).

The code that builds a payload annotates its dict with one of these types, so mypy checks
its keys; ``tools/asyncapi.py`` turns them into the schemas of ``docs/asyncapi.yaml``
(``pydantic.TypeAdapter``), and the tests validate real payloads against those schemas.
The ``Field`` descriptions are the document's. ``PAYLOADS`` names each type by the
``message`` of its topics in ``bridge.topics.TOPICS``; plain-text payloads (``online``,
``active``, ``0``/``1``, the JPEG...) have no type here: the generator describes them.

Clients must ignore fields they do not know: payloads may grow. An empty retained payload
clears a retained topic; it is not one of these.

These are plain dicts at run time: nothing is validated when a payload is built. pydantic
reads the types on Python 3.11 only from ``typing_extensions.TypedDict``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from bridge.config import NVR_ID_PATTERN
from bridge.limits import INT32_MAX

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"

NvrId = Annotated[
    str,
    Field(
        pattern=f"^{NVR_ID_PATTERN.pattern}$",
        description="The NVR's id, as in the topic (BRIDGE_NVR_ID).",
    ),
]
Timestamp = Annotated[
    str,
    Field(
        pattern=TIMESTAMP_PATTERN,
        description="The bridge's time when it received the item or read the answer: UTC "
        "ISO 8601 with milliseconds and Z.",
        examples=["2024-05-01T12:00:00.000Z"],
    ),
]
ChannelNumber = Annotated[
    int, Field(ge=1, le=INT32_MAX, description="The channel number (1-based).")
]
NvrTime = Annotated[int, Field(description="When it happened on the NVR, epoch milliseconds.")]


def _from_nvr(what: str) -> Any:
    return Field(
        description=f"The {what} as the NVR sent it; the topic level is this value made a "
        "safe topic level."
    )


class EventPayload(TypedDict):
    """An event of the NVR's eventHook stream."""

    nvr: NvrId
    channel: Annotated[
        Annotated[int, Field(ge=1, le=INT32_MAX)] | None,
        Field(description="The channel (1-based); null when the NVR gave none (level 'system')."),
    ]
    type: Annotated[str, _from_nvr("event type (Motion, VideoLoss, InputAlarm...)")]
    state: Annotated[
        str,
        Field(
            description="The state as the NVR sent it, usually active, inactive or once; "
            "active and inactive also set the retained event state topic (live items only)."
        ),
    ]
    timestamp: Timestamp
    replayed: NotRequired[
        Annotated[
            Literal[True],
            Field(
                description="Present only on an item published from the NVR's history after "
                "a stream outage; it sets no retained state."
            ),
        ]
    ]
    time: NotRequired[
        Annotated[int, Field(description="With replayed: when it happened, epoch milliseconds.")]
    ]


class MetaPayload(TypedDict):
    """A metadata item of the NVR's metaHook stream."""

    nvr: NvrId
    channel: Annotated[
        Annotated[int, Field(ge=1, le=INT32_MAX)] | None,
        Field(description="The channel (1-based); null when the NVR gave none (level 'system')."),
    ]
    type: Annotated[str, _from_nvr("metadata type (LPR, manualAlarmStart...)")]
    data: Annotated[str, Field(description="The NVR's metadata string, as is.")]
    timestamp: Timestamp
    replayed: NotRequired[
        Annotated[
            Literal[True],
            Field(description="Present only on an item published from the NVR's history."),
        ]
    ]
    time: NotRequired[
        Annotated[int, Field(description="With replayed: when it happened, epoch milliseconds.")]
    ]


class ExceptionPayload(TypedDict):
    """A disk or system exception of the NVR's exceptionListen stream."""

    nvr: NvrId
    exception: Annotated[str, _from_nvr("exception name (diskFull...)")]
    target: Annotated[
        Any, Field(description="What it concerns, any JSON value as sent; null when absent.")
    ]
    time: NvrTime
    timestamp: Timestamp


class StatusPayload(TypedDict):
    """A channel's status of the cameraStatus stream: on first sight and on change only."""

    nvr: NvrId
    channel: ChannelNumber
    online: Annotated[bool, Field(description="Whether the camera is connected.")]
    recording: Annotated[bool, Field(description="Whether the channel records.")]
    event: Annotated[bool, Field(description="Whether an event is active on the channel.")]
    manual: Annotated[
        bool | None,
        Field(description="Whether manual recording is on; null when the NVR does not say."),
    ]
    timestamp: Timestamp


class MessagePayload(TypedDict):
    """A notification of the NVR's messageListen stream, its secrets masked."""

    nvr: NvrId
    message: Annotated[str, _from_nvr("message name (cameraDetail...)")]
    target: Annotated[
        Any, Field(description="What it concerns, any JSON value as sent; null when absent.")
    ]
    content: Annotated[
        Any,
        Field(
            description="The content, any JSON value, every secret masked as '***' (a "
            "cameraDetail carries the camera's credentials); null when absent."
        ),
    ]
    time: NvrTime
    timestamp: Timestamp


class InfoPayload(TypedDict):
    """The NVR's identity and cameras: after each login and when its cameras change."""

    nvr: NvrId
    system: Annotated[
        dict[str, Any] | None,
        Field(description="The getSystemInfo answer (SDK 10.17); null when not served."),
    ]
    cameras: Annotated[
        list[Any] | None,
        Field(description="The cameraList answer (SDK 2.3), secrets masked; null when not served."),
    ]
    timestamp: Timestamp


class ResponsePayload(TypedDict):
    """The outcome of a request."""

    status: Annotated[
        Literal["ok", "error"],
        Field(
            description="ok when the NVR performed the call; error for an invalid, refused, "
            "expired or retained request, a non-2xx answer, Result: Error or a timeout."
        ),
    ]
    command: Annotated[
        str, Field(description="The command as requested, also when it is no known command.")
    ]
    transaction: Annotated[
        Any, Field(description="The request's transaction, echoed as is; null when absent.")
    ]
    result: Annotated[
        Any,
        Field(description="The NVR's answer (JSON, else its text); null when no call was made."),
    ]
    error: Annotated[
        str | None,
        Field(
            description="What went wrong, a sentence (starting 'expired' or 'result too large' "
            "for those); null on success."
        ),
    ]


class BridgeInfoPayload(TypedDict):
    """The bridge's own identity: after each connect to the broker."""

    version: Annotated[str, Field(description="The bridge's version (nvr-bridge --version).")]
    nvrs: Annotated[list[NvrId], Field(description="The ids of the NVRs this process bridges.")]
    commands: Annotated[list[str], Field(description="The command names it obeys.")]
    protocol: Annotated[
        Literal["5", "3.1.1"], Field(description="The MQTT protocol of this connection.")
    ]
    shard: Annotated[
        str | None, Field(description="This replica's shard 'i/N'; null when it bridges all.")
    ]
    timestamp: Timestamp


class SnapshotTakenPayload(TypedDict):
    """A new snapshot image was published on the channel's snapshot topic (section 7.1)."""

    nvr: NvrId
    channel: ChannelNumber
    path: Annotated[str, Field(description="The snapshot's path on the NVR (getSnapshot).")]
    bytes: Annotated[int, Field(ge=0, description="The image's size in bytes.")]
    trigger: Annotated[
        str, Field(description="The event type that caused it, or 'request' (the command).")
    ]
    timestamp: Timestamp


class PinsPayload(TypedDict):
    """The NVR's own alarm input and output pins (GetGPIOInfo, section 7.2)."""

    nvr: NvrId
    inputs: Annotated[list[int], Field(description="Input pin numbers; empty when none.")]
    outputs: Annotated[list[int], Field(description="Output pin numbers; empty when none.")]
    gpio: Annotated[Any, Field(description="The whole GetGPIOInfo answer (SDK 10.19).")]
    timestamp: Timestamp


class StoragePayload(TypedDict):
    """The NVR's disks (getStorages, section 7.3): after each login and on change."""

    nvr: NvrId
    disks: Annotated[list[Any], Field(description="The getStorages list (SDK 9.4), as is.")]
    timestamp: Timestamp


class Preset(TypedDict):
    """One PTZ preset."""

    name: Annotated[str, Field(description="The preset's name (its token when it has none).")]
    preset_token: Annotated[str, Field(description="The token goto_preset takes.")]


class PresetsPayload(TypedDict):
    """A PTZ channel's presets (get_presets, section 7.5)."""

    nvr: NvrId
    channel: ChannelNumber
    presets: list[Preset]
    timestamp: Timestamp


GapPayload = TypedDict(
    "GapPayload",
    {
        "nvr": NvrId,
        "stream": Annotated[
            Literal["event", "meta"], Field(description="The stream that was down.")
        ],
        "from": Annotated[str, Field(description="The outage's start, UTC ISO 8601.")],
        "to": Annotated[str, Field(description="The outage's end, UTC ISO 8601.")],
        "replayed": Annotated[
            int, Field(ge=0, description="How many items were published from the history.")
        ],
        "complete": Annotated[
            bool, Field(description="False when the NVR's history search failed.")
        ],
        "timestamp": Timestamp,
    },
)
GapPayload.__doc__ = "An event or meta stream's outage, after its replay (section 7.7)."


class DiscoveryAvailability(TypedDict):
    """One availability topic of an entity."""

    topic: Annotated[str, Field(description="A topic saying online or offline.")]


@with_config(ConfigDict(extra="allow"))
class DiscoveryConfigPayload(TypedDict):
    """A Home Assistant MQTT discovery config, in Home Assistant's schema for its component.

    Only the keys every config has are listed; each component adds its own (state_topic,
    command_topic, payload_on...).
    """

    unique_id: Annotated[str, Field(description="The entity's unique id.")]
    device: Annotated[
        dict[str, Any],
        Field(description="The NVR as one Home Assistant device (identity from getSystemInfo)."),
    ]
    availability: Annotated[
        list[DiscoveryAvailability],
        Field(description="The bridge's state and the NVR's availability topics."),
    ]
    availability_mode: Annotated[
        Literal["all"], Field(description="Available only while every one says online.")
    ]


class DiscoveryRegistryPayload(TypedDict):
    """What the bridge published to Home Assistant for one NVR, read back at start-up."""

    topics: Annotated[
        list[str], Field(description="Every discovery config topic published, sorted.")
    ]
    triggers: Annotated[
        list[tuple[int | None, str, str]],
        Field(
            description="The device triggers learned from traffic: [channel (null for an "
            "exception), event or exception type, state ('' for an exception)]."
        ),
    ]


# Each type by the ``message`` name its topics carry in ``bridge.topics.TOPICS``.
PAYLOADS: dict[str, Any] = {
    "event": EventPayload,
    "meta": MetaPayload,
    "exception": ExceptionPayload,
    "status": StatusPayload,
    "message": MessagePayload,
    "info": InfoPayload,
    "response": ResponsePayload,
    "bridgeInfo": BridgeInfoPayload,
    "snapshotTaken": SnapshotTakenPayload,
    "pins": PinsPayload,
    "storage": StoragePayload,
    "presets": PresetsPayload,
    "gap": GapPayload,
    "discoveryConfig": DiscoveryConfigPayload,
    "discoveryRegistry": DiscoveryRegistryPayload,
}
