"""The Ray Data path of ``mtlmood predict --ray / --address``: paths -> segments -> scores -> Parquet.

    from_arrow(path blocks)                        # PATHS_PER_BLOCK track locations a block
      .map_batches(decode_batch)                   # CPU tasks: open, decode the first 29 s, log-mel, segments
      .map_batches(Scorer, compute=ActorPoolStrategy(min, max), num_gpus=1 if GPUs)   # the model, once per actor
      .write_parquet(<output>.parts/ray-<run>/, min_rows_per_file=part_rows)   # merged by BatchOutput.finalize

The same functions as the local path do the work (mtlmood.batch_audio, mtlmood.features,
mtlmood.inference.segment_song, Predictor.predict_songs / make_prediction, mtlmood.records),
so both give the same rows. Resumable like the local path: the caller passes the tracks
not yet in the output or its parts, and each part file is complete or is ignored.

The decode tasks open the tracks themselves (a local path or a URI) and read only what the
decoder asks for, the first 29 s (a read task per file would read every byte of it and
move it through the object store). Tracks, checkpoint and output may be on storage every
node sees at the same path, or on an object store: the driver's store endpoint and region
(mtlmood.storage.storage_env) go to every task and actor in its runtime_env; credentials
come from each node's own environment or instance profile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from mtlmood.batch_predict import BatchOutput, BatchSummary
from mtlmood.config import FeatureConfig
from mtlmood.records import batch_record, failure_record, to_table

PATHS_PER_BLOCK = 64  # track locations per block: one decode task's share
DECODE_BATCH = 4  # files per decode call
SCORE_BATCH = 16  # songs per actor call (~9 segments each)
# Memory reserved per decode task (Ray Data measured ~340 MiB per decode worker process, most
# of it the libraries): bounds concurrent decodes on a node, and keeps Ray Data from fusing
# decoding into the scoring actors (it fuses a task map into an actor map whose remote args
# are equal), so decoding runs as CPU tasks beside the actors, never inside a GPU actor.
DECODE_MEMORY = 512 * 1024 * 1024


def start_ray(address: Optional[str] = None, num_cpus: Optional[int] = None) -> None:
    """Join a cluster (``address``, e.g. "auto") or start a local Ray; nothing when Ray is up.

    No dashboard: Ray Data needs none, and it saves seconds on a small machine.
    """
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def decode_batch(
    batch: dict[str, np.ndarray], features: FeatureConfig, segment_frames: int, mel_method: str
) -> dict[str, np.ndarray]:
    """Ray Data task: {path} -> {path, segments (float32 bytes), n_segments, n_frames, error}.

    Each track is opened where it is and only its first ``max_seconds`` are read
    (mtlmood.batch_audio). Segments travel as raw bytes (n x segment_frames x n_mels
    float32): one flat binary column, whatever each song's length. A track that cannot be
    read or decoded gets its reason in ``error`` (and no segments), never an exception:
    one bad file must not fail the block.
    """
    from mtlmood.batch_audio import failure_reason, track_features
    from mtlmood.inference import segment_song

    paths = [str(p) for p in batch["path"]]
    segments, counts, frames, errors = [], [], [], []
    for path in paths:
        try:
            feats = track_features(path, features, mel_method)  # type: ignore[arg-type]
            segs = segment_song(feats, segment_frames, features.max_frames)
        except Exception as exc:  # that file's failure, with its cause (mtlmood.batch_audio)
            segs, feats, error = np.zeros((0, segment_frames, features.n_mels), np.float32), None, failure_reason(exc)
        else:
            error = ""
        segments.append(segs.tobytes())
        counts.append(len(segs))
        frames.append(0 if feats is None else feats.shape[0])
        errors.append(error)
    return {
        "path": np.asarray(paths, dtype=object),
        "segments": np.asarray(segments, dtype=object),
        "n_segments": np.asarray(counts, dtype=np.int64),
        "n_frames": np.asarray(frames, dtype=np.int64),
        "error": np.asarray(errors, dtype=object),
    }


class Scorer:
    """Ray Data actor: loads the checkpoint once, scores batches of decoded songs into rows
    of mtlmood.records' batch schema (an Arrow table)."""

    def __init__(self, checkpoint: str, device: str, precision: str, top_k: int) -> None:
        from mtlmood.checkpoint_pointer import local_checkpoint
        from mtlmood.inference import Predictor

        # ``checkpoint`` may be a URI: every node fetches (and caches) its own copy.
        self.predictor = Predictor.from_checkpoint(local_checkpoint(checkpoint), device=device, precision=precision)
        self.top_k = top_k
        self.checkpoint_id = self.predictor.card.checkpoint_id
        self.shape = (self.predictor.segment_frames, self.predictor.feature_config.n_mels)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        rows: list[Optional[dict[str, Any]]] = []
        songs, owners = [], []
        for i, (path, raw, n, error) in enumerate(
            zip(batch["path"], batch["segments"], batch["n_segments"], batch["error"])
        ):
            if error:
                rows.append(failure_record(str(path), str(error), self.checkpoint_id))
                continue
            rows.append(None)
            songs.append(np.frombuffer(raw, dtype=np.float32).reshape(int(n), *self.shape))
            owners.append(i)
        for i, probs in zip(owners, self.predictor.predict_songs(songs)):
            prediction = self.predictor.make_prediction(
                probs, int(batch["n_segments"][i]), int(batch["n_frames"][i]), self.top_k
            )
            rows[i] = batch_record(str(batch["path"][i]), prediction, self.checkpoint_id)
        return to_table([row for row in rows if row is not None], self.predictor.mood_names)


