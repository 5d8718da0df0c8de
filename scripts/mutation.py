"""Mutation testing of one module: ``./dev mutation MODULE [TEST_FILE ...]``.

Runs mutmut 3 (the ``mutation`` extra) on ``kazoo_vm/MODULE.py`` against the test
files that reach it (TESTS below, or the files given), then prints the score and every
surviving mutant as a diff. See docs/mutation.rst.

mutmut runs in its own folder, ``.mutation/<module>/``, holding a copy of the project
with a ``[mutmut]`` section for this module, so that its stats run covers only these
test files. One pouchdb-server is started here for the whole run and handed to the
tests as ``KAZOO_VM_COUCH_URL``: the forked mutant runs then share it instead of each
starting its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kazoo_vm.embedded_store import EmbeddedStore

ROOT = Path(__file__).resolve().parent.parent
MEMORY_LIMIT = 3 * 1024**3
COPIED = ("kazoo_vm", "tests", "schemas", "couch_views", "pyproject.toml")

# The test files that reach each module (what a change to the module should be checked by).
TESTS = {
    "kazoo_vm/kazoo/start_key.py": ["tests/test_start_key.py"],
    "kazoo_vm/kazoo/filters.py": ["tests/test_filters.py", "tests/test_vmboxes.py", "tests/test_messages.py"],
    "kazoo_vm/kazoo/box_message.py": ["tests/test_message_rules.py", "tests/test_messages.py",
                                      "tests/test_audio_length.py"],
    "kazoo_vm/kazoo/documents.py": ["tests/test_vmboxes.py", "tests/test_accounts_api.py",
                                    "tests/test_message_rules.py"],
    "kazoo_vm/kazoo/naming.py": ["tests/test_message_rules.py", "tests/test_messages.py", "tests/test_accounts_api.py",
                                 "tests/test_events.py", "tests/test_bad_input.py"],
}


def module_path(name: str) -> str:
    """``naming``, ``kazoo/naming``, ``kazoo_vm.kazoo.naming`` or a path -> ``kazoo_vm/….py``.

    A bare name is one of Kazoo's rule modules (``kazoo_vm/kazoo/``)."""
    path = name.removesuffix(".py").replace(".", "/")
    if "/" not in path:
        path = f"kazoo/{path}"
    if not path.startswith("kazoo_vm/"):
        path = f"kazoo_vm/{path}"
    return f"{path}.py"


def prepare(workdir: Path, module: str, tests: list[str]) -> None:
    """A fresh copy of the project in ``workdir`` with mutmut configured for ``module``."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=ignore)
        else:
            shutil.copy2(source, workdir / name)
    lines = ["", "[mutmut]", "source_paths = kazoo_vm", f"only_mutate = {module}",
             "also_copy =", "    schemas", "    couch_views",
             "pytest_add_cli_args_test_selection ="]
    lines += [f"    {test}" for test in tests]
    # mutmut stops a mutant's run after (T + constant) * multiplier seconds of wall time, T being
    # the time its tests took in the stats run without their fixtures (account, app, login):
    # 5x lets a surviving mutant's run finish on a busy machine, and a mutant that loops for
    # ever (``month += 2``) still stops (mutmut's default, 15x, looks like a hang).
    lines += ["timeout_multiplier = 5.0", "timeout_constant = 30.0"]
    # mutmut's default forks each mutant's run from the process that ran the whole
    # stats run, event loops, threads and sockets included: some forks then hang until
    # the time limit (a mutant of a 1 s test took 215 s). Its fork server forks from a
    # process that only collected the tests.
    lines += ["process_isolation = forkserver", "forkserver_warmup = collect"]
    # A mutant that fails a test can leave a client session unclosed: not an error here.
    lines += ["pytest_add_cli_args =", "    -p", "    no:cacheprovider", "    -W",
              "    ignore::pytest.PytestUnraisableExceptionWarning"]
    text = (ROOT / "setup.cfg").read_text() + "\n".join(lines) + "\n"
    (workdir / "setup.cfg").write_text(text)


def limit_memory() -> None:
    """A mutant that loops appending for ever (``month += 2`` in ``months_between``) took
    12 GB within a minute: every process of the run gets MEMORY_LIMIT of address space,
    so such a mutant fails its test with MemoryError (detected) instead."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def mutmut(workdir: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=workdir, text=True,
                          capture_output=capture, check=False)


def report(workdir: Path, module: str) -> int:
    """Print the survivors and the score; exit status 1 when any mutant survived.

    A mutant whose tests ran out of time (an endless loop, a wait that never ends) was
    noticed by them: it counts as detected, as in Stryker, and is listed by name."""
    mutmut(workdir, "export-cicd-stats", capture=True)
    stats = json.loads((workdir / "mutants" / "mutmut-cicd-stats.json").read_text())
    listed = mutmut(workdir, "results", capture=True).stdout
    status = {name.strip(): result.strip() for name, _, result in
              (line.rpartition(":") for line in listed.splitlines() if ":" in line)}
    for name in sorted(name for name, result in status.items() if result == "survived"):
        print(mutmut(workdir, "show", name, capture=True).stdout)
    for name in sorted(name for name, result in status.items() if result == "timeout"):
        print(f"# {name}: timeout (detected)")
    killed, total, timeout = stats["killed"], stats["total"], stats.get("timeout", 0)
    others = {key: value for key, value in stats.items()
              if key not in ("killed", "total", "survived", "timeout") and value}
    score = 100 * (killed + timeout) / total if total else 100.0
    print(f"{module}: {killed + timeout} detected of {total} mutants ({score:.1f} %: {killed} killed, "
          f"{timeout} timed out), {stats['survived']} survived" + (f", {others}" if others else ""))
    return 1 if stats["survived"] or others else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="e.g. start_key, naming or storage/coalesce")
    parser.add_argument("tests", nargs="*", help="test files (default: those listed for the module)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    options = parser.parse_args()
    module = module_path(options.module)
    tests = options.tests or [test for test in TESTS.get(module, []) if (ROOT / test).is_file()]
    if not (ROOT / module).is_file() or not tests:
        parser.error(f"{module}: no such module, or no test files known for it (name them)")
    workdir = ROOT / ".mutation" / module.removeprefix("kazoo_vm/").removesuffix(".py").replace("/", ".")
    prepare(workdir, module, tests)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kazoo_vm_mutation_") as data:
        store = EmbeddedStore(data_dir=Path(data))
        os.environ["KAZOO_VM_COUCH_URL"] = store.start()
        try:
            with open(workdir / "run.log", "w") as log:
                ran = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(options.jobs)],
                                     cwd=workdir, stdout=log, stderr=subprocess.STDOUT, check=False,
                                     preexec_fn=limit_memory)
        finally:
            store.stop()
    if ran.returncode:
        print((workdir / "run.log").read_text()[-3000:], file=sys.stderr)
        print(f"mutmut run failed ({ran.returncode}); its output is in {workdir / 'run.log'}", file=sys.stderr)
        return ran.returncode
    status = report(workdir, module)
    print(f"{time.monotonic() - started:.0f} s; mutants and results in {workdir.relative_to(ROOT)}/mutants")
    return status


if __name__ == "__main__":
    sys.exit(main())
