"""MQTT 3.1.1 and 5 packets to bytes and back: a sans-I/O codec, no sockets here.

The bridge's MQTT client (``connection.py``) and the demo's embedded broker both speak
through this module, so every packet of both protocol versions, in both directions, is
encoded and decoded in one place (MQTT 5 sections 2-3, MQTT 3.1.1 sections 2-3).

Decoding is strict and bounded: ``PacketReader`` takes bytes as they arrive and yields
whole packets; a packet that is malformed (a bad length, a string that is not valid
UTF-8 or holds U+0000, an unknown property, a reserved flag set) raises
``ProtocolError``, and one larger than the reader's limit is skipped without being
buffered, reported as ``Oversized`` (with its packet id when it is a PUBLISH, so that it
can still be acknowledged). Nothing here recurses over peer data.

Errors::

    ProtocolError          a malformed packet (``reason_code``: MQTT 5's 0x81 or 0x82)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

# Packet types (the high nibble of the first byte).
CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
PUBREC: Final = 5
PUBREL: Final = 6
PUBCOMP: Final = 7
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBSCRIBE: Final = 10
UNSUBACK: Final = 11
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14
AUTH: Final = 15

V311: Final = 4  # the protocol level byte of MQTT 3.1.1
V5: Final = 5

MAX_REMAINING_LENGTH: Final = 268_435_455
MALFORMED: Final = 0x81
PROTOCOL: Final = 0x82

# Property identifiers (MQTT 5 section 2.2.2.2): name and wire type.
_BYTE, _TWO, _FOUR, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
PROPERTIES: Final[dict[int, tuple[str, int]]] = {
    0x01: ("payload_format_indicator", _BYTE),
    0x02: ("message_expiry_interval", _FOUR),
    0x03: ("content_type", _UTF8),
    0x08: ("response_topic", _UTF8),
    0x09: ("correlation_data", _BINARY),
    0x0B: ("subscription_identifier", _VARINT),
    0x11: ("session_expiry_interval", _FOUR),
    0x12: ("assigned_client_identifier", _UTF8),
    0x13: ("server_keep_alive", _TWO),
    0x15: ("authentication_method", _UTF8),
    0x16: ("authentication_data", _BINARY),
    0x17: ("request_problem_information", _BYTE),
    0x18: ("will_delay_interval", _FOUR),
    0x19: ("request_response_information", _BYTE),
    0x1A: ("response_information", _UTF8),
    0x1C: ("server_reference", _UTF8),
    0x1F: ("reason_string", _UTF8),
    0x21: ("receive_maximum", _TWO),
    0x22: ("topic_alias_maximum", _TWO),
    0x23: ("topic_alias", _TWO),
    0x24: ("maximum_qos", _BYTE),
    0x25: ("retain_available", _BYTE),
    0x26: ("user_property", _PAIR),
    0x27: ("maximum_packet_size", _FOUR),
    0x28: ("wildcard_subscription_available", _BYTE),
    0x29: ("subscription_identifier_available", _BYTE),
    0x2A: ("shared_subscription_available", _BYTE),
}
_PROPERTY_IDS: Final = {name: (ident, kind) for ident, (name, kind) in PROPERTIES.items()}
# Properties that may appear more than once: they decode to a list.
_REPEATABLE: Final = frozenset({"user_property", "subscription_identifier"})

Properties = dict[str, Any]


class ProtocolError(ValueError):
    """A malformed or forbidden packet; ``reason_code`` is MQTT 5's DISCONNECT reason."""

    def __init__(self, reason: str, reason_code: int = MALFORMED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reason_code = reason_code


# --- packets ---------------------------------------------------------------------------


@dataclass(slots=True)
class Will:
    """The Last Will of a CONNECT: published by the broker when the client is lost."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Connect:
    """CONNECT (MQTT 5 section 3.1)."""

    client_id: str
    version: int = V5
    clean_start: bool = True
    keepalive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class ConnAck:
    """CONNACK: ``reason_code`` 0 is success (3.1.1's return codes are 0-5)."""

    session_present: bool = False
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Publish:
    """PUBLISH: ``packet_id`` is 0 at QoS 0."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Ack:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (``kind``), for one packet id."""

    kind: int
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (MQTT 5 section 3.8.3.1)."""

    topic_filter: str
    qos: int = 1
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(slots=True)
class Subscribe:
    """SUBSCRIBE."""

    packet_id: int
    subscriptions: list[Subscription]
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class SubAck:
    """SUBACK: one reason code per subscription (0-2 the granted QoS, >= 0x80 a refusal)."""

    packet_id: int
    reason_codes: list[int]
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Unsubscribe:
    """UNSUBSCRIBE."""

    packet_id: int
    topic_filters: list[str]
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class UnsubAck:
    """UNSUBACK (its reason codes exist in MQTT 5 only)."""

    packet_id: int
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class PingReq:
    """PINGREQ."""


@dataclass(slots=True)
class PingResp:
    """PINGRESP."""


@dataclass(slots=True)
class Disconnect:
    """DISCONNECT (a reason code and properties in MQTT 5 only)."""

    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Auth:
    """AUTH (MQTT 5 only)."""

    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


Packet = (
    Connect
    | ConnAck
    | Publish
    | Ack
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
    | Auth
)


@dataclass(slots=True)
class Oversized:
    """A packet larger than the reader's limit, skipped unread.

    ``packet_type``, its size, and for a PUBLISH its QoS and packet id (so that it can be
    acknowledged: a broker would otherwise send it again and again).
    """

    packet_type: int
    size: int
    qos: int = 0
    packet_id: int = 0


# --- primitives ------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """A variable byte integer (MQTT 5 section 1.5.5)."""
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_string(text: str) -> bytes:
    """A UTF-8 encoded string with its two-byte length; ValueError if it cannot be one."""
    data = text.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates
    if len(data) > 0xFFFF:
        raise ValueError(f"a string of {len(data)} bytes: MQTT allows 65,535")
    if "\x00" in text:
        raise ValueError("MQTT strings must not contain U+0000")
    return len(data).to_bytes(2, "big") + data


def encode_binary(data: bytes) -> bytes:
    """Binary data with its two-byte length."""
    if len(data) > 0xFFFF:
        raise ValueError(f"binary data of {len(data)} bytes: MQTT allows 65,535")
    return len(data).to_bytes(2, "big") + data


def encode_properties(properties: Properties) -> bytes:
    """A property block: its length, then each property (MQTT 5 section 2.2.2)."""
    if not properties:
        return b"\x00"
    body = bytearray()
    for name, value in properties.items():
        if name not in _PROPERTY_IDS:
            raise ValueError(f"unknown MQTT property {name!r}")
        ident, kind = _PROPERTY_IDS[name]
        values = value if name in _REPEATABLE and isinstance(value, list) else [value]
        for item in values:
            body += encode_varint(ident)
            body += _encode_property_value(kind, item)
    return encode_varint(len(body)) + bytes(body)


def _encode_property_value(kind: int, value: Any) -> bytes:
    if kind == _BYTE:
        return int(value).to_bytes(1, "big")
    if kind == _TWO:
        return int(value).to_bytes(2, "big")
    if kind == _FOUR:
        return int(value).to_bytes(4, "big")
    if kind == _VARINT:
        return encode_varint(int(value))
    if kind == _UTF8:
        return encode_string(value)
    if kind == _BINARY:
        return encode_binary(bytes(value))
    name, text = value
    return encode_string(name) + encode_string(text)


def _fixed_header(first_byte: int, remaining: int) -> bytes:
    if remaining > MAX_REMAINING_LENGTH:
        raise ValueError(f"a packet of {remaining} bytes: MQTT allows {MAX_REMAINING_LENGTH}")
    return bytes((first_byte,)) + encode_varint(remaining)


def _packet(first_byte: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return _fixed_header(first_byte, len(body)) + body


# --- encoding --------------------------------------------------------------------------

# A PUBLISH's fixed header and topic length in one C call: first byte, Remaining Length
# (one or two bytes), topic length.
_pack_header1 = struct.Struct(">BBH").pack
_pack_header2 = struct.Struct(">BBBH").pack
_pack_length = struct.Struct(">H").pack


def encode_publish(
    topic: bytes,
    payload: bytes,
    qos: int,
    retain: bool,
    *,
    packet_id: int,
    version: int,
    dup: bool = False,
    properties: Properties | None = None,
) -> bytes:
    """A PUBLISH packet from an already UTF-8 encoded topic (the hot path: no objects).

    ValueError for a topic or packet too large for MQTT.
    """
    size = len(topic)
    if size > 0xFFFF:
        raise ValueError(f"a topic of {size} bytes: MQTT allows 65,535")
    if b"\x00" in topic:
        raise ValueError("MQTT topics must not contain U+0000")
    props = b""
    if version == V5:
        props = encode_properties(properties) if properties else b"\x00"
    remaining = 2 + size + len(payload) + (2 if qos else 0) + len(props)
    first = 0x30 | qos << 1 | (1 if retain else 0) | (0x08 if dup else 0)
    if remaining < 0x4000:  # the usual sizes: a one- or two-byte Remaining Length
        if remaining < 0x80:
            fixed = _pack_header1(first, remaining, size)
        else:
            fixed = _pack_header2(first, remaining & 0x7F | 0x80, remaining >> 7, size)
    else:
        fixed = _fixed_header(first, remaining) + _pack_length(size)
    if qos:
        return b"".join((fixed, topic, _pack_length(packet_id), props, payload))
    return b"".join((fixed, topic, props, payload))


def encode(packet: Packet, version: int) -> bytes:
    """The wire bytes of any packet in protocol ``version`` (``V311`` or ``V5``)."""
    encoder = _ENCODERS.get(type(packet))
    if encoder is None:
        raise TypeError(f"not an MQTT packet: {packet!r}")
    data: bytes = encoder(packet, version == V5)
    return data


def _encode_publish_packet(packet: Publish, v5: bool) -> bytes:
    return encode_publish(
        packet.topic.encode("utf-8"),
        packet.payload,
        packet.qos,
        packet.retain,
        packet_id=packet.packet_id,
        version=V5 if v5 else V311,
        dup=packet.dup,
        properties=packet.properties,
    )


def _encode_ack(packet: Ack, v5: bool) -> bytes:
    flags = 0x02 if packet.kind == PUBREL else 0
    tail = b""
    if v5 and (packet.reason_code or packet.properties):
        tail = bytes((packet.reason_code,))
        if packet.properties:
            tail += encode_properties(packet.properties)
    return _packet(packet.kind << 4 | flags, packet.packet_id.to_bytes(2, "big"), tail)


def _encode_connack(packet: ConnAck, v5: bool) -> bytes:
    parts = [bytes((1 if packet.session_present else 0, packet.reason_code))]
    if v5:
        parts.append(encode_properties(packet.properties))
    return _packet(CONNACK << 4, *parts)


def _encode_suback(packet: SubAck, v5: bool) -> bytes:
    props = encode_properties(packet.properties) if v5 else b""
    codes = bytes(packet.reason_codes)
    return _packet(SUBACK << 4, packet.packet_id.to_bytes(2, "big"), props, codes)


def _encode_unsubscribe(packet: Unsubscribe, v5: bool) -> bytes:
    props = encode_properties(packet.properties) if v5 else b""
    filters = b"".join(encode_string(f) for f in packet.topic_filters)
    return _packet(UNSUBSCRIBE << 4 | 0x02, packet.packet_id.to_bytes(2, "big"), props, filters)


def _encode_unsuback(packet: UnsubAck, v5: bool) -> bytes:
    if not v5:
        return _packet(UNSUBACK << 4, packet.packet_id.to_bytes(2, "big"))
    props = encode_properties(packet.properties)
    codes = bytes(packet.reason_codes)
    return _packet(UNSUBACK << 4, packet.packet_id.to_bytes(2, "big"), props, codes)


def _encode_disconnect(packet: Disconnect, v5: bool) -> bytes:
    if not v5 or (packet.reason_code == 0 and not packet.properties):
        return b"\xe0\x00"
    return _packet(
        DISCONNECT << 4, bytes((packet.reason_code,)), encode_properties(packet.properties)
    )


def _encode_auth(packet: Auth, v5: bool) -> bytes:
    return _packet(AUTH << 4, bytes((packet.reason_code,)), encode_properties(packet.properties))


def _encode_connect(packet: Connect, _v5: bool) -> bytes:
    v5 = packet.version == V5
    flags = 0x02 if packet.clean_start else 0
    will = packet.will
    if will is not None:
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
    if packet.username is not None:
        flags |= 0x80
    if packet.password is not None:
        flags |= 0x40
    parts = [
        encode_string("MQTT"),
        bytes((packet.version, flags)),
        packet.keepalive.to_bytes(2, "big"),
    ]
    if v5:
        parts.append(encode_properties(packet.properties))
    parts.append(encode_string(packet.client_id))
    if will is not None:
        if v5:
            parts.append(encode_properties(will.properties))
        parts += [encode_string(will.topic), encode_binary(will.payload)]
    if packet.username is not None:
        parts.append(encode_string(packet.username))
    if packet.password is not None:
        parts.append(encode_binary(packet.password))
    return _packet(CONNECT << 4, *parts)


def _encode_subscribe(packet: Subscribe, v5: bool) -> bytes:
    parts = [packet.packet_id.to_bytes(2, "big")]
    if v5:
        parts.append(encode_properties(packet.properties))
    for sub in packet.subscriptions:
        options = sub.qos
        if v5:
            options |= (
                (0x04 if sub.no_local else 0)
                | (0x08 if sub.retain_as_published else 0)
                | sub.retain_handling << 4
            )
        parts += [encode_string(sub.topic_filter), bytes((options,))]
    return _packet(SUBSCRIBE << 4 | 0x02, *parts)


_ENCODERS: dict[type, Any] = {
    Publish: _encode_publish_packet,
    Ack: _encode_ack,
    Connect: _encode_connect,
    ConnAck: _encode_connack,
    Subscribe: _encode_subscribe,
    SubAck: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    UnsubAck: _encode_unsuback,
    PingReq: lambda _packet, _v5: b"\xc0\x00",
    PingResp: lambda _packet, _v5: b"\xd0\x00",
    Disconnect: _encode_disconnect,
    Auth: _encode_auth,
}


# --- decoding --------------------------------------------------------------------------


class _Cursor:
    """Reads the fields of one packet's body; every overrun is a ProtocolError."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes | memoryview, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    @property
    def left(self) -> int:
        return self.end - self.pos

    def take(self, size: int) -> bytes:
        if size > self.left:
            raise ProtocolError("the packet is shorter than its fields")
        chunk = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return chunk

    def byte(self) -> int:
        if self.left < 1:
            raise ProtocolError("the packet is shorter than its fields")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def two(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def four(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def varint(self) -> int:
        value = 0
        for shift in (0, 7, 14, 21):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise ProtocolError("a variable byte integer longer than four bytes")

    def string(self) -> str:
        raw = self.take(self.two())
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("a string that is not valid UTF-8") from None
        if "\x00" in text:
            raise ProtocolError("a string holding U+0000")
        return text

    def binary(self) -> bytes:
        return self.take(self.two())

    def properties(self) -> Properties:
        size = self.varint()
        if size > self.left:
            raise ProtocolError("a property block longer than the packet")
        end = self.pos + size
        out: Properties = {}
        while self.pos < end:
            ident = self.varint()
            spec = PROPERTIES.get(ident)
            if spec is None:
                raise ProtocolError(f"unknown property 0x{ident:02x}")
            name, kind = spec
            value = self._property_value(kind)
            if name in _REPEATABLE:
                out.setdefault(name, []).append(value)
            elif name in out:
                raise ProtocolError(f"property {name} given twice", PROTOCOL)
            else:
                out[name] = value
        if self.pos != end:
            raise ProtocolError("a property overruns its block")
        return out

    def _property_value(self, kind: int) -> Any:
        if kind == _BYTE:
            return self.byte()
        if kind == _TWO:
            return self.two()
        if kind == _FOUR:
            return self.four()
        if kind == _VARINT:
            return self.varint()
        if kind == _UTF8:
            return self.string()
        if kind == _BINARY:
            return self.binary()
        return (self.string(), self.string())


def decode(first_byte: int, body: bytes | memoryview, version: int) -> Packet:
    """One packet from its first byte and its body (the bytes after the length)."""
    kind, flags = first_byte >> 4, first_byte & 0x0F
    v5 = version == V5
    cursor = _Cursor(body)
    if kind == PUBLISH:
        return _decode_publish(flags, cursor, v5)
    expected = 0x02 if kind in (PUBREL, SUBSCRIBE, UNSUBSCRIBE) else 0
    if flags != expected:
        raise ProtocolError(f"reserved flags 0x{flags:x} set on packet type {kind}")
    packet = _decode_other(kind, cursor, v5)
    if cursor.left:
        raise ProtocolError(f"{cursor.left} bytes after the end of packet type {kind}")
    return packet


def _decode_publish(flags: int, cursor: _Cursor, v5: bool) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("a PUBLISH with QoS 3")
    topic = cursor.string()
    packet_id = cursor.two() if qos else 0
    if qos and not packet_id:
        raise ProtocolError("a QoS 1/2 PUBLISH without a packet id", PROTOCOL)
    properties = cursor.properties() if v5 else {}
    payload = cursor.take(cursor.left)
    retain, dup = bool(flags & 0x01), bool(flags & 0x08)
    return Publish(topic, payload, qos, retain, dup, packet_id, properties)


def _decode_other(kind: int, cursor: _Cursor, v5: bool) -> Packet:
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise ProtocolError(f"packet type {kind} is reserved")
    packet: Packet = decoder(kind, cursor, v5)
    return packet


def _decode_ack(kind: int, cursor: _Cursor, v5: bool) -> Ack:
    packet_id = cursor.two()
    reason = cursor.byte() if v5 and cursor.left else 0
    properties = cursor.properties() if v5 and cursor.left else {}
    return Ack(kind, packet_id, reason, properties)


def _decode_connack(_kind: int, cursor: _Cursor, v5: bool) -> ConnAck:
    session = cursor.byte()
    if session & 0xFE:
        raise ProtocolError("reserved CONNACK flags set")
    reason = cursor.byte()
    # A 3.1.1 broker answers an MQTT 5 CONNECT in 3.1.1 (no properties, return code 1).
    properties = cursor.properties() if v5 and cursor.left else {}
    return ConnAck(bool(session), reason, properties)


def _decode_suback(_kind: int, cursor: _Cursor, v5: bool) -> SubAck:
    packet_id = cursor.two()
    properties = cursor.properties() if v5 else {}
    return SubAck(packet_id, list(cursor.take(cursor.left)), properties)


def _decode_unsuback(_kind: int, cursor: _Cursor, v5: bool) -> UnsubAck:
    packet_id = cursor.two()
    if not v5:
        return UnsubAck(packet_id)
    properties = cursor.properties()
    return UnsubAck(packet_id, list(cursor.take(cursor.left)), properties)


def _decode_disconnect(_kind: int, cursor: _Cursor, v5: bool) -> Disconnect:
    reason = cursor.byte() if v5 and cursor.left else 0
    return Disconnect(reason, cursor.properties() if v5 and cursor.left else {})


def _decode_auth(_kind: int, cursor: _Cursor, v5: bool) -> Auth:
    if not v5:
        raise ProtocolError("AUTH is an MQTT 5 packet", PROTOCOL)
    reason = cursor.byte() if cursor.left else 0
    return Auth(reason, cursor.properties() if cursor.left else {})


def _decode_unsubscribe(_kind: int, cursor: _Cursor, v5: bool) -> Unsubscribe:
    packet_id = cursor.two()
    properties = cursor.properties() if v5 else {}
    filters = []
    while cursor.left:
        filters.append(cursor.string())
    if not filters:
        raise ProtocolError("an UNSUBSCRIBE without topic filters", PROTOCOL)
    return Unsubscribe(packet_id, filters, properties)


def _decode_subscribe(_kind: int, cursor: _Cursor, v5: bool) -> Subscribe:
    packet_id = cursor.two()
    properties = cursor.properties() if v5 else {}
    subscriptions = []
    while cursor.left:
        topic_filter = cursor.string()
        options = cursor.byte()
        if options & (0xC0 if v5 else 0xFC) or options & 0x03 == 3 or (options >> 4) & 3 == 3:
            raise ProtocolError("reserved subscription options set")
        subscriptions.append(
            Subscription(
                topic_filter,
                options & 0x03,
                bool(options & 0x04),
                bool(options & 0x08),
                (options >> 4) & 0x03,
            )
        )
    if not subscriptions:
        raise ProtocolError("a SUBSCRIBE without topic filters", PROTOCOL)
    return Subscribe(packet_id, subscriptions, properties)


def decode_connect(_kind: int, cursor: _Cursor, _v5: bool) -> Connect:
    """A CONNECT body (its version is in the packet itself)."""
    if cursor.string() not in ("MQTT", "MQIsdp"):
        raise ProtocolError("not an MQTT CONNECT", PROTOCOL)
    version = cursor.byte()
    if version not in (V311, V5):
        raise ProtocolError(f"protocol level {version} is not 3.1.1 or 5", 0x84)
    flags = cursor.byte()
    if flags & 0x01:
        raise ProtocolError("the reserved CONNECT flag is set")
    keepalive = cursor.two()
    properties = cursor.properties() if version == V5 else {}
    client_id = cursor.string()
    will = None
    if flags & 0x04:
        will_properties = cursor.properties() if version == V5 else {}
        will_qos = (flags >> 3) & 0x03
        if will_qos == 3:
            raise ProtocolError("a Will with QoS 3")
        will = Will(cursor.string(), cursor.binary(), will_qos, bool(flags & 0x20), will_properties)
    elif flags & 0x38:
        raise ProtocolError("Will flags without a Will")
    username = cursor.string() if flags & 0x80 else None
    password = cursor.binary() if flags & 0x40 else None
    return Connect(
        client_id, version, bool(flags & 0x02), keepalive, username, password, will, properties
    )


_DECODERS: dict[int, Any] = {
    PUBACK: _decode_ack,
    PUBREC: _decode_ack,
    PUBREL: _decode_ack,
    PUBCOMP: _decode_ack,
    CONNACK: _decode_connack,
    SUBACK: _decode_suback,
    UNSUBACK: _decode_unsuback,
    PINGREQ: lambda _kind, _cursor, _v5: PingReq(),
    PINGRESP: lambda _kind, _cursor, _v5: PingResp(),
    DISCONNECT: _decode_disconnect,
    AUTH: _decode_auth,
    SUBSCRIBE: _decode_subscribe,
    UNSUBSCRIBE: _decode_unsubscribe,
    CONNECT: decode_connect,
}


# --- the incremental reader ------------------------------------------------------------


class PacketReader:
    """Turns a byte stream into packets, bounded by ``max_packet`` bytes per packet.

    ``feed`` the bytes as they arrive, then iterate ``packets()``. A packet whose
    announced size exceeds ``max_packet`` is skipped as its bytes arrive (never buffered
    whole) and yields one ``Oversized``.
    """

    __slots__ = ("_buffer", "_skip", "_skip_head", "_skipping", "max_packet", "version")

    def __init__(self, version: int = V5, max_packet: int = MAX_REMAINING_LENGTH) -> None:
        self.version = version
        self.max_packet = max_packet
        self._buffer = bytearray()
        self._skip = 0  # bytes of an oversized packet still to discard
        self._skipping: Oversized | None = None
        self._skip_head = bytearray()

    def feed(self, data: bytes) -> None:
        """Take bytes read from the socket."""
        self._buffer += data

    def packets(self) -> Iterator[Packet | Oversized]:
        """The whole packets the bytes fed so far hold; keeps what is incomplete."""
        buffer = self._buffer
        pos = 0
        try:
            while True:
                if self._skip:
                    dropped = min(self._skip, len(buffer) - pos)
                    self._learn_skipped(buffer[pos : pos + dropped])
                    pos += dropped
                    self._skip -= dropped
                    if self._skip:
                        return
                    skipped, self._skipping = self._skipping, None
                    if skipped is not None:
                        yield skipped
                header = _read_header(buffer, pos)
                if header is None:
                    return
                first, remaining, start = header
                if remaining + start - pos > self.max_packet:
                    size = remaining + start - pos
                    pos = start
                    self._skip = remaining
                    self._skipping = Oversized(first >> 4, size)
                    self._skip_head = bytearray()
                    if first >> 4 == PUBLISH:
                        self._skipping.qos = (first >> 1) & 0x03
                    continue
                end = start + remaining
                if len(buffer) < end:
                    return
                pos = end
                if first == 0x40:
                    ack = self._plain_puback(buffer, start, remaining)
                    if ack is not None:
                        yield ack
                        continue
                yield decode(first, bytes(buffer[start:end]), self.version)
        finally:
            del buffer[:pos]

    def _plain_puback(self, buffer: bytearray, start: int, remaining: int) -> Ack | None:
        """A PUBACK, the packet the bridge reads most, without the general decoder.

        Two bytes (a packet id), or with MQTT 5 three (and a reason code 0x00 or 0x10, "no
        subscriber matched", common for event topics). None: take the checked path.
        """
        if remaining == 2:
            packet_id = buffer[start] << 8 | buffer[start + 1]
            return Ack(PUBACK, packet_id) if packet_id else None
        if remaining == 3 and self.version == V5 and buffer[start + 2] in (0x00, 0x10):
            packet_id = buffer[start] << 8 | buffer[start + 1]
            return Ack(PUBACK, packet_id, buffer[start + 2]) if packet_id else None
        return None

    def _learn_skipped(self, chunk: bytes | bytearray) -> None:
        """Find the packet id of a skipped QoS 1/2 PUBLISH in its first bytes."""
        skipped = self._skipping
        if skipped is None or skipped.packet_type != PUBLISH or not skipped.qos:
            return
        if skipped.packet_id:
            return
        head = self._skip_head
        head += chunk[: 65_541 - len(head)]
        if len(head) >= 2:
            topic_length = int.from_bytes(head[:2], "big")
            if len(head) >= topic_length + 4:
                skipped.packet_id = int.from_bytes(head[2 + topic_length : 4 + topic_length], "big")
                head.clear()


def _read_header(buffer: bytearray, pos: int) -> tuple[int, int, int] | None:
    """(first byte, remaining length, offset of the body), or None while incomplete."""
    if len(buffer) - pos < 2:
        return None
    remaining = 0
    for index in range(1, 5):
        if pos + index >= len(buffer):
            return None
        byte = buffer[pos + index]
        remaining |= (byte & 0x7F) << (7 * (index - 1))
        if not byte & 0x80:
            return buffer[pos], remaining, pos + index + 1
    raise ProtocolError("a remaining length longer than four bytes")


def packet_size(topic: bytes, payload: bytes, qos: int, version: int) -> int:
    """The wire size of a PUBLISH without properties (to check a limit before encoding)."""
    remaining = 2 + len(topic) + len(payload) + (2 if qos else 0) + (1 if version == V5 else 0)
    return 1 + len(encode_varint(min(remaining, MAX_REMAINING_LENGTH))) + remaining
