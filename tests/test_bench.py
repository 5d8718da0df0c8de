"""``python -m bench --quick`` runs end to end, so the benchmark harness cannot rot.

Nothing here asserts a timing: the figures depend on the machine. The run uses the
store at ``KAZOO_VM_COUCH_URL`` when set (passed through), else its own pouchdb-server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kazoo_vm.config import PROJECT_ROOT

SCENARIOS = {"1", "2", "3", "4", "5", "6"}


def test_quick_benchmark_runs_every_scenario(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--output", str(output)],
                            # no webhook sender in its instances: see the ``config`` fixture in conftest.py
                            cwd=PROJECT_ROOT, env={**os.environ, "KAZOO_VM_WEBHOOKS": "false"}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert output.exists()
    results = json.loads(output.read_text())
    assert results["mode"] == "quick"
    assert results["exit_status"] == 0
    assert set(results["scenarios"]) == SCENARIOS
    for key, scenario in results["scenarios"].items():
        assert scenario["ran"], (key, scenario["error"])
        assert scenario["measurements"], key
        for measured in scenario["measurements"]:
            assert measured["service"]["requests"] > 0 and measured["raw"]["requests"] > 0, (key, measured)
            assert measured["service"]["errors"] == 0 and measured["raw"]["errors"] == 0, (key, measured)
    # Quick mode skips concurrency 16, so the throughput goals may be N/A there.
    assert {goal["status"] for goal in results["goals"]} <= {"PASS", "MISS", "N/A"}
    assert "ratio" in result.stdout  # the table was printed
