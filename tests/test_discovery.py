"""``nvr-bridge discover``: the SDK's UDP inquiry, answered by the simulator on loopback."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import orjson

from bridge.discovery import discover, format_table, inquiry, is_inquiry, parse_device_info
from bridge.sim import SimulatedNvr


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_inquiry_is_the_22_byte_structure_of_the_guide():
    """Magic 0x26982334, command 0x0401, XML format 1, zero payload length."""
    data = inquiry()
    assert len(data) == 22
    assert data[:4] == bytes.fromhex("26982334")
    assert data[4:6] == bytes.fromhex("0401")
    assert data[18] == 1
    assert data[20:22] == b"\x00\x00"
    assert is_inquiry(data)
    assert not is_inquiry(data[:21])


def test_device_info_is_parsed_safely():
    """The DeviceInfo XML is read; entity tricks and garbage are refused, not expanded."""
    xml = (
        b"<DeviceInfo version='1.0'><HttpPort>8080</HttpPort><DeviceName>AiO NVR</DeviceName>"
        b"<ModelName>EPN</ModelName><FwVer>1.0.25</FwVer><Category>NVR</Category>"
        b"<Ipv4><Addr>192.168.33.167</Addr><Mask>255.255.255.0</Mask></Ipv4>"
        b"<MacAddr>00:04:4b:e6:32:f7</MacAddr><IPChannels>8</IPChannels>"
        b"<AnalogChannels>0</AnalogChannels></DeviceInfo>"
    )
    device = parse_device_info(xml, "192.168.33.167")
    assert device is not None
    assert device.url == "http://192.168.33.167:8080"
    assert (device.name, device.model, device.ip_channels) == ("AiO NVR", "EPN", 8)
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b"<DeviceInfo><DeviceName>&b;</DeviceName></DeviceInfo>"
    )
    assert parse_device_info(bomb, "10.0.0.1") is None
    assert parse_device_info(b"<DeviceInfo><unclosed>", "10.0.0.1") is None
    assert parse_device_info(b"hello", "10.0.0.1") is None


async def test_discover_finds_the_simulator_on_loopback():
    """An inquiry sent to 127.0.0.1 gets the simulator's answer with its HTTP port."""
    async with SimulatedNvr(name="Loopback NVR", channels=6) as sim:
        port = await sim.start_discovery("127.0.0.1", 0)
        found = await discover(target="127.0.0.1", port=port, timeout=1.0)
    assert len(found) == 1
    assert found[0].http_port == sim.port
    assert found[0].name == "Loopback NVR"
    assert found[0].url == f"http://127.0.0.1:{sim.port}"
    assert "Loopback NVR" in format_table(found)


async def test_discover_command_prints_json():
    """`nvr-bridge discover --target 127.0.0.1 --json` prints what answered."""
    async with SimulatedNvr() as sim:
        port = await sim.start_discovery("127.0.0.1", 0)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "discover",
            "--target",
            "127.0.0.1",
            "--port",
            str(port),
            "--timeout",
            "1",
            "--json",
            stdout=subprocess.PIPE,
        )
        out, _ = await process.communicate()
    assert process.returncode == 0
    devices = orjson.loads(out)
    assert [d["http_port"] for d in devices] == [sim.port]


async def test_discover_exits_1_when_nothing_answered():
    """No NVR answered: the table says so and the exit code is 1 (scripts can tell)."""
    port = free_udp_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "discover", "--target", "127.0.0.1", "--port",
        str(port), "--timeout", "0.3",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    assert f"no NVR answered (is UDP port {port} reachable" in out.decode()


async def test_the_simulate_command_answers_discovery_by_default():
    """`nvr-bridge simulate` answers the inquiry on its host without any flag."""
    udp = free_udp_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "simulate", "--port", "0", "--quiet",
        "--discovery-port", str(udp), "--log-format", "json",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            while b"discovery: answering" not in (line := await process.stdout.readline()):
                assert line, "the simulator ended"
        found = await discover(target="127.0.0.1", port=udp, timeout=1.0)
        assert [d.model for d in found] == ["EPN4208-SIM"]
    finally:
        process.terminate()
        await process.wait()
    help_text = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "simulate", "--help", stdout=subprocess.PIPE
    )
    out, _ = await help_text.communicate()
    assert "(default: 31501)" in out.decode()
