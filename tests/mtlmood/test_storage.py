"""mtlmood.storage: one set of file operations for local paths and object store URIs (S3
here, against a local moto server); mtlmood.remote_cache: downloaded copies and where URI
locks live; mtlmood.checkpoint_pointer: a checkpoint or a study folder as a local checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers.s3_server import s3_server
from mtlmood import checkpoint_pointer, remote_cache, storage
from mtlmood.checkpoint import CARD_FILE, ModelCard, load_checkpoint, read_card
from mtlmood.config import FeatureConfig, ModelConfig
from mtlmood.errors import CheckpointError, ConfigError
from mtlmood.model import MoodCNN
from mtlmood.runlock import RunDirInUse, RunLock
from mtlmood.synth.checkpoints import untrained_checkpoint

BUCKET = "storage-test"
CFG = ModelConfig(n_filters=4, n_blocks=2, segment_frames=16, n_mels=8)


@pytest.fixture(scope="module")
def s3() -> dict[str, str]:
    with s3_server(BUCKET) as env:
        yield env


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(remote_cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(params=["local", "s3"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh run folder: a local path, or a prefix in the test bucket."""
    if request.param == "local":
        return str(tmp_path / "run")
    request.getfixturevalue("s3")
    return f"s3://{BUCKET}/{tmp_path.name}/run"


def _checkpoint(directory: Path) -> ModelCard:
    """A tiny untrained baseline checkpoint in ``directory``; returns its card."""
    path = untrained_checkpoint(
        directory,
        model=CFG,
        moods=["calm", "happy", "dark"],
        meta_names=[],
        alpha=0.0,
        features=FeatureConfig(n_mels=8),
    )
    return read_card(path)


# ------------------------------------------------------------------ names
def test_uri_names_join_and_relative_paths_keep_the_scheme_and_options() -> None:
    assert storage.is_uri("s3://b/x") and not storage.is_uri("/x") and not storage.is_uri("file:///x")
    assert storage.normalize("file:///tmp/a%20b") == "/tmp/a b"
    assert storage.normalize("s3://b/x/") == "s3://b/x" and storage.normalize("s3://") == "s3://"
    assert storage.join("s3://b/studies/", "s1", "runs/a", "result.json") == "s3://b/studies/s1/runs/a/result.json"
    opts = "s3://b/studies?endpoint_override=h:9000&scheme=http"
    assert storage.join(opts, "s1") == "s3://b/studies/s1?endpoint_override=h:9000&scheme=http"
    assert storage.name(storage.join(opts, "s1")) == "s1"
    assert storage.parent(storage.join(opts, "s1")) == opts
    assert storage.join("/a/b", "c") == "/a/b/c" and storage.name("/a/b") == "b" and storage.parent("/a/b") == "/a"
    assert storage.relative_to("s3://b/s/runs/x/model", "s3://b/s") == "runs/x/model"
    assert storage.relative_to("s3://b/other/model", "s3://b/s") == "s3://b/other/model"  # not below: unchanged
    assert storage.relative_to("/a/b/c", "/a") == "b/c" and storage.relative_to("/x/y", "/a") == "/x/y"


@pytest.mark.parametrize(
    "location, words",
    [("/mnt/shared/studies", []), ("s3://bucket/studies", []), ("gs://b/x", []), ("ftp://host/x", ["ftp", "s3://"])],
)
def test_location_problem_names_what_is_wrong(location: str, words: list[str]) -> None:
    problem = storage.location_problem(location)
    assert bool(problem) == bool(words) and all(w in problem for w in words), problem
    assert "bucket" in storage.location_problem("s3:///x")


