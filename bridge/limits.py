"""The bounds on what comes in from NVRs, clients and the broker (CONTRACT.md section 9).

Every input has a bound, checked where it enters, before anything walks it: the depth of
JSON documents (frame items, requests, REST answers), channel numbers and counts, and the
characters allowed in MQTT topics. These checks are pure and iterative: no recursion over
data a peer controls, so no input can reach Python's recursion limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeGuard

DEFAULT_JSON_MAX_DEPTH = 64
DEFAULT_NVR_MAX_ANSWER_BYTES = 4 * 1024 * 1024
DEFAULT_RESPONSE_MAX_BYTES = 1024 * 1024
INT32_MAX = 2**31 - 1
# Channels an NVR may have: beyond this its claims (a getSystemInfo of 2,000,000
# channels, a status stream naming 200,000 of them) are clamped or refused.
MAX_CHANNELS = 4096
# Epoch milliseconds up to the end of year 9999: a time beyond it is not a real time.
MAX_EPOCH_MS = 253_402_300_799_999
# A topic level taken from peer data is cut at this many characters.
MAX_LEVEL_CHARS = 1000
# MQTT's topic length limit (a two-byte length prefix, in UTF-8 bytes).
MAX_TOPIC_BYTES = 65_535


@dataclass(frozen=True, slots=True)
class InputLimits:
    """The configurable bounds, handed to the code that reads peer input."""

    json_max_depth: int = DEFAULT_JSON_MAX_DEPTH
    nvr_max_answer_bytes: int = DEFAULT_NVR_MAX_ANSWER_BYTES
    response_max_bytes: int = DEFAULT_RESPONSE_MAX_BYTES


_CONTAINERS = (dict, list)


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests containers deeper than ``limit`` levels.

    ``{"a": [1]}`` has depth 2; a scalar has depth 0. Iterative, so any depth is safe to
    ask about.
    """
    if not isinstance(value, _CONTAINERS):
        return False
    for child in value.values() if isinstance(value, dict) else value:
        if isinstance(child, _CONTAINERS):
            break
    else:  # the common case, a flat object or array: depth 1
        return limit < 1
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, _CONTAINERS))
    return False


def is_channel_number(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is a channel number: a JSON integer in ``1..INT32_MAX``."""
    return type(value) is int and 1 <= value <= INT32_MAX


def _forbidden_topic_chars() -> str:
    """The characters no topic level from peer data may carry (CONTRACT section 9).

    C0 and C1 controls (NUL included), surrogates, the Unicode noncharacters of every
    plane, bidirectional controls and invisible (zero-width, BOM, soft hyphen) characters.
    """
    ranges = [
        "\x00-\x1f",
        "\x7f-\x9f",
        "\ud800-\udfff",
        "\ufdd0-\ufdef",
        "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069",
        "\u00ad\u180e\u200b-\u200d\u2060-\u2064\ufeff",
    ]
    ranges += [f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17)]
    return "".join(ranges)


_FORBIDDEN = _forbidden_topic_chars()
# In a topic level from NVR data: also the level separator, the wildcards, whitespace.
UNSAFE_LEVEL_CHARS = re.compile(f"[/+#\\s{_FORBIDDEN}]")
# In a whole topic name the bridge publishes (its own or a client's Response Topic).
_UNSAFE_TOPIC_CHARS = re.compile(f"[+#{_FORBIDDEN}]")


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` is not a topic name the bridge may publish to; None when it is.

    A valid name is non-empty, at most 65,535 UTF-8 bytes, without wildcards and without
    the characters brokers refuse or that hide what a topic says.
    """
    if not topic:
        return "the topic is empty"
    # The common case, checked in C: printable ASCII holds no forbidden character.
    printable_ascii = topic.isascii() and topic.isprintable()
    if printable_ascii and "+" not in topic and "#" not in topic:
        return (
            None
            if len(topic) <= MAX_TOPIC_BYTES
            else f"the topic is longer than {MAX_TOPIC_BYTES} bytes"
        )
    match = _UNSAFE_TOPIC_CHARS.search(topic)
    if match is not None:
        return f"the topic has the forbidden character U+{ord(match.group()):04X}"
    if len(topic) * 4 > MAX_TOPIC_BYTES and len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        return f"the topic is longer than {MAX_TOPIC_BYTES} bytes"
    return None
