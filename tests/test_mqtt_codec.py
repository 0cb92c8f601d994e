"""The MQTT codec (``bridge.mqtt.codec``): round trips, an independent oracle, hostile bytes.

Pure and fast. Every packet type of both protocol versions survives encode -> read; for
MQTT 5 an independent codec (``mqtt5``, written in Rust) reads what ours writes and
writes what ours reads, field by field; any chunking of a stream reads the same; any
bytes at all raise only ``ProtocolError``; an oversized PUBLISH is skipped as it
arrives, its packet id found wherever the chunks split it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import mqtt5
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.mqtt import codec
from bridge.mqtt.codec import (
    AUTH,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    V5,
    V311,
    Ack,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Oversized,
    Packet,
    PacketReader,
    PingReq,
    PingResp,
    ProtocolError,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)

VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["3.1.1", "5"])
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_all(data: bytes, version: int, max_packet: int = codec.MAX_REMAINING_LENGTH) -> list[Any]:
    """Every packet in ``data``, fed at once to a fresh reader."""
    reader = PacketReader(version, max_packet)
    reader.feed(data)
    return list(reader.packets())


def read_chunked(
    chunks: list[bytes], version: int, max_packet: int = codec.MAX_REMAINING_LENGTH
) -> list[Any]:
    """Every packet in ``chunks``, fed one chunk at a time, read after each feed."""
    reader = PacketReader(version, max_packet)
    out: list[Any] = []
    for chunk in chunks:
        reader.feed(chunk)
        out.extend(reader.packets())
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, duplicates allowed)."""
    points = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- strategies: any packet our codec can carry -------------------------------------------

# MQTT strings: any Unicode but U+0000 (``codec`` leaves out lone surrogates).
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
binary = st.binary(max_size=24)
packet_ids = st.integers(1, 0xFFFF)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
varints = st.integers(0, codec.MAX_REMAINING_LENGTH)
pairs = st.tuples(text, text)

_VALUES: dict[int, st.SearchStrategy[Any]] = {
    codec._BYTE: u8,
    codec._TWO: u16,
    codec._FOUR: u32,
    codec._VARINT: varints,
    codec._UTF8: text,
    codec._BINARY: binary,
    codec._PAIR: pairs,
}


def _property_strategy(name: str, kind: int) -> st.SearchStrategy[Any]:
    value = _VALUES[kind]
    if name in ("user_property", "subscription_identifier"):
        return st.lists(value, min_size=1, max_size=3)  # repeatable: decoded as a list
    return value


# Every property of MQTT 5 section 2.2.2.2 (the codec does not tie them to packet types).
any_properties = st.fixed_dictionaries(
    {},
    optional={name: _property_strategy(name, kind) for name, kind in codec.PROPERTIES.values()},
)


def properties_for(version: int) -> st.SearchStrategy[dict[str, Any]]:
    return any_properties if version == V5 else st.just({})


def reasons_for(version: int) -> st.SearchStrategy[int]:
    return u8 if version == V5 else st.just(0)


def publishes(version: int) -> st.SearchStrategy[Publish]:
    def build(qos: int, packet_id: int, dup: bool, **fields: Any) -> Publish:
        return Publish(qos=qos, packet_id=packet_id if qos else 0, dup=dup and qos > 0, **fields)

    return st.builds(
        build,
        topic=text,
        payload=st.binary(max_size=64),
        qos=st.integers(0, 2),
        retain=st.booleans(),
        dup=st.booleans(),
        packet_id=packet_ids,
        properties=properties_for(version),
    )


def wills(version: int) -> st.SearchStrategy[Will]:
    return st.builds(
        Will,
        topic=text,
        payload=binary,
        qos=st.integers(0, 2),
        retain=st.booleans(),
        properties=properties_for(version),
    )


def connects(version: int) -> st.SearchStrategy[Connect]:
    return st.builds(
        Connect,
        client_id=text,
        version=st.just(version),
        clean_start=st.booleans(),
        keepalive=u16,
        username=st.none() | text,
        password=st.none() | binary,
        will=st.none() | wills(version),
        properties=properties_for(version),
    )


def subscriptions(version: int) -> st.SearchStrategy[Subscription]:
    if version == V311:
        return st.builds(Subscription, topic_filter=text, qos=st.integers(0, 2))
    return st.builds(
        Subscription,
        topic_filter=text,
        qos=st.integers(0, 2),
        no_local=st.booleans(),
        retain_as_published=st.booleans(),
        retain_handling=st.integers(0, 2),
    )


def acks(version: int) -> st.SearchStrategy[Ack]:
    return st.builds(
        Ack,
        kind=st.sampled_from([PUBACK, PUBREC, PUBREL, PUBCOMP]),
        packet_id=packet_ids,
        reason_code=reasons_for(version),
        properties=properties_for(version),
    )


def unsubacks(version: int) -> st.SearchStrategy[UnsubAck]:
    codes = st.lists(u8, min_size=1, max_size=4) if version == V5 else st.just([])
    return st.builds(
        UnsubAck, packet_id=packet_ids, reason_codes=codes, properties=properties_for(version)
    )