# ------------------------------------------------------------------ files
def test_files_round_trip_the_same_way_on_disk_and_on_s3(base: str) -> None:
    assert not storage.exists(base) and storage.list_files(base) == []
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(base, "nope.json"))
    storage.write_bytes(storage.join(base, "a", "b.bin"), b"\x00\x01")
    storage.write_json(storage.join(base, "c.json"), {"x": 1})
    storage.append_text(storage.join(base, "logs", "t.log"), "one\n")
    storage.append_text(storage.join(base, "logs", "t.log"), "two\n")
    assert storage.read_bytes(storage.join(base, "a", "b.bin")) == b"\x00\x01"
    assert storage.read_json_object(storage.join(base, "c.json"), ConfigError) == {"x": 1}
    assert storage.read_text(storage.join(base, "logs", "t.log")) == "one\ntwo\n"
    assert (
        storage.is_dir(base)
        and storage.is_dir(storage.join(base, "a"))
        and storage.is_file(storage.join(base, "c.json"))
    )
    assert storage.list_files(base) == ["a/b.bin", "c.json", "logs/t.log"]

    storage.write_text(storage.join(base, "bad.json"), "[1]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        storage.read_json_object(storage.join(base, "bad.json"), ConfigError)

    storage.move(storage.join(base, "a"), storage.join(base, "a.failed"))
    assert storage.list_files(base) == ["a.failed/b.bin", "bad.json", "c.json", "logs/t.log"]
    storage.remove(storage.join(base, "a.failed"))
    storage.remove(storage.join(base, "c.json"))
    storage.remove(storage.join(base, "never-there"))
    assert storage.list_files(base) == ["bad.json", "logs/t.log"]


def test_upload_writes_the_marker_last_and_download_gets_everything(base: str, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "model").mkdir(parents=True)
    for name in ("result.json", "a.npz", "model/weights.pt"):
        (source / name).write_text(name)
    order: list[str] = []
    real = storage.write_bytes

    def spy(location: str, data: bytes) -> None:
        order.append(storage.relative_to(location, base))
        real(location, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storage, "write_bytes", spy)
        storage.upload_dir(source, base, last=["result.json"])
    assert order[-1] == "result.json" and sorted(order) == ["a.npz", "model/weights.pt", "result.json"]
    assert storage.download_dir(base, tmp_path / "back") == ["a.npz", "model/weights.pt", "result.json"]
    assert (tmp_path / "back" / "model" / "weights.pt").read_text() == "model/weights.pt"


def test_an_s3_uri_may_carry_its_endpoint_itself(s3: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS_ENDPOINT_URL: pyarrow's URI options name the store (what Ray reads too)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    endpoint = s3["AWS_ENDPOINT_URL"].removeprefix("http://")
    base = f"s3://{BUCKET}/opts?endpoint_override={endpoint}&scheme=http"
    storage.write_text(storage.join(base, "x.txt"), "hi")
    assert storage.read_text(storage.join(base, "x.txt")) == "hi"
    assert storage.list_files(base) == ["x.txt"]


def test_storage_env_forwards_the_endpoint_and_region_never_keys(s3: dict[str, str]) -> None:
    env = storage.storage_env()
    assert env == {"AWS_ENDPOINT_URL": s3["AWS_ENDPOINT_URL"], "AWS_DEFAULT_REGION": "us-east-1"}


# ------------------------------------------------------------------ local copies and checkpoints
def test_local_copy_downloads_once_and_again_only_when_the_files_change(s3: dict[str, str], cache: Path) -> None:
    remote = f"s3://{BUCKET}/copy/model"
    storage.write_text(storage.join(remote, "weights.pt"), "v1")
    first = remote_cache.local_copy(remote)
    assert first.is_relative_to(cache) and (first / "weights.pt").read_text() == "v1"
    reads: list[str] = []
    real = storage.read_bytes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storage, "read_bytes", lambda loc: reads.append(loc) or real(loc))
        assert remote_cache.local_copy(remote) == first and reads == []  # unchanged: no download
    storage.write_text(storage.join(remote, "weights.pt"), "version 2")
    assert (remote_cache.local_copy(remote) / "weights.pt").read_text() == "version 2"
    assert [p.name for p in first.parent.iterdir() if p.name.startswith(".")] == []  # no staging left
    with pytest.raises(FileNotFoundError, match="nothing at"):
        remote_cache.local_copy(f"s3://{BUCKET}/copy/none")
    assert remote_cache.local_copy(str(cache)) == cache.resolve()  # a local folder is itself


@pytest.mark.parametrize("where", ["local", "s3"])
def test_local_checkpoint_of_a_checkpoint_or_a_study_folder(where: str, tmp_path: Path, request) -> None:
    """A study folder's best_checkpoint.json names its checkpoints relative to the folder."""
    local_study = tmp_path / "study"
    card = _checkpoint(local_study / "runs" / "curve" / "3-none" / "baseline" / "seed-1" / "model")
    (local_study / checkpoint_pointer.BEST_CHECKPOINTS_FILE).write_text(
        json.dumps(
            {
                "default_cell": "3|none",
                "checkpoint": "runs/curve/3-none/baseline/seed-1/model",
                "cells": {"3|none": {"checkpoint": "runs/curve/3-none/baseline/seed-1/model"}},
            }
        )
    )
    if where == "local":
        study = str(local_study)
    else:
        request.getfixturevalue("s3")
        study = f"s3://{BUCKET}/{tmp_path.name}/study"
        storage.upload_dir(local_study, study)
    for location, cell in (
        (study, ""),
        (study, "3|none"),
        (storage.join(study, "runs/curve/3-none/baseline/seed-1/model"), ""),
    ):
        path = checkpoint_pointer.local_checkpoint(location, cell)
        model, loaded = load_checkpoint(path)
        assert loaded.checkpoint_id == card.checkpoint_id and isinstance(model, MoodCNN)
    expected = storage.join(study, "runs/curve/3-none/baseline/seed-1/model")
    assert checkpoint_pointer.checkpoint_location(study) == (expected if where == "s3" else str(Path(expected)))
    with pytest.raises(ConfigError, match="cell '9|artist' is not in"):
        checkpoint_pointer.local_checkpoint(study, "9|artist")
    with pytest.raises(CheckpointError):
        checkpoint_pointer.local_checkpoint(storage.join(study, "runs"))  # a folder, not a checkpoint
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint_pointer.local_checkpoint(storage.join(study, "missing"))


def test_a_checkpoint_is_complete_only_once_its_card_is_there(base: str, tmp_path: Path) -> None:
    """An upload cut off before the card (upload_dir writes it last) is refused, naming the
    file save_checkpoint writes; once the card is there the copy loads as the same model."""
    card = _checkpoint(tmp_path / "ckpt")
    remote = storage.join(base, "model")
    for path in sorted((tmp_path / "ckpt").iterdir()):
        if path.name != CARD_FILE:
            storage.write_bytes(storage.join(remote, path.name), path.read_bytes())
    with pytest.raises(CheckpointError, match=f"is not a checkpoint \\(no {CARD_FILE}; an interrupted upload"):
        checkpoint_pointer.local_checkpoint(remote)
    storage.write_bytes(storage.join(remote, CARD_FILE), (tmp_path / "ckpt" / CARD_FILE).read_bytes())
    model, loaded = load_checkpoint(checkpoint_pointer.local_checkpoint(remote))
    assert loaded.checkpoint_id == card.checkpoint_id and isinstance(model, MoodCNN) and model.n_meta == 0


# ------------------------------------------------------------------ locks
def test_a_uri_run_is_locked_on_this_machine_under_the_cache(cache: Path) -> None:
    uri = "s3://bucket/studies/s1"
    lock_dir = remote_cache.lock_directory(uri)
    assert lock_dir == cache / "locks" / "s3" / "bucket" / "studies" / "s1"
    assert remote_cache.lock_directory("/mnt/x") == Path("/mnt/x")
    with RunLock(lock_dir):
        with pytest.raises(RunDirInUse):
            RunLock(remote_cache.lock_directory(uri + "/")).acquire()
    assert not lock_dir.exists()  # the lock made the folder and took it away again
    assert os.listdir(cache / "locks" / "s3" / "bucket" / "studies") == []
