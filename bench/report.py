"""The results: a table on stdout, the goals (PASS/MISS), the JSON file, and a summary
of a cProfile file when the service was profiled."""

from __future__ import annotations

import io
import json
import pstats
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import Measurement, ScenarioResult

GOAL_CONCURRENCY = 16
READ_WRITE_RATIO = 0.8
PAGE_GROWTH = 1.5
ZIP_RSS_GROWTH_MIB = 20.0


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    value: float | None
    status: str  # PASS, MISS or N/A
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "value": self.value, "status": self.status,
                "detail": self.detail}


def _by_key(results: Sequence[ScenarioResult]) -> dict[str, ScenarioResult]:
    return {result.key: result for result in results}


def _at(result: ScenarioResult | None, concurrency: int) -> Measurement | None:
    """The scenario's measurement at ``concurrency`` (of its variants, the one with the
    lowest throughput ratio)."""
    if result is None or result.error is not None:
        return None
    return min((m for m in result.measurements if m.concurrency == concurrency and m.raw.rps > 0),
               key=lambda m: m.rps_ratio, default=None)


def _status(ok: bool | None) -> str:
    return "N/A" if ok is None else ("PASS" if ok else "MISS")


def goals(results: Sequence[ScenarioResult]) -> list[Goal]:
    """The issue's goals, judged on this run."""
    found = _by_key(results)
    checks: list[Goal] = []
    for key, what in (("1", "single-document read"), ("2", "single-document write")):
        measured = _at(found.get(key), GOAL_CONCURRENCY)
        value = None if measured is None else round(measured.rps_ratio, 3)
        checks.append(Goal(f"{what} throughput (scenario {key}) at concurrency {GOAL_CONCURRENCY}",
                           f">= {READ_WRITE_RATIO}x raw CouchDB", value,
                           _status(None if value is None else value >= READ_WRITE_RATIO),
                           "service req/s / raw req/s"
                           + (f", variant {measured.variant}" if measured is not None and measured.variant else "")))
    pages = found.get("3")
    growth = None
    detail = "scenario 3 not run"
    if pages is not None and pages.error is None and "size_ratio" in pages.extra:
        ratio = pages.extra["size_ratio"]
        growth = ratio["by_concurrency"].get("1", {}).get("service_p50")
        detail = (f"service p50 of the {ratio['largest']:,}-message box / the {ratio['smallest']:,}-message "
                  "box, concurrency 1")
    checks.append(Goal("page latency does not grow with the box", f"<= {PAGE_GROWTH}x", growth,
                       _status(None if growth is None else growth <= PAGE_GROWTH), detail))
    zipped = found.get("6")
    rss = None
    detail = "scenario 6 not run"
    if zipped is not None and zipped.error is None and "rss" in zipped.extra:
        info = zipped.extra["rss"]
        rss = info["growth_mib"]
        detail = f"service peak RSS, ZIP of {info['large']} vs {info['small']} messages, concurrency 1"
        if info.get("instance", "only") != "only":
            detail += f" ({info['instance']} instances)"
    checks.append(Goal("ZIP peak RSS growth", f"< {ZIP_RSS_GROWTH_MIB:g} MiB", rss,
                       _status(None if rss is None else rss < ZIP_RSS_GROWTH_MIB), detail))
    return checks


def slowest(results: Sequence[ScenarioResult]) -> dict[str, Any] | None:
    """The measurement with the lowest service/raw throughput ratio."""
    candidates = [(m.rps_ratio, result, m) for result in results if result.error is None
                  for m in result.measurements if m.raw.rps > 0]
    if not candidates:
        return None
    ratio, result, measured = min(candidates, key=lambda item: item[0])
    return {"scenario": result.key, "title": result.title, "variant": measured.variant,
            "concurrency": measured.concurrency, "rps_ratio": round(ratio, 3)}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def table(results: Sequence[ScenarioResult]) -> str:
    """The human-readable table: one line per scenario, variant and concurrency."""
    header = ("scenario", "variant", "conc", "svc req/s", "raw req/s", "ratio", "svc p50", "raw p50",
              "svc p99", "raw p99", "svc cpu", "err")
    rows: list[tuple[str, ...]] = []
    for result in results:
        name = f"{result.key}. {result.title}"
        for m in result.measurements:
            cpu = m.service.cpu_ms_per_request
            rows.append((name, m.variant, str(m.concurrency), f"{m.service.rps:.1f}", f"{m.raw.rps:.1f}",
                         f"{m.rps_ratio:.2f}", _ms(m.service.p50), _ms(m.raw.p50), _ms(m.service.p99),
                         _ms(m.raw.p99), "-" if cpu is None else f"{cpu:.1f}", str(m.errors)))
            name = ""
        if result.error is not None:
            rows.append((name, "FAILED (below)", "", "", "", "", "", "", "", "", "", ""))
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i])
              for i in range(len(header))]
    numeric = set(range(2, len(header)))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                         for i, cell in enumerate(cells)).rstrip()

    out = [line(header), line(["-" * width for width in widths])]
    out += [line(row) for row in rows]
    out.append("ratio = service req/s / raw CouchDB req/s (1.00 = as fast as raw); latencies in ms;"
               " svc cpu = the service's CPU ms per request (all its instances)")
    out += [f"scenario {result.key} FAILED: {failure(result)}" for result in results if not result.ok]
    return "\n".join(out)


