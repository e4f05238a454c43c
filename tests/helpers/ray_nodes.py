"""A real multi-node Ray cluster on this machine, for the node-loss tests.

A head node and worker nodes, each started by `ray start --block` in its own process
group, with its own ports and temp folder (the dashboard and the addresses the test
uses are loopback; Ray itself maps 127.0.0.1 to the machine's own address for its
internal gRPC, as a plain local `ray.init` does), so that a test can kill one
node's raylet (a lost spot node) while the rest of the cluster, and any other Ray on the
machine, carries on. `ray stop` is never used: it would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

RAY = str(Path(sys.executable).with_name("ray"))
# Lost nodes are noticed in ~3 s instead of Ray's default ~30 s.
FAST_FAILURE_DETECTION = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4"}


def _processes() -> dict[int, tuple[int, str, list[str]]]:
    """pid -> (parent pid, name, command line) of every process, from /proc (Linux)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        table[int(entry.name)] = (ppid, name, [a.decode(errors="replace") for a in cmdline if a])
    return table


def _descendants(pid: int) -> list[tuple[int, str]]:
    table = _processes()
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, name, _) in table.items():
            if ppid == parent:
                found.append((child, name))
                frontier.append(child)
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    temp_dir: Path

    def raylet(self) -> Optional[int]:
        """The pid of this node's raylet (a child of its `ray start --block`), if running."""
        return next((pid for pid, name in _descendants(self.process.pid) if name == "raylet"), None)

    def kill_raylet(self) -> int:
        """SIGKILL the raylet, as when a node vanishes; returns its pid."""
        raylet = self.raylet()
        if raylet is None:
            raise RuntimeError(f"node {self.name} has no raylet")
        _kill(raylet)
        return raylet

    def stop(self) -> None:
        """Kill every process of this node: its process group, then strays that name its folder."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        marker = str(self.temp_dir)
        for pid, (_, _, cmdline) in _processes().items():
            if any(marker in arg for arg in cmdline):
                _kill(pid)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@dataclass
class LocalCluster:
    """``head_cpus`` CPUs and ``head_resources`` on the head; worker nodes added by the test."""

    head_cpus: int = 0
    head_resources: dict[str, float] = field(default_factory=dict)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rn", dir="/tmp")))
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Every process of this cluster, and the drivers the test starts, look for this
        # cluster's State API here and not for "the" Ray on the machine (there may be others).
        self.env = {
            **os.environ,
            **FAST_FAILURE_DETECTION,
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{self.dashboard_port}",
        }
        self._start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
            ],
            self.head_cpus,
            self.head_resources,
        )

    def _start(self, name: str, args: list[str], cpus: int, resources: dict[str, float]) -> Node:
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True)
        # Each node its own worker-port range, below the ephemeral ports free_port() hands out.
        base = 20000 + (len(self.nodes) + self.port % 6 * 2) * 500
        command = [
            RAY,
            "start",
            *args,
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            "--num-gpus=0",
            f"--resources={json.dumps({'node:' + name: 1, **resources})}",
            f"--temp-dir={temp_dir}",
            "--object-store-memory=100000000",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--min-worker-port={base}",
            f"--max-worker-port={base + 499}",
            "--disable-usage-stats",
        ]
        log = open(self.root / f"{name}.log", "w")
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, process, temp_dir)
        self.nodes.append(node)
        self._wait_for(name)
        return node

    def add_node(self, name: str, cpus: int, resources: Optional[dict[str, float]] = None) -> Node:
        """A worker node joining the head (`ray start --address`); returns once the head sees it."""
        return self._start(name, [f"--address={self.address}"], cpus, resources or {})

    def alive_nodes(self) -> set[str]:
        """Names of the nodes the head counts as alive (its State API, over the dashboard)."""
        url = f"http://127.0.0.1:{self.dashboard_port}/api/v0/nodes?limit=100"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                nodes = json.load(response)["data"]["result"]["result"]
        except (OSError, ValueError, KeyError):  # the dashboard is still starting
            return set()
        return {
            key[len("node:") :]
            for node in nodes
            if node.get("state") == "ALIVE"
            for key in node.get("resources_total", {})
            if key.startswith("node:") and key[len("node:") :] in {n.name for n in self.nodes}
        }

    def _wait_for(self, name: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            node = self.nodes[-1]
            if node.process.poll() is not None:
                raise RuntimeError(f"ray start for {name} exited: {(self.root / f'{name}.log').read_text()[-2000:]}")
            if name in self.alive_nodes():
                return
            time.sleep(1.0)
        raise RuntimeError(f"node {name} did not join within {timeout:.0f} s")

    def shutdown(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)
