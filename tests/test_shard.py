"""Sharding across replicas: every NVR is bridged by exactly one of N processes."""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
import yaml

from bridge.config import load_config, shard_of
from bridge.sim import SimulatedFleet
from tests.conftest import eventually, free_port, watch
from tests.test_process import start_process, wait_exit

REPLICAS = 3
NVRS = 30


def test_shard_assignment_is_stable_and_complete():
    """Each NVR id falls in exactly one shard, the same in every process."""
    ids = [f"site-{i}" for i in range(200)]
    shards = [shard_of(i, REPLICAS) for i in ids]
    assert shards == [shard_of(i, REPLICAS) for i in ids]
    assert set(shards) == set(range(REPLICAS))
    base = {"BRIDGE_CONFIG_FILE": "", "BRIDGE_NVR_URL": "http://10.0.0.1"}
    config = load_config(environ={**base, "BRIDGE_SHARD_INDEX": "2", "BRIDGE_SHARD_COUNT": "3"})
    assert config.shard == "2/3"


def test_a_bad_shard_is_a_clear_config_error():
    """BRIDGE_SHARD must be i/N with 0 <= i < N."""
    from bridge.config import ConfigError

    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(ConfigError) as caught:
            load_config(environ={"BRIDGE_NVR_URL": "http://10.0.0.1", "BRIDGE_SHARD": bad})
        assert caught.value.problems[0].startswith("BRIDGE_SHARD:")


async def test_three_replicas_publish_every_event_and_answer_every_command_once(
    broker, base_topic, tmp_path: Path
):
    """30 NVRs, 3 replicas: one event per NVR published once, one command answered once."""
    async with SimulatedFleet(NVRS, channels=1) as fleet:
        config = {
            "base_topic": base_topic,
            "mqtt": {"url": broker.url},
            "backoff_initial": 0.05,
            "backoff_max": 0.5,
            "nvrs": [
                {"id": f"site{i}", "url": nvr.url, "username": "admin", "password": "admin"}
                for i, nvr in enumerate(fleet.nvrs)
            ],
        }
        path = tmp_path / "fleet.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        processes = []
        async with watch(broker, f"{base_topic}/#") as w:
            try:
                for index in range(REPLICAS):
                    replica_env = {
                        **env,
                        "BRIDGE_CONFIG_FILE": str(path),
                        "BRIDGE_SHARD": f"{index}/{REPLICAS}",
                        "BRIDGE_MQTT_CLIENT_ID": f"shard-{index}-{uuid.uuid4().hex[:6]}",
                        "BRIDGE_HTTP_PORT": str(free_port()),
                    }
                    processes.append(start_process(replica_env))

                def online() -> set[str]:
                    return {
                        m.topic.split("/")[1]
                        for m in w.messages
                        if m.topic.endswith("/availability") and m.text == "online"
                    }

                await eventually(lambda: len(online()) == NVRS, timeout=60, what="all NVRs online")
                for i, nvr in enumerate(fleet.nvrs):
                    await nvr.push("event", {"ChannelID": 1, "Type": "Motion", "State": "once"})
                    await w.publish(
                        f"{base_topic}/site{i}/request/buzzer",
                        orjson.dumps({"timeout": 1, "transaction": i}),
                        qos=1,
                    )
                await eventually(
                    lambda: (
                        (
                            len(w.matching(f"{base_topic}/site"))
                            and len(events(w, base_topic)) >= NVRS
                        )
                        and len(responses(w, base_topic)) >= NVRS
                    ),
                    timeout=30,
                    what="an event and a response per NVR",
                )
            finally:
                for process in processes:
                    process.send_signal(signal.SIGTERM)
                codes = [await wait_exit(process, 10) for process in processes]
    assert codes == [0] * REPLICAS
    assert Counter(events(w, base_topic)) == Counter(f"site{i}" for i in range(NVRS))
    assert sorted(responses(w, base_topic)) == list(range(NVRS))
    assert all(len(nvr.calls_to("/system/callBuzzer")) == 1 for nvr in fleet.nvrs)


def events(w, base_topic: str) -> list[str]:
    return [
        m.topic.split("/")[1]
        for m in w.matching(f"{base_topic}/")
        if m.topic.endswith("/event/Motion")
    ]


def responses(w, base_topic: str) -> list[int]:
    return [
        m.json()["transaction"]
        for m in w.matching(f"{base_topic}/")
        if "/response/buzzer" in m.topic
    ]