PACKETS: dict[str, Callable[[int], st.SearchStrategy[Any]]] = {
    "CONNECT": connects,
    "CONNACK": lambda v: st.builds(
        ConnAck, session_present=st.booleans(), reason_code=u8, properties=properties_for(v)
    ),
    "PUBLISH": publishes,
    "PUBACK/PUBREC/PUBREL/PUBCOMP": acks,
    "SUBSCRIBE": lambda v: st.builds(
        Subscribe,
        packet_id=packet_ids,
        subscriptions=st.lists(subscriptions(v), min_size=1, max_size=4),
        properties=properties_for(v),
    ),
    "SUBACK": lambda v: st.builds(
        SubAck,
        packet_id=packet_ids,
        reason_codes=st.lists(u8, min_size=1, max_size=4),
        properties=properties_for(v),
    ),
    "UNSUBSCRIBE": lambda v: st.builds(
        Unsubscribe,
        packet_id=packet_ids,
        topic_filters=st.lists(text, min_size=1, max_size=4),
        properties=properties_for(v),
    ),
    "UNSUBACK": unsubacks,
    "PINGREQ": lambda _v: st.just(PingReq()),
    "PINGRESP": lambda _v: st.just(PingResp()),
    "DISCONNECT": lambda v: st.builds(
        Disconnect, reason_code=reasons_for(v), properties=properties_for(v)
    ),
    "AUTH": lambda _v: st.builds(Auth, reason_code=u8, properties=any_properties),
}
ROUND_TRIPS = [
    pytest.param(name, version, id=f"{name}-{label}")
    for name in PACKETS
    for version, label in ((V311, "3.1.1"), (V5, "5"))
    if not (name == "AUTH" and version == V311)  # AUTH exists in MQTT 5 only
]


def any_packets(version: int) -> st.SearchStrategy[Any]:
    names = [n for n in PACKETS if not (n == "AUTH" and version == V311)]
    return st.one_of([PACKETS[n](version) for n in names])


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "version"), ROUND_TRIPS)
@FAST
@given(data=st.data())
def test_every_packet_type_round_trips(name: str, version: int, data: st.DataObject) -> None:
    """encode -> PacketReader gives back an equal packet, every type, both versions."""
    packet = data.draw(PACKETS[name](version))
    encoded = codec.encode(packet, version)
    assert read_all(encoded, version) == [packet]


@VERSIONS
@FAST
@given(data=st.data())
def test_any_chunking_of_a_stream_reads_the_same_packets(version: int, data: st.DataObject) -> None:
    """A stream of packets fed in arbitrary pieces yields the same packets, in order."""
    packets = data.draw(st.lists(any_packets(version), min_size=1, max_size=6))
    stream = b"".join(codec.encode(p, version) for p in packets)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert read_chunked(split_at(stream, cuts), version) == packets


@VERSIONS
def test_a_stream_fed_one_byte_at_a_time_reads_the_same_packets(version: int) -> None:
    """The worst chunking: every byte its own feed, across headers, ids and properties."""
    props = {"user_property": [("k", "v")], "correlation_data": b"c"} if version == V5 else {}
    packets = [
        Connect("c1", version, will=Will("w", b"gone", 1, True, dict(props))),
        Publish("a/b", b"x" * 300, 1, packet_id=513, properties=dict(props)),
        Ack(PUBACK, 513),
        Subscribe(7, [Subscription("a/#", 1)]),
        PingReq(),
        Disconnect(),
    ]
    stream = b"".join(codec.encode(p, version) for p in packets)
    assert read_chunked([stream[i : i + 1] for i in range(len(stream))], version) == packets


def test_the_hot_path_publish_encoder_matches_the_packet_encoder() -> None:
    """``encode_publish`` (bytes topic, no objects) writes what ``encode(Publish)`` writes."""
    for version in (V311, V5):
        packet = Publish("t/ü", b"payload", 1, True, True, 99)
        fast = codec.encode_publish(
            b"t/\xc3\xbc", b"payload", 1, True, packet_id=99, version=version, dup=True
        )
        assert fast == codec.encode(packet, version)


# --- the MQTT 5 oracle ----------------------------------------------------------------------

# Strings the oracle takes in every field: no U+0000, and topics neither empty nor with
# wildcards (it checks those rules the codec leaves to its callers).
o_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10)
o_topic = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00+#"), min_size=1, max_size=16
)
o_level = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00+#/$"), min_size=1, max_size=6
)
o_filter = st.builds(
    lambda levels, tail: "/".join(levels) + tail,
    st.lists(o_level | st.just("+"), min_size=1, max_size=4),
    st.sampled_from(["", "/#"]),
)
o_pairs = st.lists(st.tuples(o_text, o_text), min_size=1, max_size=3)
o_u32 = st.integers(1, 0xFFFF_FFFF)


def _same(value: Any) -> Any:
    return value


def _as_bool(value: Any) -> bool:
    return bool(value)


def _as_int(value: Any) -> int:
    return int(value)


class Prop:
    """One MQTT 5 property as the oracle names it: its field, its absent value, converters."""

    def __init__(
        self,
        field: str,
        absent: Any,
        values: st.SearchStrategy[Any],
        to_oracle: Callable[[Any], Any] = _same,
        from_oracle: Callable[[Any], Any] = _same,
    ) -> None:
        self.field, self.absent, self.values = field, absent, values
        self.to_oracle, self.from_oracle = to_oracle, from_oracle