@dataclass
class RayRun:
    """What one Ray Data run did: tracks scored or failed now, and the merged output."""

    scored: int
    failed: int
    summary: BatchSummary
    seconds: float  # building and running the dataset (Ray already up), merge included


def pool_bounds(
    use_gpu: bool, gpus: int, cpus: int, min_actors: int = 1, max_actors: int = 0, cluster: bool = False
) -> tuple[int, Optional[int]]:
    """(min, max) size of the scoring actor pool; max None = no bound but the cluster's.

    ``max_actors`` (``--actors``) wins when given. Otherwise GPU actors on a cluster are
    not capped: the pool grows while work waits and a GPU is free, and an autoscaling
    cluster adds GPU nodes for the actors Ray Data asks for, up to its own limit (the
    cap used to be the GPUs present when the job started: 1 on a cluster scaled to 0).
    On a local Ray (fixed resources) GPU actors are capped at its GPUs, CPU actors at
    half its CPUs (decoding needs the other half). ``min_actors`` start at once; on a
    cluster with no GPU yet, the first GPU actor waits for the autoscaler's node.
    """
    low = max(1, min_actors)
    if max_actors:
        return min(low, max_actors), max_actors
    if use_gpu:
        return low, (None if cluster else max(low, gpus))
    return low, max(low, cpus // 2)


def _path_blocks(paths: Sequence[str]) -> list[Any]:
    """The tracks as Arrow tables of PATHS_PER_BLOCK rows: the dataset's blocks, built without
    one Python dict per track."""
    import pyarrow as pa

    return [
        pa.table({"path": pa.array(paths[i : i + PATHS_PER_BLOCK], pa.string())})
        for i in range(0, len(paths), PATHS_PER_BLOCK)
    ]


def _failed_in(staging: str, output: BatchOutput) -> int:
    """Failure rows in a run's own parts."""
    import pyarrow.dataset as ds

    from mtlmood.batch_parts import open_sources
    from mtlmood.records import ERROR_FIELD

    sources = open_sources(staging, output.mood_names)
    return 0 if sources.empty else int(sources.dataset.count_rows(filter=ds.field(ERROR_FIELD).is_valid()))


def predict_with_ray(
    checkpoint: Union[str, Path],
    tracks: Sequence[str],
    output: BatchOutput,
    *,
    todo: Optional[Sequence[str]] = None,
    device: str = "auto",
    precision: str = "fp32",
    top_k: int = 3,
    actors: int = 0,
    min_actors: int = 1,
    cluster: bool = False,
    mel_method: str = "fast",
    retry_failed: bool = False,
    progress: bool = True,
) -> RayRun:
    """Score the tracks not yet in ``output`` (``todo``, else worked out here) with a Ray Data
    pipeline (Ray must be up: see ``start_ray``), then merge everything into the output file.
    The caller holds the output's lock (``BatchOutput.lock``).

    ``device``: "auto" = one GPU per actor when the cluster has GPUs now, else CPU; "cuda"
    asks for GPUs (an autoscaler adds GPU nodes); "cpu" never uses them. ``actors``,
    ``min_actors``, ``cluster``: the actor pool's bounds (``pool_bounds``).
    """
    import ray
    import ray.data

    from mtlmood.batch_parts import PARQUET_OPTIONS
    from mtlmood.checkpoint import read_card
    from mtlmood.checkpoint_pointer import local_checkpoint
    from mtlmood.storage import filesystem, storage_env

    started = time.perf_counter()
    card = read_card(local_checkpoint(checkpoint))
    todo = list(output.todo(tracks, retry_failed=retry_failed) if todo is None else todo)
    staging = output.staging_dir()
    if todo:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        use_gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
        low, high = pool_bounds(use_gpu, gpus, int(resources.get("CPU", 1)), min_actors, actors, cluster)
        # Workers reach the store the driver reaches (endpoint, region; never keys).
        env = storage_env()
        remote: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
        dataset: ray.data.Dataset = ray.data.from_arrow(_path_blocks(todo))
        dataset = dataset.map_batches(
            decode_batch,  # type: ignore[arg-type]  # the stubs do not know fn_kwargs fill the other parameters
            batch_size=DECODE_BATCH,
            fn_kwargs={
                "features": card.features,
                "segment_frames": card.model.segment_frames,
                "mel_method": mel_method,
            },
            num_cpus=1,
            memory=DECODE_MEMORY,
            **remote,
        )
        dataset = dataset.map_batches(
            Scorer,
            batch_size=SCORE_BATCH,
            compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
            fn_constructor_kwargs={
                "checkpoint": str(checkpoint),
                "device": "cuda" if use_gpu else "cpu",
                "precision": precision,
                "top_k": top_k,
            },
            num_cpus=1,
            num_gpus=1 if use_gpu else 0,
            **remote,
        )
        fs, path = filesystem(staging)
        dataset.write_parquet(
            path, filesystem=fs, min_rows_per_file=output.part_rows, ray_remote_args=remote, **PARQUET_OPTIONS
        )
    failed = _failed_in(staging, output) if todo else 0
    summary = output.finalize(tracks)
    return RayRun(len(todo) - failed, failed, summary, time.perf_counter() - started)
