"""Distributed feature preparation: `mtlmood prepare --address auto` computes songs as Ray tasks.

    from study.prepare_ray import RayTaskRunner, prepare_on_ray
    prepare_features(songs, "/data/mtg-jamendo/features", cfg, runner=RayTaskRunner())  # Ray already up
    prepare_on_ray("auto", songs, "/data/mtg-jamendo/features", cfg)  # joins the cluster, then leaves it

Only *where* songs are computed changes. ``mtlmood.prepare.prepare_features`` still
decides what to skip, names the shards, writes ``failures.csv`` and consolidates the
bank, so the cache is the same, bit for bit, as the one local processes build, and it
resumes the same way.

How it works. Songs go out in batches (``songs_per_task`` per Ray task, 1 CPU each:
enough work per task to make scheduling cheap, few enough that a lost task costs
little). Every task writes its songs' shards (atomic temp file + rename) straight to
the cache directory and returns only small ``SongOutcome`` records, so no feature
matrix crosses the object store. The driver keeps a bounded number of tasks in
flight (about twice the cluster's CPUs, re-read every few seconds so an autoscaling
cluster sees enough queued demand to grow) and collects them with ``ray.wait``:
memory stays flat whatever the dataset size.

Failures. ``compute_song`` never raises for a bad song. A task that dies anyway (a
decoder segfault, the OOM killer, a lost node) has its songs re-queued one task per
song; a song whose own task dies again is reported failed, so one bad file never
fails its neighbours.

Shared storage. Audio paths and the cache directory must name the same files on
every node (an NFS/EFS mount at the same path; see docs/RUNBOOK.md). The driver
drops a probe file into the shard folder; a task on a node that cannot see it stops
the run with one clear error instead of scattering shards over local disks.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mtlmood.config import FeatureConfig
from mtlmood.datasets.base import SongRecord
from mtlmood.errors import CacheError
from mtlmood.prepare import PrepareReport, prepare_features
from mtlmood.prepare_tasks import SongOutcome, SongTask, compute_song

SONGS_PER_TASK = 8
MIN_IN_FLIGHT = 16  # tasks queued even on a cluster that has no CPU node up yet (autoscaling from 0)
MAX_IN_FLIGHT = 2048
RESCAN_S = 10.0  # how often the in-flight bound follows the cluster's CPU count
CRASHED = "the decoder crashed (its worker process died)"  # the local pool's wording


@dataclass(frozen=True)
class BatchResult:
    """What one Ray task returns: its songs' outcomes, or ``sees_cache=False`` when the
    node it ran on cannot see the cache directory (then nothing was computed)."""

    node: str
    outcomes: list[SongOutcome] = field(default_factory=list)
    sees_cache: bool = True


def compute_batch(
    tasks: Sequence[SongTask], probe: str, compute: Callable[[SongTask], SongOutcome] = compute_song
) -> BatchResult:
    """Body of one Ray task: check the shared cache is visible here, then compute each song."""
    node = socket.gethostname()
    if not os.path.exists(probe):
        return BatchResult(node, sees_cache=False)
    # One BLAS/OpenMP thread per task: parallelism comes from the tasks (Ray also sets
    # OMP_NUM_THREADS, but librosa's numba/BLAS pools may already be up in a reused worker).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return BatchResult(node, [compute(task) for task in tasks])


def task_error(exc: BaseException) -> str:
    """The failure reason of a song whose own Ray task died."""
    from ray.exceptions import NodeDiedError, OutOfMemoryError, WorkerCrashedError

    if isinstance(exc, WorkerCrashedError):
        return CRASHED
    if isinstance(exc, OutOfMemoryError):
        return "its Ray worker ran out of memory (killed by Ray's memory monitor)"
    if isinstance(exc, NodeDiedError):
        return "its Ray node died twice while computing it"
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"its Ray task failed: {type(exc).__name__}: {first_line}"[:500]


def not_shared_error(node: str, shard_dir: Path) -> CacheError:
    return CacheError(
        f"Ray node {node} cannot see the feature cache {shard_dir}: the cache and the audio must be on "
        "a filesystem every node mounts at the same path (see docs/RUNBOOK.md); with a ray:// address "
        "the machine running `mtlmood prepare` must mount it too"
    )


class RayTaskRunner:
    """A ``mtlmood.prepare_tasks.TaskRunner`` that computes songs as Ray tasks (Ray must be initialised).

    ``cpus_per_task`` CPUs per task (decoding + a log-mel is single-threaded work);
    ``max_in_flight`` caps the tasks queued at once (0 = about twice the cluster's CPUs);
    ``compute`` is the per-song function (``compute_song``; tests pass one that crashes).
    """

    def __init__(
        self,
        songs_per_task: int = SONGS_PER_TASK,
        cpus_per_task: float = 1.0,
        max_in_flight: int = 0,
        compute: Callable[[SongTask], SongOutcome] = compute_song,
    ) -> None:
        import ray

        if songs_per_task < 1:
            raise ValueError(f"songs_per_task must be >= 1, got {songs_per_task}")
        if cpus_per_task <= 0:
            raise ValueError(f"cpus_per_task must be > 0, got {cpus_per_task}")
        if not ray.is_initialized():
            raise RuntimeError("RayTaskRunner needs ray.init() first (see study.ray_session.init_ray)")
        self.songs_per_task = songs_per_task
        self.cpus_per_task = cpus_per_task
        self.max_in_flight = max_in_flight
        self.compute = compute
        self.workers = int(ray.cluster_resources().get("CPU", 0) // cpus_per_task)
        self.description = (
            f"Ray tasks of {songs_per_task} songs, {self.workers} CPU slots "
            f"when it started{' (autoscaling)' if self.workers == 0 else ''}"
        )

    def _in_flight_bound(self) -> int:
        if self.max_in_flight > 0:
            return self.max_in_flight
        import ray

        slots = ray.cluster_resources().get("CPU", 0) / self.cpus_per_task
        # Twice the slots: every CPU has its next task waiting, and the queued rest is the
        # demand an autoscaler reacts to.
        return int(min(MAX_IN_FLIGHT, max(MIN_IN_FLIGHT, math.ceil(2 * slots))))

    def __call__(self, tasks: Sequence[SongTask]) -> Iterator[SongOutcome]:
        """Yield one outcome per task as Ray tasks finish (see the module docstring)."""
        import ray
        from ray.exceptions import RayError

        if not tasks:
            return
        # Remote processes have other working directories: send absolute paths, and hand
        # the outcomes back with the paths as given (failures.csv then reads as locally).
        given = {t.song_id: t.audio_path for t in tasks}
        tasks = [
            replace(t, audio_path=os.path.abspath(t.audio_path), shard_path=os.path.abspath(t.shard_path))
            for t in tasks
        ]
        shard_dir = Path(tasks[0].shard_path).parent
        # Named like the temp files prepare removes at its start, in case this driver dies.
        probe = shard_dir / f".probe-{secrets.token_hex(6)}.tmp"
        probe.write_text(socket.gethostname())
        remote = ray.remote(compute_batch)
        pending: deque[tuple[list[SongTask], bool]] = deque(
            (list(tasks[i : i + self.songs_per_task]), False) for i in range(0, len(tasks), self.songs_per_task)
        )
        in_flight: dict[Any, tuple[list[SongTask], bool]] = {}
        bound, rescan_at = self._in_flight_bound(), time.monotonic() + RESCAN_S
        try:
            while pending or in_flight:
                if time.monotonic() >= rescan_at:
                    bound, rescan_at = self._in_flight_bound(), time.monotonic() + RESCAN_S
                while pending and len(in_flight) < bound:
                    batch, isolated = pending.popleft()
                    # A batch gets no Ray retry: if it dies, its songs are re-run one per task
                    # below. A lone song gets one retry, so a lost node does not fail it.
                    ref = remote.options(
                        num_cpus=self.cpus_per_task,
                        max_retries=1 if isolated else 0,
                        name="mtlmood-prepare-song" if isolated else "mtlmood-prepare-batch",
                    ).remote(batch, str(probe), self.compute)  # type: ignore[call-arg]  # Ray's stubs count 1 arg
                    in_flight[ref] = (batch, isolated)
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=RESCAN_S)
                for ref in ready:
                    batch, isolated = in_flight.pop(ref)
                    try:
                        result: BatchResult = ray.get(ref)
                    except RayError as exc:
                        if isolated:
                            song_id = batch[0].song_id
                            yield SongOutcome(song_id, given[song_id], error=task_error(exc))
                        else:
                            # Which song took the worker down is unknown: re-run each on its own, first.
                            pending.extendleft(([task], True) for task in reversed(batch))
                        continue
                    if not result.sees_cache:
                        raise not_shared_error(result.node, shard_dir)
                    for outcome in result.outcomes:
                        yield replace(outcome, audio_path=given[outcome.song_id])
        finally:
            # Interrupted (Ctrl-C, an error): stop queued work; finished shards are kept and
            # the next run skips them. A task cancelled mid-song leaves only a temp file.
            for ref in in_flight:
                ray.cancel(ref)
            probe.unlink(missing_ok=True)


def connect(address: str) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://host:10001``, ``host:6379``);
    returns True when this call connected (the caller then disconnects)."""
    import ray

    if ray.is_initialized():
        return False
    # Decoder warnings from thousands of tasks would drown the progress bar; failures
    # come back as outcomes and go to failures.csv.
    ray.init(address=address, log_to_driver=False)
    return True


def prepare_on_ray(
    address: str,
    songs: Sequence[SongRecord],
    cache_dir: str | os.PathLike[str],
    cfg: FeatureConfig,
    songs_per_task: int = SONGS_PER_TASK,
    max_in_flight: int = 0,
    progress: bool = True,
    rebuild: bool = False,
) -> PrepareReport:
    """``prepare_features`` with a :class:`RayTaskRunner` on the cluster at ``address``
    (what `mtlmood prepare --address` runs). Disconnects afterwards only from a Ray this
    call connected to: a caller that already runs Ray keeps it."""
    connected = connect(address)
    try:
        runner = RayTaskRunner(songs_per_task=songs_per_task, max_in_flight=max_in_flight)
        return prepare_features(songs, cache_dir, cfg, progress=progress, rebuild=rebuild, runner=runner)
    finally:
        if connected:
            import ray

            ray.shutdown()
