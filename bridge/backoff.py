"""Exponential backoff with full jitter, shared by every reconnect loop.

Full jitter (a delay drawn uniformly from zero to the exponential ceiling) spreads the
reconnects of many streams and NVRs after a site-wide outage instead of retrying them in
lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays of ``uniform(0, min(maximum, initial * 2**attempt))`` seconds."""

    initial: float = 0.5
    maximum: float = 30.0
    attempt: int = 0
    _random: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling up to the cap."""
        ceiling = min(self.maximum, self.initial * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._random.uniform(0, ceiling)

    def reset(self) -> None:
        """Start again from the initial delay (after a success)."""
        self.attempt = 0
