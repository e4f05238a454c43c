"""A study's relative paths are made absolute against the directory the command was typed in,
once, before anything reaches Ray (the end-to-end study, test_study_s3.py, types a relative
dataset path; its storage is a bucket, so relative storage is checked here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.config import load_study_config


def test_relative_storage_and_dataset_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    study = load_study_config("synthetic", ["storage_path=studies", "run.dataset.root=data", "name=here"])
    assert study.storage_path == str(tmp_path / "studies")
    assert study.run_dir == str(tmp_path / "studies" / "here")
    assert study.run.dataset.root == str(tmp_path / "data")
    on_s3 = load_study_config("synthetic", ["storage_path=s3://bucket/studies", "run.dataset.root=data"])
    assert on_s3.storage_path == "s3://bucket/studies" and on_s3.run.dataset.root == str(tmp_path / "data")
