"""The command line and the sizes of a run (default and ``--quick``)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path

from .sizing import LISTING_RANGE, PAGE_RANGE, QUICK_LISTING_RANGE, QUICK_PAGE_RANGE, Range

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUTPUT = BENCH_DIR / "results.json"
SCENARIO_IDS = ("1", "2", "3", "4", "5", "6")


@dataclass(frozen=True)
class Sizes:
    """How much data is loaded and how long each measurement lasts.

    ``duration`` bounds one measurement (service or raw) in seconds and
    ``max_requests`` its request count; each (variant, concurrency) is measured
    ``rounds`` times alternately raw/service and the samples merged."""

    page_boxes: tuple[int, ...] | None = None  # None: chosen during the run in page_range
    page_range: Range = PAGE_RANGE
    listing_boxes: int = 1_000
    listing_messages: int | None = None  # None: chosen during the run in listing_range
    listing_range: Range = LISTING_RANGE
    zip_counts: tuple[int, int] = (20, 200)
    zip_message_bytes: int = 200 * 1024
    audio_bytes: int = 1024 * 1024
    concurrency: tuple[int, ...] = (1, 16, 64)
    duration: float = 1.0
    rounds: int = 2
    max_requests: int = 20_000
    warmup_seconds: float = 0.3
    budget_seconds: float = 540.0

    def describe(self) -> dict[str, object]:
        """The sizes as reported in the JSON file."""
        return {
            "page_boxes": list(self.page_boxes) if self.page_boxes else "chosen in the run",
            "page_largest_range": [self.page_range.minimum, self.page_range.target],
            "listing_boxes": self.listing_boxes,
            "listing_messages": self.listing_messages or "chosen in the run",
            "listing_messages_range": [self.listing_range.minimum, self.listing_range.target],
            "zip_counts": list(self.zip_counts),
            "zip_message_bytes": self.zip_message_bytes,
            "audio_bytes": self.audio_bytes,
            "concurrency": list(self.concurrency),
            "duration_s": self.duration,
            "rounds": self.rounds,
            "max_requests": self.max_requests,
            "budget_s": self.budget_seconds,
        }


DEFAULT_SIZES = Sizes()
# --quick checks that every scenario still runs (the test suite runs it): sizes and
# concurrency small enough for well under a minute; its figures mean little.
QUICK_SIZES = Sizes(
    page_range=QUICK_PAGE_RANGE,
    listing_boxes=30,
    listing_range=QUICK_LISTING_RANGE,
    zip_counts=(5, 20),
    zip_message_bytes=16 * 1024,
    audio_bytes=64 * 1024,
    concurrency=(1, 4, 8),
    duration=0.1,
    rounds=1,
    max_requests=200,
    warmup_seconds=0.03,
    budget_seconds=55.0,
)


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know; ``couch_url`` None means the embedded store;
    ``instances`` service processes share the load (see :mod:`bench.context`)."""

    sizes: Sizes
    quick: bool
    output: Path
    scenarios: tuple[str, ...]
    couch_url: str | None
    profile: Path | None
    seed: int
    instances: int = 1


def _sizes_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="python -m bench",
        description="kazoo_vm against raw CouchDB doing the same work: ratios, p50 and p99.",
    )
    cli.add_argument("--quick", action="store_true", help="small sizes and short runs (under a minute)")
    cli.add_argument("--output", type=Path, default=None, help=f"JSON results file (default {DEFAULT_OUTPUT})")
    cli.add_argument("--scenarios", default=",".join(SCENARIO_IDS),
                     help="comma-separated scenario numbers to run (default: all of 1-6)")
    cli.add_argument("--page-boxes", type=_sizes_list, default=None,
                     help="box sizes of scenario 3, e.g. 50,5000,50000 (default: the largest that fit the budget)")
    cli.add_argument("--listing-messages", type=int, default=None,
                     help="messages of scenario 5's 1,000 boxes (default: the most that fit the budget)")
    cli.add_argument("--budget", type=float, default=None,
                     help="seconds the default sizes are chosen to fit in (default 540)")
    cli.add_argument("--duration", type=float, default=None, help="seconds per measurement")
    cli.add_argument("--rounds", type=int, default=None, help="alternating raw/service rounds per measurement")
    cli.add_argument("--instances", type=_positive, default=1, metavar="N",
                     help="service processes, each on its own port, against the same store (default 1); worker w "
                          "of a measurement uses instance w mod N, and with several CouchDB nodes in "
                          "KAZOO_VM_COUCH_URL instance i (and the raw requests of its workers) puts node i "
                          "mod the node count first")
    cli.add_argument("--profile", type=Path, default=None,
                     help="run the service (with --instances, its first instance) under cProfile and write its "
                          "stats to this file")
    cli.add_argument("--seed", type=int, default=20240501, help="random seed of the loaded data")
    return cli


def from_args(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Settings from the command line and ``KAZOO_VM_COUCH_URL``."""
    args = parser().parse_args(argv)
    environ = dict(os.environ) if env is None else env
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    if args.page_boxes:
        sizes = replace(sizes, page_boxes=args.page_boxes)
    if args.listing_messages is not None:
        sizes = replace(sizes, listing_messages=max(args.listing_messages, 1))
    if args.budget is not None:
        sizes = replace(sizes, budget_seconds=max(args.budget, 10.0))
    if args.duration is not None:
        sizes = replace(sizes, duration=max(args.duration, 0.05))
    if args.rounds is not None:
        sizes = replace(sizes, rounds=max(args.rounds, 1))
    wanted = tuple(part.strip() for part in args.scenarios.split(",") if part.strip())
    unknown = [part for part in wanted if part not in SCENARIO_IDS]
    if unknown or not wanted:
        parser().error(f"--scenarios takes numbers among {', '.join(SCENARIO_IDS)}")
    return Settings(
        sizes=sizes,
        quick=args.quick,
        output=args.output or DEFAULT_OUTPUT,
        scenarios=tuple(sorted(set(wanted))),
        couch_url=environ.get("KAZOO_VM_COUCH_URL") or None,
        profile=args.profile,
        seed=args.seed,
        instances=args.instances,
    )