USER = Prop("user_properties", [], o_pairs, list, list)
REASON = Prop("reason_str", None, o_text)
MESSAGE_PROPS: dict[str, Prop] = {
    # The oracle takes an absent Payload Format Indicator for 0: only 1 is told apart.
    "payload_format_indicator": Prop("payload_format_indicator", 0, st.just(1)),
    "message_expiry_interval": Prop("message_expiry_interval", None, u32),
    "content_type": Prop("content_type", None, o_text),
    "response_topic": Prop("response_topic", None, o_topic),
    "correlation_data": Prop("correlation_data", None, binary),
    "user_property": USER,
}
PUBLISH_PROPS = {
    **MESSAGE_PROPS,
    "subscription_identifier": Prop(
        "subscription_ids", [], st.lists(st.integers(1, codec.MAX_REMAINING_LENGTH), min_size=1)
    ),
    "topic_alias": Prop("topic_alias", None, st.integers(1, 0xFFFF)),
}
WILL_PROPS = {**MESSAGE_PROPS, "will_delay_interval": Prop("will_delay_interval", 0, o_u32)}
CONNECT_PROPS = {
    "session_expiry_interval": Prop("session_expiry_interval", 0, o_u32),
    "authentication_method": Prop("authentication_method", None, o_text),
    "authentication_data": Prop("authentication_data", None, binary),
    "request_problem_information": Prop(
        "request_problem_info", True, st.just(0), _as_bool, _as_int
    ),
    "request_response_information": Prop(
        "request_response_info", False, st.just(1), _as_bool, _as_int
    ),
    "receive_maximum": Prop("receive_max", 65535, st.integers(1, 65534)),
    "topic_alias_maximum": Prop("topic_alias_max", 0, st.integers(1, 0xFFFF)),
    "maximum_packet_size": Prop("max_packet_size", None, o_u32),
    "user_property": USER,
}
CONNACK_PROPS = {
    "session_expiry_interval": Prop("session_expiry_interval", None, u32),
    "assigned_client_identifier": Prop("assigned_client_id", None, o_text),
    "server_keep_alive": Prop("server_keep_alive", None, u16),
    "authentication_method": Prop("authentication_method", None, o_text),
    "authentication_data": Prop("authentication_data", None, binary),
    "response_information": Prop("response_info", None, o_text),
    "server_reference": Prop("server_reference", None, o_text),
    "reason_string": REASON,
    "receive_maximum": Prop("receive_max", 65535, st.integers(1, 65534)),
    "topic_alias_maximum": Prop("topic_alias_max", 0, st.integers(1, 0xFFFF)),
    "maximum_qos": Prop("max_qos", 2, st.integers(0, 1), mqtt5.QoS, _as_int),
    "retain_available": Prop("retain_available", True, st.just(0), _as_bool, _as_int),
    "maximum_packet_size": Prop("max_packet_size", None, o_u32),
    "wildcard_subscription_available": Prop(
        "wildcard_subscription_available", True, st.just(0), _as_bool, _as_int
    ),
    "subscription_identifier_available": Prop(
        "subscription_id_available", True, st.just(0), _as_bool, _as_int
    ),
    "shared_subscription_available": Prop(
        "shared_subscription_available", True, st.just(0), _as_bool, _as_int
    ),
    "user_property": USER,
}
ACK_PROPS = {"reason_string": REASON, "user_property": USER}
SUBSCRIBE_PROPS = {
    # One Subscription Identifier per SUBSCRIBE: the codec decodes the repeatable as a list.
    "subscription_identifier": Prop(
        "subscription_id",
        None,
        st.integers(1, codec.MAX_REMAINING_LENGTH).map(lambda n: [n]),
        lambda ids: ids[0],
        lambda n: [n],
    ),
    "user_property": USER,
}
UNSUBSCRIBE_PROPS = {"user_property": USER}
DISCONNECT_PROPS = {
    "session_expiry_interval": Prop("session_expiry_interval", None, u32),
    "server_reference": Prop("server_reference", None, o_text),
    "reason_string": REASON,
    "user_property": USER,
}
AUTH_PROPS = {
    "authentication_method": Prop("authentication_method", None, o_text),
    "authentication_data": Prop("authentication_data", None, binary),
    "reason_string": REASON,
    "user_property": USER,
}


def props_of(table: dict[str, Prop]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={name: p.values for name, p in table.items()})


def to_oracle(properties: dict[str, Any], table: dict[str, Prop]) -> dict[str, Any]:
    """Our properties as the oracle's keyword arguments."""
    return {table[name].field: table[name].to_oracle(v) for name, v in properties.items()}


def from_oracle(packet: Any, table: dict[str, Prop]) -> dict[str, Any]:
    """The oracle packet's properties under our names (its absent values left out)."""
    out = {}
    for name, prop in table.items():
        value = getattr(packet, prop.field)
        if value != prop.absent:
            out[name] = prop.from_oracle(value)
    return out


def _codes(enum: Any) -> st.SearchStrategy[int]:
    """The reason codes an oracle enum knows (its members are upper-case attributes)."""
    return st.sampled_from(sorted({int(getattr(enum, n)) for n in dir(enum) if n.isupper()}))


ACK_KINDS = {
    PUBACK: (mqtt5.PubAckPacket, mqtt5.PubAckReasonCode),
    PUBREC: (mqtt5.PubRecPacket, mqtt5.PubRecReasonCode),
    PUBREL: (mqtt5.PubRelPacket, mqtt5.PubRelReasonCode),
    PUBCOMP: (mqtt5.PubCompPacket, mqtt5.PubCompReasonCode),
}


class OracleCase:
    """A packet type: ours drawn in the oracle's space, ours -> oracle, oracle -> ours."""

    def __init__(
        self,
        packets: st.SearchStrategy[Any],
        to_oracle: Callable[[Any], Any],
        from_oracle: Callable[[Any], Any],
    ) -> None:
        self.packets, self.to_oracle, self.from_oracle = packets, to_oracle, from_oracle


