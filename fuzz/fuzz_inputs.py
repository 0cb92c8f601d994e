"""Coverage-guided fuzzing (atheris) of everything that parses outside input.

Targets: the websocket frame parser and normalizer of every stream, every command's
request parsing, the convenience topics, and the MQTT codec reading what a broker (or
a client of the demo's broker) sends, in both protocol versions. Any exception that
escapes is a crash (the codec may raise only ProtocolError).

    python fuzz/fuzz_inputs.py -runs=200000          # a bounded run
    python fuzz/fuzz_inputs.py -max_total_time=600   # ten minutes
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from bridge.commands import COMMANDS, convenience_request, parse_request
    from bridge.limits import topic_problem
    from bridge.mqtt.codec import V5, V311, PacketReader, ProtocolError
    from bridge.normalize import Normalizer, process_frame
    from bridge.nvr.models import STREAM_NAMES
    from bridge.topics import NvrTopics

COMMAND_NAMES = [*COMMANDS, "unknown"]
TOPICS = NvrTopics("fuzz", "nvr")
NORMALIZER = Normalizer(TOPICS)


def test_one_input(data: bytes) -> None:
    """Feed one input to one target chosen by its first bytes."""
    provider = atheris.FuzzedDataProvider(data)
    target = provider.ConsumeIntInRange(0, 3)
    if target == 0:
        stream = STREAM_NAMES[provider.ConsumeIntInRange(0, len(STREAM_NAMES) - 1)]
        frame = provider.ConsumeBytes(provider.remaining_bytes())
        outcome = process_frame(NORMALIZER, stream, frame, "2026-01-01T00:00:00.000Z")
        assert all(isinstance(r, str) and r for r in outcome.rejections)
        for publication in outcome.publications:
            assert topic_problem(publication.topic) is None
    elif target == 1:
        command = COMMAND_NAMES[provider.ConsumeIntInRange(0, len(COMMAND_NAMES) - 1)]
        retained = provider.ConsumeBool()
        payload = provider.ConsumeBytes(provider.remaining_bytes())
        parsed = parse_request(
            command,
            payload,
            allowed=frozenset(COMMANDS),
            retained=retained,
            now=1_800_000_000.0,
            max_age=30,
        )
        assert parsed.call is not None or (parsed.refusal is not None and parsed.refusal.error)
    elif target == 2:
        levels = provider.ConsumeUnicodeNoSurrogates(40).split("/")
        route = TOPICS.route(levels)
        if route is not None and route.kind != "request":
            convenience_request(route, provider.ConsumeBytes(provider.remaining_bytes()))
    else:
        reader = PacketReader(V5 if provider.ConsumeBool() else V311, max_packet=4096)
        reader.feed(provider.ConsumeBytes(provider.remaining_bytes()))
        try:
            for _packet in reader.packets():
                pass
        except ProtocolError:
            pass


def main() -> None:
    """Run the fuzzer with libFuzzer's command-line options."""
    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
