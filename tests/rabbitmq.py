"""A RabbitMQ of the test run (Debian's ``rabbitmq-server``), like the embedded store:
its own node name, ports, data, logs, Erlang cookie (its own HOME) and no plugins, in a
process group of its own that the tests can kill and start again (same data)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from kazoo_vm.embedded_store import free_port

# Debian installs the scripts here; /usr/sbin's wrappers would switch to the rabbitmq user.
SCRIPTS = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 60.0


def installed() -> bool:
    return (SCRIPTS / "rabbitmq-server").exists() or shutil.which("rabbitmq-server") is not None


def _script(name: str) -> str:
    local = SCRIPTS / name
    return str(local) if local.exists() else name


class RabbitMq:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"kvm_test_{self.port}@localhost"
        self._process: subprocess.Popen[bytes] | None = None
        for sub in ("home", "mnesia", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "enabled_plugins").write_text("[].\n")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.base / "home"), "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"), "RABBITMQ_LOG_BASE": str(self.base / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
                "RABBITMQ_CONFIG_FILE": str(self.base / "none"),
                # two shared CPUs: one scheduler that does not spin
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none"}

    def start(self) -> str:
        """Start the broker and wait until it takes AMQP connections; its URL."""
        with (self.base / "log" / "stdout").open("ab") as output:  # the child keeps its own copy
            self._process = subprocess.Popen([_script("rabbitmq-server")], env=self._env(), cwd=self.base,
                                             stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self._process.returncode}: "
                                   + (self.base / "log" / "stdout").read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self.url
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError("rabbitmq-server did not start in time")

    def kill(self) -> None:
        """Take the broker away at once (SIGKILL to its process group)."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._process = None

    def stop(self) -> None:
        if self._process is None:
            return
        subprocess.run([_script("rabbitmqctl"), "-n", self.node, "stop"], env=self._env(),
                       capture_output=True, timeout=30, check=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=15)
        self.kill()