def _oracle_will(will: Will | None) -> mqtt5.Will | None:
    if will is None:
        return None
    return mqtt5.Will(
        will.topic,
        payload=will.payload,
        qos=mqtt5.QoS(will.qos),
        retain=will.retain,
        **to_oracle(will.properties, WILL_PROPS),
    )


def _our_will(will: mqtt5.Will | None) -> Will | None:
    if will is None:
        return None
    return Will(
        will.topic,
        will.payload or b"",
        int(will.qos),
        will.retain,
        from_oracle(will, WILL_PROPS),
    )


def _connect_case() -> OracleCase:
    def build(auth_data: bool, props: dict[str, Any], **fields: Any) -> Connect:
        if "authentication_method" not in props or not auth_data:
            props.pop("authentication_data", None)  # data without a method is refused
        return Connect(version=V5, properties=props, **fields)

    packets = st.builds(
        build,
        client_id=o_text,
        clean_start=st.booleans(),
        keepalive=u16,
        username=st.none() | o_text,
        password=st.none() | binary,
        will=st.none()
        | st.builds(
            Will,
            topic=o_topic,
            payload=binary,
            qos=st.integers(0, 2),
            retain=st.booleans(),
            properties=props_of(WILL_PROPS),
        ),
        auth_data=st.booleans(),
        props=props_of(CONNECT_PROPS),
    )

    def ours(p: mqtt5.ConnectPacket) -> Connect:
        return Connect(
            p.client_id,
            V5,
            p.clean_start,
            p.keep_alive,
            p.username,
            p.password,
            _our_will(p.will),
            from_oracle(p, CONNECT_PROPS),
        )

    def oracle(p: Connect) -> mqtt5.ConnectPacket:
        return mqtt5.ConnectPacket(
            p.client_id,
            username=p.username,
            password=p.password,
            clean_start=p.clean_start,
            will=_oracle_will(p.will),
            keep_alive=p.keepalive,
            **to_oracle(p.properties, CONNECT_PROPS),
        )

    return OracleCase(packets, oracle, ours)


def _connack_case() -> OracleCase:
    def build(session_present: bool, reason_code: int, props: dict[str, Any]) -> ConnAck:
        return ConnAck(session_present and reason_code == 0, reason_code, props)

    packets = st.builds(
        build,
        session_present=st.booleans(),
        reason_code=_codes(mqtt5.ConnAckReasonCode),
        props=props_of(CONNACK_PROPS),
    )
    return OracleCase(
        packets,
        lambda p: mqtt5.ConnAckPacket(
            session_present=p.session_present,
            reason_code=mqtt5.ConnAckReasonCode(p.reason_code),
            **to_oracle(p.properties, CONNACK_PROPS),
        ),
        lambda o: ConnAck(o.session_present, int(o.reason_code), from_oracle(o, CONNACK_PROPS)),
    )


def _publish_case() -> OracleCase:
    def build(qos: int, packet_id: int, dup: bool, **fields: Any) -> Publish:
        return Publish(qos=qos, packet_id=packet_id if qos else 0, dup=dup and qos > 0, **fields)

    packets = st.builds(
        build,
        topic=o_topic,
        payload=st.binary(max_size=64),
        qos=st.integers(0, 2),
        retain=st.booleans(),
        dup=st.booleans(),
        packet_id=packet_ids,
        properties=props_of(PUBLISH_PROPS),
    )
    return OracleCase(
        packets,
        lambda p: mqtt5.PublishPacket(
            p.topic,
            p.payload,
            qos=mqtt5.QoS(p.qos),
            retain=p.retain,
            packet_id=p.packet_id or None,
            duplicate=p.dup,
            **to_oracle(p.properties, PUBLISH_PROPS),
        ),
        lambda o: Publish(
            o.topic,
            o.payload,
            int(o.qos),
            o.retain,
            o.duplicate,
            o.packet_id or 0,
            from_oracle(o, PUBLISH_PROPS),
        ),
    )


def _ack_case(kind: int) -> OracleCase:
    oracle_type, reasons = ACK_KINDS[kind]
    packets = st.builds(
        Ack,
        kind=st.just(kind),
        packet_id=packet_ids,
        # Half of them the short form: success and no properties (2 bytes).
        reason_code=st.just(0) | _codes(reasons),
        properties=st.just({}) | props_of(ACK_PROPS),
    )
    return OracleCase(
        packets,
        lambda p: oracle_type(
            p.packet_id, reason_code=reasons(p.reason_code), **to_oracle(p.properties, ACK_PROPS)
        ),
        lambda o: Ack(kind, o.packet_id, int(o.reason_code), from_oracle(o, ACK_PROPS)),
    )


def _subscribe_case() -> OracleCase:
    subscription = st.builds(
        Subscription,
        topic_filter=o_filter,
        qos=st.integers(0, 2),
        no_local=st.booleans(),
        retain_as_published=st.booleans(),
        retain_handling=st.integers(0, 2),
    )
    packets = st.builds(
        Subscribe,
        packet_id=packet_ids,
        subscriptions=st.lists(subscription, min_size=1, max_size=4),
        properties=props_of(SUBSCRIBE_PROPS),
    )

    def oracle(p: Subscribe) -> mqtt5.SubscribePacket:
        filters = [
            mqtt5.TopicFilter(
                s.topic_filter,
                max_qos=mqtt5.QoS(s.qos),
                no_local=s.no_local,
                retain_as_published=s.retain_as_published,
                retain_handling=mqtt5.RetainHandling(s.retain_handling),
            )
            for s in p.subscriptions
        ]
        return mqtt5.SubscribePacket(
            p.packet_id, filters, **to_oracle(p.properties, SUBSCRIBE_PROPS)
        )

    def ours(o: mqtt5.SubscribePacket) -> Subscribe:
        subs = [
            Subscription(
                f.pattern,
                int(f.max_qos),
                f.no_local,
                f.retain_as_published,
                int(f.retain_handling),
            )
            for f in o.topic_filters
        ]
        return Subscribe(o.packet_id, subs, from_oracle(o, SUBSCRIBE_PROPS))

    return OracleCase(packets, oracle, ours)


