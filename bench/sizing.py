"""The data sizes a run picks from how fast the store turns out to be.

The issue's sizes (boxes of 50, 5,000 and 50,000 messages; 20,000 messages in 1,000
boxes) are the targets. How long they take depends on the store and on what else runs
on the machine: pouchdb-server (one Node.js thread) loads and indexes 80 to 1,000
messages a second on this 2-core machine, and scenario 5's requests read every message
of the window, so at concurrency 64 each measurement is 64 of them in a row. To keep a
run within its time budget, scenarios 3 and 5 first load a sample, time it, and take
the largest size that fits their share of the budget (never above the target, never
below the minimum). The sizes used are reported with the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Shares of the budget: loading and indexing scenario 3's messages after the sample,
# and measuring scenario 5.
PAGE_SHARE = 0.2
LISTING_SHARE = 0.15
SMALL_BOX = 50


@dataclass(frozen=True)
class Range:
    """A size chosen between ``minimum`` and ``target`` in steps of ``step``, after a
    timed sample of ``sample`` messages."""

    sample: int
    minimum: int
    step: int
    target: int

    def fit(self, value: float) -> int:
        """``value`` rounded down to a step and kept inside the range."""
        stepped = int(value // self.step) * self.step
        return max(self.minimum, min(self.target, stepped))


PAGE_RANGE = Range(sample=2_000, minimum=5_000, step=5_000, target=50_000)
LISTING_RANGE = Range(sample=1_000, minimum=1_000, step=1_000, target=20_000)
QUICK_PAGE_RANGE = Range(sample=100, minimum=300, step=100, target=400)
QUICK_LISTING_RANGE = Range(sample=100, minimum=100, step=100, target=200)


def page_boxes(largest: Range, docs_per_second: float, budget: float) -> tuple[int, int, int]:
    """Scenario 3's boxes (50, a tenth of the largest but at least 100, the largest)
    for a store that loads and indexes ``docs_per_second`` (the smaller boxes add
    about a tenth)."""
    biggest = largest.fit(docs_per_second * budget * PAGE_SHARE / 1.1)
    return SMALL_BOX, max(biggest // 10, 2 * SMALL_BOX), biggest


def measured_requests(concurrency: Sequence[int]) -> int:
    """About how many listing requests scenario 5 sends when each is slow: one per
    worker and side at every concurrency above 1, a few at 1, plus the warm-ups."""
    return 2 * sum(level for level in concurrency if level > 1) + 12


def listing_messages(messages: Range, seconds_per_request: float, sample: int, concurrency: Sequence[int],
                     budget: float) -> int:
    """Scenario 5's message count, given that a listing over ``sample`` messages took
    ``seconds_per_request`` (its cost grows with the messages it counts)."""
    per_message = max(seconds_per_request, 1e-6) / max(sample, 1)
    return messages.fit(budget * LISTING_SHARE / (measured_requests(concurrency) * per_message))