def extras_text(results: Sequence[ScenarioResult]) -> str:
    """Scenario 3's size ratios and scenario 6's memory and MB/s, as text."""
    lines = []
    for result in results:
        rss_of = result.extra.get("rss", {}).get("instance", "only")
        whose = "service" if rss_of == "only" else f"service ({rss_of} instances)"
        ratio = result.extra.get("size_ratio")
        if ratio:
            parts = [f"c={conc}: service p50 x{values['service_p50']}, raw p50 x{values['raw_p50']}"
                     for conc, values in ratio["by_concurrency"].items()]
            lines.append(f"3. box of {ratio['largest']:,} vs {ratio['smallest']:,} messages: " + "; ".join(parts))
        if result.key == "6":
            for m in result.measurements:
                notes = m.notes
                lines.append(f"6. ZIP {notes['messages']} msgs c={m.concurrency}: service "
                             f"{notes['service_mb_per_s']} MB/s vs raw {notes['raw_mb_per_s']} MB/s, "
                             f"{whose} peak RSS {notes['peak_rss_kib'] / 1024:.1f} MiB "
                             f"(from {notes['start_rss_kib'] / 1024:.1f} MiB)")
            rss = result.extra.get("rss")
            if rss:
                lines.append(f"6. ZIP peak RSS growth {rss['small']} -> {rss['large']} messages: "
                             f"{rss['growth_mib']} MiB")
    return "\n".join(lines)


def goals_text(checks: Sequence[Goal]) -> str:
    return "\n".join(f"[{goal.status:4}] {goal.name}: {goal.value if goal.value is not None else '-'} "
                     f"(goal {goal.target}; {goal.detail})" for goal in checks)


def measurement_json(m: Measurement) -> dict[str, Any]:
    return {"variant": m.variant, "concurrency": m.concurrency, "service": m.service.summary(),
            "raw": m.raw.summary(),
            "ratio": {"rps": round(m.rps_ratio, 4), "p50": round(m.p50_ratio, 4), "p99": round(m.p99_ratio, 4)},
            "notes": m.notes}


def scenario_json(result: ScenarioResult) -> dict[str, Any]:
    return {"title": result.title, "service_request": result.service_request,
            "raw_requests": result.raw_requests, "ran": result.ok, "error": result.error,
            "load_s": round(result.load_seconds, 2), "measure_s": round(result.measure_seconds, 2),
            "measurements": [measurement_json(m) for m in result.measurements], "extra": result.extra}


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def profile_summary(path: Path, limit: int = 25) -> str:
    """The top of a cProfile file: by own time, and kazoo_vm's functions by
    cumulative time."""
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("cumulative").print_stats("kazoo_vm", limit)
    return out.getvalue()


def failure(result: ScenarioResult) -> str:
    """Why a scenario did not run cleanly: its error, or its failed requests."""
    if result.error:
        return result.error
    examples = [example for m in result.measurements for example in m.raw.error_examples + m.service.error_examples]
    return "; ".join(examples[:3]) or "no measurement"


def render(body: dict[str, Any], results: Sequence[ScenarioResult], profile: Path | None) -> str:
    """Everything printed after a run: title, table, extras, goals, slowest ratio,
    and the profile summary when the service was profiled."""
    instances = body.get("instances", 1)
    parts = [f"kazoo_vm vs raw CouchDB on {body['store']['kind']} ({body['mode']} run, {body['elapsed_s']} s, "
             f"{body['machine']['cpus']} CPUs)",
             f"instances: {instances}" + (f" ({body['spread']})" if instances > 1 and body.get("spread") else ""),
             "", table(results)]
    extras = extras_text(results)
    if extras:
        parts += ["", extras]
    parts += ["", "Goals:", goals_text(goals(results))]
    slow = body.get("slowest")
    if slow:
        variant = f", {slow['variant']}" if slow["variant"] else ""
        parts += ["", f"Slowest ratio: {slow['rps_ratio']} in scenario {slow['scenario']} ({slow['title']}{variant}) "
                      f"at concurrency {slow['concurrency']}"]
    if profile is not None and profile.exists():
        parts += ["", f"Service profile ({profile}; cProfile slows the service, so this run's ratios are not "
                      "representative):", profile_summary(profile)]
    return "\n".join(parts)