def _suback_case() -> OracleCase:
    packets = st.builds(
        SubAck,
        packet_id=packet_ids,
        reason_codes=st.lists(_codes(mqtt5.SubAckReasonCode), min_size=1, max_size=5),
        properties=props_of(ACK_PROPS),
    )
    return OracleCase(
        packets,
        lambda p: mqtt5.SubAckPacket(
            p.packet_id,
            [mqtt5.SubAckReasonCode(c) for c in p.reason_codes],
            **to_oracle(p.properties, ACK_PROPS),
        ),
        lambda o: SubAck(o.packet_id, [int(c) for c in o.reason_codes], from_oracle(o, ACK_PROPS)),
    )


def _unsubscribe_case() -> OracleCase:
    packets = st.builds(
        Unsubscribe,
        packet_id=packet_ids,
        topic_filters=st.lists(o_filter, min_size=1, max_size=4),
        properties=props_of(UNSUBSCRIBE_PROPS),
    )
    return OracleCase(
        packets,
        lambda p: mqtt5.UnsubscribePacket(
            p.packet_id, list(p.topic_filters), **to_oracle(p.properties, UNSUBSCRIBE_PROPS)
        ),
        lambda o: Unsubscribe(o.packet_id, list(o.patterns), from_oracle(o, UNSUBSCRIBE_PROPS)),
    )


def _unsuback_case() -> OracleCase:
    packets = st.builds(
        UnsubAck,
        packet_id=packet_ids,
        reason_codes=st.lists(_codes(mqtt5.UnsubAckReasonCode), min_size=1, max_size=5),
        properties=props_of(ACK_PROPS),
    )
    return OracleCase(
        packets,
        lambda p: mqtt5.UnsubAckPacket(
            p.packet_id,
            [mqtt5.UnsubAckReasonCode(c) for c in p.reason_codes],
            **to_oracle(p.properties, ACK_PROPS),
        ),
        lambda o: UnsubAck(
            o.packet_id, [int(c) for c in o.reason_codes], from_oracle(o, ACK_PROPS)
        ),
    )


def _disconnect_case() -> OracleCase:
    packets = st.builds(
        Disconnect,
        reason_code=st.just(0) | _codes(mqtt5.DisconnectReasonCode),
        properties=st.just({}) | props_of(DISCONNECT_PROPS),
    )
    return OracleCase(
        packets,
        lambda p: mqtt5.DisconnectPacket(
            reason_code=mqtt5.DisconnectReasonCode(p.reason_code),
            **to_oracle(p.properties, DISCONNECT_PROPS),
        ),
        lambda o: Disconnect(int(o.reason_code), from_oracle(o, DISCONNECT_PROPS)),
    )


def _auth_case() -> OracleCase:
    def build(reason_code: int, props: dict[str, Any]) -> Auth:
        if "authentication_method" not in props:
            props.pop("authentication_data", None)
        return Auth(reason_code, props)

    packets = st.builds(build, reason_code=_codes(mqtt5.AuthReasonCode), props=props_of(AUTH_PROPS))
    return OracleCase(
        packets,
        lambda p: mqtt5.AuthPacket(
            reason_code=mqtt5.AuthReasonCode(p.reason_code), **to_oracle(p.properties, AUTH_PROPS)
        ),
        lambda o: Auth(int(o.reason_code), from_oracle(o, AUTH_PROPS)),
    )


ORACLE_CASES: dict[str, OracleCase] = {
    "CONNECT": _connect_case(),
    "CONNACK": _connack_case(),
    "PUBLISH": _publish_case(),
    "PUBACK": _ack_case(PUBACK),
    "PUBREC": _ack_case(PUBREC),
    "PUBREL": _ack_case(PUBREL),
    "PUBCOMP": _ack_case(PUBCOMP),
    "SUBSCRIBE": _subscribe_case(),
    "SUBACK": _suback_case(),
    "UNSUBSCRIBE": _unsubscribe_case(),
    "UNSUBACK": _unsuback_case(),
    "PINGREQ": OracleCase(
        st.just(PingReq()), lambda _p: mqtt5.PingReqPacket(), lambda _o: PingReq()
    ),
    "PINGRESP": OracleCase(
        st.just(PingResp()), lambda _p: mqtt5.PingRespPacket(), lambda _o: PingResp()
    ),
    "DISCONNECT": _disconnect_case(),
    "AUTH": _auth_case(),
}


@pytest.mark.parametrize("name", list(ORACLE_CASES))
@FAST
@given(data=st.data())
def test_the_oracle_reads_what_we_write(name: str, data: st.DataObject) -> None:
    """MQTT 5: our encoding, read by the independent mqtt5 codec, holds the same fields."""
    case = ORACLE_CASES[name]
    packet = data.draw(case.packets)
    encoded = codec.encode(packet, V5)
    theirs, size = mqtt5.read(memoryview(encoded))
    assert size == len(encoded)
    assert case.from_oracle(theirs) == packet


