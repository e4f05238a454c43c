"""Which processes run an application's replicas: for the replica-death test, the soak benchmark
and operators who want to watch a replica's memory.

    for replica in running_replicas("mtlmood", "MoodIngress"):
        print(replica.replica_id, replica.pid)
    app_processes("mtlmood")    # {"MoodRouter <id>": pid, "MoodIngress <id>": pid, "proxy <node>": pid}

Read from the Serve controller (the same details ``serve status`` shows), so it needs a
connected Ray with Serve running but not the dashboard. ``rss_bytes(pid)`` reads a local
process's resident memory (psutil, which Ray ships; /proc as a fallback).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class ReplicaProcess:
    """One running replica: its Serve id, actor name and process id (on node ``node_id``)."""

    replica_id: str
    actor_name: str
    pid: int
    node_id: str


def _details() -> Any:
    """The controller's ServeInstanceDetails (what `serve status` shows, with replica pids)."""
    from ray.serve.context import _get_global_client  # the controller handle `serve status` uses too
    from ray.serve.schema import ServeInstanceDetails

    client = _get_global_client()  # raises when Serve is not running
    assert client is not None
    return ServeInstanceDetails(**client.get_serve_details())


def _running(details: Any, app: str, deployment: str) -> list[ReplicaProcess]:
    application = details.applications.get(app)
    if application is None or deployment not in application.deployments:
        return []
    return [
        ReplicaProcess(r.replica_id, r.actor_name or "", int(r.pid), r.node_id or "")
        for r in application.deployments[deployment].replicas
        if str(r.state.value) == "RUNNING" and r.pid is not None
    ]


def running_replicas(app: str, deployment: str) -> list[ReplicaProcess]:
    """The RUNNING replicas of ``deployment`` in application ``app`` (empty when there are none)."""
    return _running(_details(), app, deployment)


def app_processes(app: str) -> dict[str, int]:
    """Label -> pid of every running replica of ``app`` ("MoodIngress <replica id>", ...) and of
    every Serve proxy ("proxy <node id prefix>"): what a soak watches."""
    import ray

    details = _details()
    found: dict[str, int] = {}
    application = details.applications.get(app)
    for name in application.deployments if application is not None else ():
        for replica in _running(details, app, name):
            found[f"{name} {replica.replica_id}"] = replica.pid
    for node_id, proxy in details.proxies.items():
        # Serve's details give a proxy's actor id but not its pid; the GCS actor table has it.
        entry = ray._private.state.actors(actor_id=proxy.actor_id) if proxy.actor_id else {}
        if entry.get("Pid"):
            found[f"proxy {node_id[:8]}"] = int(entry["Pid"])
    return found


def rss_bytes(pid: int) -> Optional[int]:
    """Resident memory of a process on this machine, or None when it is gone."""
    try:
        import psutil  # Ray puts its bundled copy on sys.path once ray is imported

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        pass
    except Exception:  # psutil.NoSuchProcess, AccessDenied
        return None
    try:
        with open(f"/proc/{pid}/statm") as handle:
            pages = int(handle.read().split()[1])  # resident pages
    except (OSError, ValueError, IndexError):
        return None
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")
