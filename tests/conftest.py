"""Shared fixtures. Real data is found through one setting, MTLMOOD_SHARED_DATA
(default ../shared/data beside the repository); tests that need it skip with a
clear reason when it is absent (a user's fresh clone has no ../shared)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MTLMOOD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local test clusters need no token


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set MTLMOOD_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder (MTG-Jamendo, MagnaTagATune metadata, CC audio clips)."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def real_audio_dir() -> Path:
    """Real CC-licensed music clips (ogg, mp3, flac, wav)."""
    return _require(SHARED_DATA / "audio")


@pytest.fixture(scope="session")
def mtg_jamendo_dir() -> Path:
    return _require(SHARED_DATA / "mtg-jamendo")


@pytest.fixture(scope="session")
def magnatagatune_dir() -> Path:
    return _require(SHARED_DATA / "magnatagatune")
