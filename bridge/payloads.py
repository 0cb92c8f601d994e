"""Pydantic models of every JSON payload the bridge publishes (CONTRACT.md sections 4, 5).

These models describe what the bridge emits; they are not used to build payloads
(``normalize.Normalizer``, ``command_runner`` and ``supervisor`` do that with plain dicts).
``bridge.asyncapi`` turns them into the published AsyncAPI document and the tests check
the real payloads against both, so a payload change that is not reflected here fails.

They forbid unknown fields so that drift is caught; clients, on the contrary, must ignore
fields they do not know (the contract lets payloads grow). Plain-text payloads
(``online``/``offline``, ``active``/``inactive``) have no model: the AsyncAPI document
describes them as string enums.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from bridge.config import NVR_ID_PATTERN

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"

NvrId = Annotated[
    StrictStr,
    Field(
        pattern=f"^{NVR_ID_PATTERN.pattern}$",
        description="The NVR's id, as in the topic (BRIDGE_NVR_ID).",
    ),
]
Timestamp = Annotated[
    StrictStr,
    Field(
        pattern=TIMESTAMP_PATTERN,
        description="The bridge's receive time: UTC ISO 8601 with milliseconds and Z "
        "(YYYY-MM-DDTHH:MM:SS.mmmZ).",
        examples=["2024-05-01T12:00:00.000Z"],
    ),
]
ChannelOrSystem = Annotated[
    StrictInt | None,
    Field(
        description="The channel number the NVR gave (1-based); null when it gave none "
        "(the topic level is then 'system').",
    ),
]


def _absent_when_unset(schema: dict[str, Any]) -> None:
    """Drop the ``default: null`` of a field that is left out rather than sent as null."""
    schema.pop("default", None)


class _Payload(BaseModel):
    """Base of the outgoing payloads: strict JSON types, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="after")
    def _left_out_not_null(self) -> Self:
        # The schema of an optional field has no null: the bridge leaves it out instead.
        for name in self.model_fields_set:
            field = type(self).model_fields[name]
            if field.json_schema_extra is _absent_when_unset and getattr(self, name) is None:
                raise ValueError(f"{name!r} is left out when it has no value, never null")
        return self


class _Replayable(_Payload):
    """A payload that may come from the NVR's history: ``replayed`` and ``time`` go together."""

    # JSON Schema draft 7 (the dialect of AsyncAPI's schemas) says it with "dependencies".
    model_config = ConfigDict(
        json_schema_extra={"dependencies": {"replayed": ["time"], "time": ["replayed"]}}
    )

    @model_validator(mode="after")
    def _replayed_with_time(self) -> Self:
        if ("replayed" in self.model_fields_set) != ("time" in self.model_fields_set):
            raise ValueError("'replayed' and 'time' are both present or both absent")
        return self


def _replayed() -> Any:
    return Field(
        default=None,
        description="Present and true only when the item was published from the NVR's "
        "history after a stream outage; such items set no retained state.",
        json_schema_extra=_absent_when_unset,
    )


def _history_time() -> Any:
    return Field(
        default=None,
        description="Present with 'replayed': when the item happened on the NVR, epoch "
        "milliseconds.",
        json_schema_extra=_absent_when_unset,
    )


class EventPayload(_Replayable):
    """An event from the NVR's eventHook stream (CONTRACT.md section 4)."""

    nvr: NvrId
    channel: ChannelOrSystem
    type: StrictStr = Field(
        description="The event type as the NVR sent it (Motion, VideoLoss, InputAlarm...); "
        "the topic level is this value with unsafe characters replaced by '_'.",
    )
    state: StrictStr = Field(
        description="The event state as the NVR sent it: usually 'active', 'inactive' or "
        "'once'. Only 'active' and 'inactive' also set the retained '.../state' topic.",
    )
    timestamp: Timestamp
    replayed: Literal[True] | SkipJsonSchema[None] = _replayed()
    time: StrictInt | SkipJsonSchema[None] = _history_time()


class MetaPayload(_Replayable):
    """A metadata item from the NVR's metaHook stream (CONTRACT.md section 4)."""

    nvr: NvrId
    channel: ChannelOrSystem
    type: StrictStr = Field(
        description="The metadata type as the NVR sent it (e.g. LPR); the topic level is "
        "this value with unsafe characters replaced by '_'.",
    )
    data: StrictStr = Field(description="The NVR's metadata string, as is.")
    timestamp: Timestamp
    replayed: Literal[True] | SkipJsonSchema[None] = _replayed()
    time: StrictInt | SkipJsonSchema[None] = _history_time()


class ExceptionPayload(_Payload):
    """A disk or system exception from the NVR's exceptionListen stream."""

    nvr: NvrId
    exception: StrictStr = Field(
        description="The exception name as the NVR sent it (e.g. diskFull); the topic level "
        "is this value with unsafe characters replaced by '_'.",
    )
    target: Any = Field(
        description="What the exception concerns (a disk, a channel...), any JSON value as "
        "the NVR sent it; null when absent.",
    )
    time: StrictInt = Field(description="When it happened on the NVR, epoch milliseconds.")
    timestamp: Timestamp


class StatusPayload(_Payload):
    """A channel's status from cameraStatus, published on first sight and on change only."""

    nvr: NvrId
    channel: StrictInt = Field(description="The channel number (1-based).")
    online: StrictBool = Field(description="Whether the camera is connected.")
    recording: StrictBool = Field(description="Whether the channel is recording.")
    event: StrictBool = Field(description="Whether an event is active on the channel.")
    manual: StrictBool | None = Field(
        description="Whether manual recording is on; null when the NVR does not report it.",
    )
    timestamp: Timestamp