@pytest.mark.parametrize("name", list(ORACLE_CASES))
@FAST
@given(data=st.data())
def test_we_read_what_the_oracle_writes(name: str, data: st.DataObject) -> None:
    """MQTT 5: the independent mqtt5 codec's encoding, read by ours, holds the same fields."""
    case = ORACLE_CASES[name]
    packet = data.draw(case.packets)
    assert read_all(case.to_oracle(packet).write(), V5) == [packet]


def test_the_oracle_cases_cover_what_the_bridge_sends_and_receives() -> None:
    """Fixed examples of the fields named in the contract, both ways through the oracle."""
    examples: list[tuple[str, Packet]] = [
        (
            "CONNECT",
            Connect(
                "bridge-1",
                V5,
                clean_start=False,
                keepalive=30,
                username="u",
                password=b"p",
                will=Will("base/bridge/state", b"offline", 1, True, {"will_delay_interval": 5}),
                properties={"session_expiry_interval": 3600, "receive_maximum": 64},
            ),
        ),
        ("CONNACK", ConnAck(True, 0, {"receive_maximum": 5, "maximum_packet_size": 65536})),
        (
            "PUBLISH",
            Publish(
                "base/nvr1/request/buzzer",
                b'{"timeout": 1}',
                1,
                retain=True,
                dup=True,
                packet_id=42,
                properties={
                    "response_topic": "client/replies",
                    "correlation_data": b"\x00\x01",
                    "user_property": [("a", "b"), ("a", "c")],
                    "message_expiry_interval": 30,
                    "content_type": "application/json",
                    "payload_format_indicator": 1,
                },
            ),
        ),
        ("PUBLISH", Publish("q2", b"", 2, packet_id=65535)),
        ("PUBACK", Ack(PUBACK, 42, 0x10)),
        ("PUBREL", Ack(PUBREL, 1)),
        (
            "SUBSCRIBE",
            Subscribe(
                3,
                [
                    Subscription("base/nvr1/request/#", 1, retain_as_published=True),
                    Subscription("a/+", 0, no_local=True, retain_handling=2),
                ],
            ),
        ),
        ("SUBACK", SubAck(3, [1, 0x87])),
        ("DISCONNECT", Disconnect(0x8E, {"reason_string": "taken over"})),
        ("AUTH", Auth(0x18, {"authentication_method": "SCRAM", "authentication_data": b"x"})),
    ]
    for name, packet in examples:
        case = ORACLE_CASES[name]
        encoded = codec.encode(packet, V5)
        assert case.from_oracle(mqtt5.read(memoryview(encoded))[0]) == packet, name
        assert read_all(case.to_oracle(packet).write(), V5) == [packet], name


# --- hostile bytes ----------------------------------------------------------------------------


def _read_hostile(data: bytes, version: int, max_packet: int, cuts: list[int]) -> None:
    with contextlib.suppress(ProtocolError):
        read_chunked(split_at(data, cuts), version, max_packet)


@VERSIONS
@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=400),
    max_packet=st.sampled_from([codec.MAX_REMAINING_LENGTH, 64, 8]),
    cuts=st.lists(st.integers(0, 400), max_size=4),
)
def test_arbitrary_bytes_raise_only_protocol_error(
    version: int, data: bytes, max_packet: int, cuts: list[int]
) -> None:
    """Any byte string, in any chunks, under any limit: packets, or a ProtocolError."""
    _read_hostile(data, version, max_packet, cuts)


@VERSIONS
@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_corrupted_valid_packets_raise_only_protocol_error(
    version: int, data: st.DataObject
) -> None:
    """A valid packet with bytes changed, dropped or inserted: packets, or a ProtocolError."""
    packet = data.draw(any_packets(version))
    encoded = bytearray(codec.encode(packet, version))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(encoded) - 1))
        action = data.draw(st.sampled_from(["set", "drop", "insert"]))
        if action == "set":
            encoded[index] = data.draw(u8)
        elif action == "drop" and len(encoded) > 1:
            del encoded[index]
        else:
            encoded.insert(index, data.draw(u8))
    streams = [bytes(encoded)]
    # Also the changed body under a length that fits it exactly, so that it is decoded.
    start = 1
    while start < min(len(encoded), 5) and encoded[start] & 0x80:
        start += 1
    body = bytes(encoded[start + 1 :])
    streams.append(bytes(encoded[:1]) + codec.encode_varint(len(body)) + body)
    for stream in streams:
        _read_hostile(stream, version, codec.MAX_REMAINING_LENGTH, [])


# --- the remaining length ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_varint_boundaries_encode_as_the_spec_says(value: int, encoded: bytes) -> None:
    """MQTT 5 section 1.5.5's table: one to four bytes, 7 bits each, low bits first."""
    assert codec.encode_varint(value) == encoded


def test_a_varint_beyond_four_bytes_is_refused() -> None:
    """268,435,456 does not fit; a fifth length byte in a stream is a ProtocolError."""
    with pytest.raises(ValueError, match="variable byte integer"):
        codec.encode_varint(268_435_456)
    for version in (V311, V5):
        with pytest.raises(ProtocolError):
            read_all(b"\x30\xff\xff\xff\xff\x01", version)


