"""What the simulated NVR remembers of each REST call, for tests to assert on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RecordedCall:
    """One REST call as the NVR received it.

    ``authorized`` is False for a call refused with 401 for want of a valid session; such
    calls are recorded too, so a test sees the refused attempt and the retry.
    """

    method: str
    path: str
    query: dict[str, str]
    body: Any
    time: float
    authorized: bool = True

    def to_json(self) -> dict[str, Any]:
        """The call as a JSON object (the control API's ``GET /_sim/calls``)."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "body": self.body,
            "time": self.time,
            "authorized": self.authorized,
        }
