"""What a scenario produced: per variant and concurrency, both sides' samples."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .client import Sample


@dataclass
class Measurement:
    """One variant at one concurrency: both sides and anything else observed."""

    variant: str
    concurrency: int
    raw: Sample
    service: Sample
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def rps_ratio(self) -> float:
        return self.service.rps / self.raw.rps if self.raw.rps else 0.0

    @property
    def p50_ratio(self) -> float:
        return self.service.p50 / self.raw.p50 if self.raw.p50 else 0.0

    @property
    def p99_ratio(self) -> float:
        return self.service.p99 / self.raw.p99 if self.raw.p99 else 0.0

    @property
    def errors(self) -> int:
        return self.raw.errors + self.service.errors


@dataclass
class ScenarioResult:
    key: str
    title: str
    service_request: str
    raw_requests: str
    measurements: list[Measurement] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    load_seconds: float = 0.0
    measure_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def loaded(self) -> None:
        """Mark the end of loading: what follows counts as measuring."""
        self.load_seconds = time.perf_counter() - self.started

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.measurements) and all(m.errors == 0 for m in self.measurements)