@pytest.mark.parametrize(
    "remaining", [127, 128, 16_383, 16_384, 2_097_151, 2_097_152], ids=lambda n: f"{n:,}"
)
@VERSIONS
def test_publishes_at_the_length_boundaries_round_trip(version: int, remaining: int) -> None:
    """A PUBLISH whose remaining length sits on a varint boundary: header size and content."""
    overhead = 2 + 1 + 2 + (1 if version == V5 else 0)  # topic length, "t", packet id, props
    packet = Publish("t", b"p" * (remaining - overhead), 1, packet_id=9)
    encoded = codec.encode(packet, version)
    assert encoded[1:].startswith(codec.encode_varint(remaining))
    assert len(encoded) == 1 + len(codec.encode_varint(remaining)) + remaining
    assert codec.packet_size(b"t", packet.payload, 1, version) == len(encoded)
    # Whole, and with the length bytes split one per feed.
    assert read_all(encoded, version) == [packet]
    head = [encoded[i : i + 1] for i in range(6)]
    assert read_chunked([*head, encoded[6:]], version) == [packet]
    if version == V5:
        theirs, size = mqtt5.read(memoryview(encoded))
        assert (size, theirs.packet_id, len(theirs.payload)) == (
            len(encoded),
            9,
            len(packet.payload),
        )


def test_a_packet_of_exactly_the_limit_is_read_one_more_is_skipped() -> None:
    """``max_packet`` counts the whole packet: equal is read, one byte over is Oversized."""
    packet = Publish("t", b"x" * 100, 1, packet_id=5)
    encoded = codec.encode(packet, V5)
    assert read_all(encoded, V5, max_packet=len(encoded)) == [packet]
    (skipped,) = read_all(encoded, V5, max_packet=len(encoded) - 1)
    assert isinstance(skipped, Oversized)
    assert (skipped.packet_type, skipped.qos, skipped.packet_id) == (PUBLISH, 1, 5)


# --- strings ----------------------------------------------------------------------------------


def _publish_with_raw_topic(topic: bytes, version: int) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (b"\x00" if version == V5 else b"") + b"pl"
    return b"\x30" + codec.encode_varint(len(body)) + body


BAD_UTF8 = {
    "U+0000": b"a\x00b",
    "a lone continuation byte": b"a\x80b",
    "0xFF": b"\xff",
    "an overlong NUL": b"\xc0\x80",
    "an encoded surrogate": b"\xed\xa0\x80",
    "a truncated sequence": b"ab\xe2\x82",
    "beyond U+10FFFF": b"\xf4\x90\x80\x80",
}


@VERSIONS
@pytest.mark.parametrize("raw", list(BAD_UTF8.values()), ids=list(BAD_UTF8))
def test_topics_with_nul_or_invalid_utf8_are_refused(version: int, raw: bytes) -> None:
    """MQTT 5 section 1.5.4: a UTF-8 string must be well-formed and hold no U+0000."""
    with pytest.raises(ProtocolError):
        read_all(_publish_with_raw_topic(raw, version), version)


@pytest.mark.parametrize("raw", list(BAD_UTF8.values()), ids=list(BAD_UTF8))
def test_every_string_field_is_checked(raw: bytes) -> None:
    """Client id, Will topic, user name, user property, reason string, topic filter."""
    marker = "\ue000"  # replaced by the bad bytes after encoding
    placed = [
        Connect(marker, V5),
        Connect("c", V5, will=Will(marker, b"")),
        Connect("c", V311, username=marker),
        Publish("t", b"", 0, properties={"user_property": [("k", marker)]}),
        Publish("t", b"", 0, properties={"response_topic": marker}),
        Ack(PUBACK, 1, 0x80, {"reason_string": marker}),
        Subscribe(1, [Subscription(marker)]),
        Unsubscribe(1, [marker]),
    ]
    for packet in placed:
        version = packet.version if isinstance(packet, Connect) else V5
        good = codec.encode(packet, version)
        needle = len(marker.encode()).to_bytes(2, "big") + marker.encode()
        assert good.count(needle) == 1
        body = good[1 + len(codec.encode_varint(len(good) - 2)) :]
        body = body.replace(needle, len(raw).to_bytes(2, "big") + raw)
        bad = good[:1] + codec.encode_varint(len(body)) + body
        with pytest.raises(ProtocolError):
            read_all(bad, version)


@pytest.mark.parametrize(
    "packet",
    [
        Publish("a\x00b", b"", 0),
        Publish("a\ud800b", b"", 0),
        Connect("a\x00b"),
        Subscribe(1, [Subscription("a\x00b")]),
        Publish("t", b"", 0, properties={"content_type": "a\x00b"}),
    ],
    ids=[
        "publish-topic-NUL",
        "publish-topic-surrogate",
        "client-id-NUL",
        "filter-NUL",
        "property-NUL",
    ],
)
def test_the_encoder_refuses_strings_the_decoder_would_refuse(packet: Packet) -> None:
    """U+0000 or a lone surrogate anywhere, the PUBLISH topic included: ValueError.

    A PUBLISH topic with U+0000 would be written and then refused by every broker (and by
    our own decoder) as a malformed packet, ending the connection.
    """
    with pytest.raises(ValueError):  # noqa: PT011 - the codec's one error for these
        codec.encode(packet, V5)


# --- oversized packets ------------------------------------------------------------------------

LIMIT = 1024


def _oversized_stream(topic: str, qos: int, packet_id: int, version: int) -> tuple[bytes, bytes]:
    big = codec.encode(Publish(topic, b"B" * 20_000, qos, packet_id=packet_id), version)
    small = codec.encode(Publish("next", b"small", 1, packet_id=7), version)
    return big, small


