"""Faults a test can inject into the simulated NVR: how logins and REST calls misbehave."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from bridge.sim.rest import Answer

LoginMode = Literal["ok", "refuse", "refuse401", "error500", "slow"]
FaultMode = Literal["error", "http500", "slow", "http404"]
LOGIN_MODES: tuple[str, ...] = get_args(LoginMode)
FAULT_MODES: tuple[str, ...] = get_args(FaultMode)

LOGIN_REFUSED = {"Result": "Error", "Description": "Invalid username or password"}
INTERNAL_ERROR = {"Result": "Error", "Description": "Internal error"}

# What a faulted REST path answers, for every mode but "slow" (which answers normally, late).
FAULT_ANSWERS: dict[str, Answer] = {
    "error": Answer(200, {"Result": "Error", "Description": "Simulated failure"}),
    "http500": Answer(500, INTERNAL_ERROR),
    "http404": Answer(404),
}
# What POST /admin/login answers in each refusing login mode.
LOGIN_ANSWERS: dict[str, Answer] = {
    "refuse": Answer(200, LOGIN_REFUSED),
    "refuse401": Answer(401, LOGIN_REFUSED),
    "error500": Answer(500, INTERNAL_ERROR),
}


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault set on one REST path; ``delay`` matters for ``slow`` only."""

    mode: FaultMode
    delay: float
