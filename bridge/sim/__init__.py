"""The simulated EverFocus NVR: the project's test double and the demo's traffic source.

It speaks the SDK as the vendor's guide describes it (digest login, REST endpoints, the
five websocket streams, UDP discovery), records what clients call, and takes injected
faults, in-process (``SimulatedNvr``) or from another process (the ``/_sim/`` API).

Modules: ``server`` (the HTTP application), ``rest`` and ``ptz`` (the endpoints),
``sessions`` (login), ``hub`` (websocket fan-out), ``traffic`` (random realistic items),
``history`` (event and metadata search), ``record_map`` (getMapBy*), ``snapshots`` and
``jpeg`` (snapshot records and their images), ``logs`` (searchLogs), ``storage``
(getStorages), ``device`` (identity, channel and pin state), ``faults``, ``control``
(the ``/_sim/`` API), ``discovery`` (UDP) and ``fleet``.
"""

from bridge.sim.calls import RecordedCall
from bridge.sim.faults import FaultMode, LoginMode
from bridge.sim.fleet import SimulatedFleet, run_simulator
from bridge.sim.history import History
from bridge.sim.server import SimulatedNvr

__all__ = [
    "FaultMode",
    "History",
    "LoginMode",
    "RecordedCall",
    "SimulatedFleet",
    "SimulatedNvr",
    "run_simulator",
]
