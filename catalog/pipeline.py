"""The Ray Data path of ``mtlmood predict --ray / --address``: files -> segments -> scores -> Parquet.

    read_binary_files(paths)                       # bytes + path, FILES_PER_BLOCK files a block
      .map_batches(decode_batch)                   # CPU tasks: decode, log-mel, 187-frame segments
      .map_batches(Scorer, compute=ActorPoolStrategy(...), num_gpus=1 if GPUs)   # the model, loaded once per actor
      .write_parquet(<output>.parts/ray-<run>/)    # part files, merged by BatchOutput.finalize

The same functions as the local path do the work (mtlmood.features, mtlmood.inference.segment_song,
Predictor.predict_songs / make_prediction, mtlmood.records), so both give the same rows.
Resumable like the local path: tracks already in the output or its parts are left out
before the dataset is built, and each finished block is a complete Parquet file (an
unfinished one has no footer and is ignored on the next run).

On a cluster the audio files, the checkpoint and the output's folder must be on storage
every node sees at the same path (the decode tasks open the files; the write tasks write
the parts there).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from mtlmood.batch_predict import BatchOutput, BatchSummary
from mtlmood.config import FeatureConfig
from mtlmood.records import batch_record, failure_record, to_table

FILES_PER_BLOCK = 16  # files per read block: the granularity of part files, hence of resuming
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
    """Ray Data task: {bytes, path} -> {path, segments (float32 bytes), n_segments, n_frames, error}.

    Segments travel as raw bytes (n x segment_frames x n_mels float32): one flat binary
    column, whatever each song's length. A file that cannot be decoded gets its reason in
    ``error`` (and no segments), never an exception: one bad file must not fail the block.
    """
    from mtlmood.errors import AudioDecodeError
    from mtlmood.features import features_from_bytes
    from mtlmood.inference import segment_song

    paths = [str(p) for p in batch["path"]]
    segments, counts, frames, errors = [], [], [], []
    for path, data in zip(paths, batch["bytes"]):
        try:
            feats = features_from_bytes(bytes(data), features, path, mel_method)  # type: ignore[arg-type]
            segs = segment_song(feats, segment_frames, features.max_frames)
        except AudioDecodeError as exc:
            segs, feats, error = np.zeros((0, segment_frames, features.n_mels), np.float32), None, exc.reason
        except Exception as exc:  # anything else on one file is still that file's failure
            segs, feats, error = np.zeros((0, segment_frames, features.n_mels), np.float32), None, f"{exc!r}"
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


def _unreadable(paths: Sequence[str]) -> dict[str, str]:
    """path -> reason for the tracks the read tasks could not open (they would fail the whole read)."""
    bad = {}
    for path in paths:
        if not os.path.exists(path):
            bad[path] = "file not found"
        elif not os.path.isfile(path):
            bad[path] = "not a regular file"
        elif not os.access(path, os.R_OK):
            bad[path] = "cannot read the file: permission denied"
        elif os.path.getsize(path) == 0:
            bad[path] = "the file is empty (0 bytes)"
    return bad


def predict_with_ray(
    checkpoint: Union[str, Path],
    tracks: Sequence[str],
    output: BatchOutput,
    *,
    device: str = "auto",
    precision: str = "fp32",
    top_k: int = 3,
    actors: int = 0,
    mel_method: str = "fast",
    retry_failed: bool = False,
    progress: bool = True,
) -> RayRun:
    """Score the tracks not yet in ``output`` with a Ray Data pipeline (Ray must be up: see
    ``start_ray``), then merge everything into the output file.

    ``device``: "auto" = one GPU per actor when the cluster has GPUs now, else CPU; "cuda"
    asks for GPUs (an autoscaler adds GPU nodes); "cpu" never uses them. ``actors``: the
    actor pool's maximum size (0 = one per GPU, or half the CPUs on a CPU cluster).
    """
    import ray
    import ray.data

    from mtlmood.checkpoint import read_card
    from mtlmood.checkpoint_pointer import local_checkpoint

    started = time.perf_counter()
    card = read_card(local_checkpoint(checkpoint))
    todo = output.todo(tracks, retry_failed=retry_failed)
    bad = _unreadable(todo)
    output.write_part([failure_record(p, reason, card.checkpoint_id) for p, reason in bad.items()])
    readable = [p for p in todo if p not in bad]
    if readable:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        use_gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
        pool = actors or (max(1, gpus) if use_gpu else max(1, int(resources.get("CPU", 1)) // 2))
        dataset = ray.data.read_binary_files(
            readable, include_paths=True, override_num_blocks=math.ceil(len(readable) / FILES_PER_BLOCK)
        )
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
        )
        dataset = dataset.map_batches(
            Scorer,
            batch_size=SCORE_BATCH,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool),
            fn_constructor_kwargs={
                "checkpoint": str(checkpoint),
                "device": "cuda" if use_gpu else "cpu",
                "precision": precision,
                "top_k": top_k,
            },
            num_cpus=1,
            num_gpus=1 if use_gpu else 0,
        )
        dataset.write_parquet(str(output.staging_dir()))
    summary = output.finalize(tracks)
    attempted = set(todo)
    failed = sum(1 for path, _ in summary.failures if path in attempted)
    return RayRun(len(todo) - failed, failed, summary, time.perf_counter() - started)