class MessagePayload(_Payload):
    """A system notification from the NVR's messageListen stream."""

    nvr: NvrId
    message: StrictStr = Field(
        description="The message name as the NVR sent it (e.g. cameraDetail); the topic "
        "level is this value with unsafe characters replaced by '_'.",
    )
    target: Any = Field(
        description="What the message concerns, any JSON value as the NVR sent it; null "
        "when absent.",
    )
    content: Any = Field(
        description="The message's content, any JSON value, with every value whose key "
        "names a password (password, passwd, pwd; any case, any depth) replaced by '***'; "
        "null when absent.",
    )
    time: StrictInt = Field(description="When it happened on the NVR, epoch milliseconds.")
    timestamp: Timestamp


class InfoPayload(_Payload):
    """The NVR's identity and cameras, published (retained) after each login."""

    nvr: NvrId
    system: dict[str, Any] | None = Field(
        description="The NVR's getSystemInfo answer (SDK guide 10.17), passwords masked; "
        "null when the NVR does not serve it.",
    )
    cameras: list[Any] | None = Field(
        description="The NVR's cameraList answer (SDK guide 2.3), passwords masked; null "
        "when the NVR does not serve it.",
    )
    timestamp: Timestamp


class ResponsePayload(_Payload):
    """The outcome of a command request (CONTRACT.md section 5)."""

    status: Literal["ok", "error"] = Field(
        description="'ok' when the NVR performed the call; 'error' for an invalid, refused, "
        "expired or retained request, a non-2xx answer, an NVR 'Result: Error' or a timeout.",
    )
    command: StrictStr = Field(
        description="The command as requested (the topic level after 'request/'), also "
        "when it is not a known command.",
    )
    transaction: Any = Field(
        description="The request's 'transaction', echoed as is (any JSON value); null "
        "when absent or when the request was not a JSON object.",
    )
    result: Any = Field(
        description="The NVR's answer (JSON, or text when it was not JSON); null when no "
        "REST call was made.",
    )
    error: StrictStr | None = Field(
        description="A sentence saying what went wrong (an expired request's starts with "
        "'expired'); null on success.",
    )


class DiscoveryAvailability(_Payload):
    """One availability topic of a Home Assistant entity."""

    topic: StrictStr = Field(description="A topic publishing 'online' / 'offline'.")


class DiscoveryDevice(_Payload):
    """The Home Assistant device an NVR's entities belong to."""

    identifiers: list[StrictStr] = Field(description="The device's stable identifiers.")
    manufacturer: StrictStr = Field(description="Always EverFocus.")
    name: StrictStr = Field(description="The NVR's device name, or 'NVR {nvr}'.")
    model: StrictStr | SkipJsonSchema[None] = Field(
        default=None,
        description="The NVR's model, when getSystemInfo gives it.",
        json_schema_extra=_absent_when_unset,
    )
    sw_version: StrictStr | SkipJsonSchema[None] = Field(
        default=None,
        description="The NVR's software version, when getSystemInfo gives it.",
        json_schema_extra=_absent_when_unset,
    )
    serial_number: StrictStr | SkipJsonSchema[None] = Field(
        default=None,
        description="The NVR's serial number, when getSystemInfo gives it.",
        json_schema_extra=_absent_when_unset,
    )


def _optional(description: str) -> Any:
    return Field(default=None, description=description, json_schema_extra=_absent_when_unset)


class DiscoveryConfigPayload(_Payload):
    """A Home Assistant MQTT discovery config (published when BRIDGE_HA_DISCOVERY is on).

    The keys are Home Assistant's; only those the bridge sets are listed.
    """

    name: StrictStr = Field(description="The entity's name.")
    unique_id: StrictStr = Field(description="The entity's unique id.")
    object_id: StrictStr = Field(description="The entity's object id ({nvr}_...).")
    device: DiscoveryDevice = Field(description="The NVR as a Home Assistant device.")
    availability: list[DiscoveryAvailability] = Field(
        description="The bridge's state and the NVR's availability topics.",
    )
    availability_mode: Literal["all"] = Field(
        description="Available only while every availability topic says 'online'.",
    )
    state_topic: StrictStr | SkipJsonSchema[None] = _optional(
        "Sensors: the topic the state is read from."
    )
    command_topic: StrictStr | SkipJsonSchema[None] = _optional(
        "Switches and buttons: the topic commands are sent to."
    )
    value_template: StrictStr | SkipJsonSchema[None] = _optional(
        "Sensors on a JSON topic: the template extracting the state."
    )
    payload_on: StrictStr | SkipJsonSchema[None] = _optional("The 'on' value.")
    payload_off: StrictStr | SkipJsonSchema[None] = _optional("The 'off' value.")
    payload_press: StrictStr | SkipJsonSchema[None] = _optional(
        "Buttons: the payload sent on a press."
    )
    optimistic: StrictBool | SkipJsonSchema[None] = _optional(
        "Switches: assume the command took effect."
    )
    device_class: StrictStr | SkipJsonSchema[None] = _optional("Home Assistant's class.")
    entity_category: StrictStr | SkipJsonSchema[None] = _optional(
        "Home Assistant's entity category."
    )
    icon: StrictStr | SkipJsonSchema[None] = _optional("A Material Design icon.")


class DiscoveryRegistryPayload(RootModel[list[StrictStr]]):
    """Every discovery config topic the bridge published for one NVR, sorted.

    The bridge reads it back at start-up and clears the topics that no longer belong.
    """

    model_config = ConfigDict(strict=True, frozen=True)

    root: list[StrictStr]


OUTGOING_MODELS: tuple[type[BaseModel], ...] = (
    EventPayload,
    MetaPayload,
    ExceptionPayload,
    StatusPayload,
    MessagePayload,
    InfoPayload,
    ResponsePayload,
    DiscoveryConfigPayload,
    DiscoveryRegistryPayload,
)