@VERSIONS
@pytest.mark.parametrize("topic_length", [1, 300, 5000])
def test_an_oversized_publish_fed_byte_by_byte_is_skipped_with_its_packet_id(
    version: int, topic_length: int
) -> None:
    """Split at every byte (the packet id straddles feeds): Oversized with the id, then more."""
    big, small = _oversized_stream("t" * topic_length, 1, 0xABCD, version)
    head = big[: 2 + 3 + topic_length + 4]  # header, topic, id and a little more
    chunks = [head[i : i + 1] for i in range(len(head))] + [big[len(head) :], small]
    out = read_chunked(chunks, version, max_packet=LIMIT)
    assert len(out) == 2
    assert isinstance(out[0], Oversized)
    assert (out[0].packet_type, out[0].qos, out[0].packet_id) == (PUBLISH, 1, 0xABCD)
    assert out[1] == Publish("next", b"small", 1, packet_id=7)


@VERSIONS
@FAST
@given(
    topic_length=st.integers(1, 2000),
    qos=st.integers(1, 2),
    packet_id=packet_ids,
    data=st.data(),
)
def test_an_oversized_publish_in_any_chunks_is_skipped_with_its_packet_id(
    version: int, topic_length: int, qos: int, packet_id: int, data: st.DataObject
) -> None:
    """Any split of an oversized QoS 1/2 PUBLISH: one Oversized with its QoS and id."""
    big, small = _oversized_stream("t" * topic_length, qos, packet_id, version)
    id_at = len(big) - 20_000 - 2 - (1 if version == V5 else 0)  # the packet id's offset
    # Cuts anywhere, and often right inside the packet id.
    cuts = data.draw(
        st.lists(st.integers(0, len(big)) | st.sampled_from([id_at + 1, id_at - 1]), max_size=30)
    )
    out = read_chunked([*split_at(big, cuts), small], version, max_packet=LIMIT)
    assert [type(p) for p in out] == [Oversized, Publish]
    assert (out[0].packet_type, out[0].qos, out[0].packet_id) == (PUBLISH, qos, packet_id)
    assert out[1].payload == b"small"


def test_an_oversized_packet_reports_its_whole_size() -> None:
    """``Oversized.size`` is the packet's size on the wire, the figure ``max_packet`` limits."""
    big, _ = _oversized_stream("topic", 1, 3, V5)
    (skipped,) = read_all(big, V5, max_packet=LIMIT)
    assert skipped.size == len(big)


def test_an_oversized_packet_is_never_buffered_whole() -> None:
    """While skipping, the reader keeps no more than what one feed brought."""
    big, small = _oversized_stream("t", 1, 1, V5)
    reader = PacketReader(V5, LIMIT)
    for start in range(0, len(big), 512):
        reader.feed(big[start : start + 512])
        list(reader.packets())
        assert len(reader._buffer) == 0
    reader.feed(small)
    assert [p.payload for p in reader.packets()] == [b"small"]


def test_an_oversized_qos0_publish_and_other_types_are_skipped_too() -> None:
    """QoS 0: no packet id to find. A SUBACK over the limit: Oversized of its type."""
    big, _ = _oversized_stream("t", 0, 0, V5)
    (skipped,) = read_all(big, V5, max_packet=LIMIT)
    assert (skipped.packet_type, skipped.qos, skipped.packet_id) == (PUBLISH, 0, 0)
    suback = codec.encode(SubAck(1, [1] * 2000), V5)
    (skipped,) = read_all(suback, V5, max_packet=LIMIT)
    assert skipped.packet_type == SUBACK


# --- a 3.1.1 broker answering an MQTT 5 CONNECT ------------------------------------------------


def test_a_311_connack_read_in_v5_mode_gives_its_return_code() -> None:
    """A 3.1.1-only broker answers MQTT 5's CONNECT with 20 02 00 01: reason_code 1."""
    assert read_all(b"\x20\x02\x00\x01", V5) == [ConnAck(False, 1, {})]
    assert read_all(b"\x20\x02\x00\x05", V5) == [ConnAck(False, 5, {})]


def test_the_connack_reason_is_what_the_link_falls_back_on() -> None:
    """A v5 CONNACK refusing the version (0x84) reads as such too; flags are checked."""
    assert read_all(codec.encode(ConnAck(False, 0x84), V5), V5) == [ConnAck(False, 0x84, {})]
    with pytest.raises(ProtocolError):
        read_all(b"\x20\x02\x02\x00", V5)  # reserved CONNACK flag


def test_pingreq_and_auth_in_311() -> None:
    """PINGREQ is two bytes in both versions; AUTH read in 3.1.1 is a ProtocolError."""
    for version in (V311, V5):
        assert codec.encode(PingReq(), version) == bytes((PINGREQ << 4, 0))
    with pytest.raises(ProtocolError):
        read_all(bytes((AUTH << 4, 0)), V311)


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize(
    "raw",
    [
        b"\x40\x02\x00\x07",
        b"\x40\x03\x00\x07\x00",
        b"\x40\x03\x00\x07\x10",
        b"\x40\x03\x00\x07\x80",
        b"\x40\x04\x00\x07\x87\x00",
        b"\x40\x02\x00\x00",
        b"\x40\x03\x00\x07\x99",
    ],
)
def test_the_short_puback_path_decodes_as_the_general_decoder(raw: bytes, version: int) -> None:
    """The reader's shortcut for PUBACKs gives what ``decode`` gives, errors included."""
    try:
        expected: Any = codec.decode(raw[0], raw[2:], version)
    except ProtocolError as exc:
        expected = type(exc)
    reader = PacketReader(version)
    reader.feed(raw)
    try:
        got: Any = list(reader.packets())
    except ProtocolError as exc:
        got = type(exc)
    assert got == (expected if isinstance(expected, type) else [expected])
