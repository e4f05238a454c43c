"""Simulated cells for the report's statistics: runs whose test predictions have a known
planted gain, seed noise shared by the arms of a seed, run noise, song and cluster effects.

The logit a run gives song i for label l is

    (separation of the run + arm x song effect + arm x cluster effect) * y_il
    + difficulty_il + noise_ril

* difficulty: a song-level latent shared by every run of every arm (cancels in
  paired differences);
* separation = beta + planted gain of the arm + a seed effect shared by the
  arms trained with that seed + a run effect: a run's skill varies from seed to
  seed. (A pure shift of a run's logits would not change any rank metric, so
  seed noise is planted as a random change of the run's separation.)
* arm x song / arm x cluster effects: fixed across the seeds of an arm, they
  make an arm better on some songs (or artists) and worse on others -- test-set
  noise that no number of seeds averages out;
* noise: per run and song.

Used by tests/study/test_report_verdict_simulation.py, test_pooled_simulation.py and
test_power_forecast.py (a helper module, not a test module: tests never import each other).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mtlmood.metrics import macro_metric
from study.report.bootstrap import ArmRuns
from study.report.verdicts import CellEvidence

PREVALENCE = np.array([0.15, 0.25, 0.35])
SEEDS = (0, 1, 2)
N_SONGS = 300


@dataclass(frozen=True)
class Noise:
    """Parameters of the simulated runs (see the module docstring)."""

    beta: float = 1.5  # base separation of positives from negatives (logit units)
    tau_seed: float = 0.2  # seed effect on the separation, shared by the arms of one seed
    tau_run: float = 0.2  # run effect on the separation
    sd_difficulty: float = 1.0
    sd_noise: float = 1.0
    sd_arm_song: float = 0.3
    sd_arm_cluster: float = 0.0
    songs_per_cluster: int = 1


REALISTIC = Noise()
CLUSTERED = Noise(tau_seed=0.05, tau_run=0.05, sd_noise=0.5, sd_arm_cluster=1.0, songs_per_cluster=10)


def _labels(rng: np.random.Generator, n: int, noise: Noise) -> tuple[np.ndarray, np.ndarray]:
    """(y (n, L), cluster of each song); songs of a cluster share their mood propensities."""
    n_clusters_ = -(-n // noise.songs_per_cluster)
    clusters = np.repeat(np.arange(n_clusters_), noise.songs_per_cluster)[:n]
    logit = np.log(PREVALENCE / (1 - PREVALENCE)) + (
        0.8 * rng.normal(size=(n_clusters_, PREVALENCE.size)) if noise.songs_per_cluster > 1 else 0.0
    )
    y = (
        rng.random((n, PREVALENCE.size))
        < 1 / (1 + np.exp(-np.broadcast_to(logit, (n_clusters_, PREVALENCE.size))[clusters]))
    ).astype(int)
    y[0], y[1] = 1, 0  # every label scorable
    return y, clusters


def _run_probs(
    rng: np.random.Generator,
    y: np.ndarray,
    separation: np.ndarray,
    arm_effect: np.ndarray,
    difficulty: np.ndarray,
    noise: Noise,
) -> np.ndarray:
    logit = (separation + arm_effect) * y + difficulty + noise.sd_noise * rng.normal(size=y.shape)
    return 1 / (1 + np.exp(-logit))


def simulate_cell(
    rng: np.random.Generator,
    gains: dict[str, float],
    noise: Noise = REALISTIC,
    n: int = N_SONGS,
    seeds: tuple[int, ...] = SEEDS,
) -> CellEvidence:
    """One cell: arms with the given planted gains (logit separation), 3 seeds each, validation tracking skill."""
    y, clusters = _labels(rng, n, noise)
    n_labels = y.shape[1]
    difficulty = noise.sd_difficulty * rng.normal(size=y.shape)
    seed_effect = noise.tau_seed * rng.normal(size=(len(seeds), n_labels))
    alphas = {"baseline": 0.0, "heuristic": 0.5, "x3": 1.5, "x1/3": 0.5 / 3, "x9": 4.5, "x1/9": 0.5 / 9, "tuned": 0.8}
    alphas["learned"] = 0.6
    arms, val = {}, {}
    for name, gain in gains.items():
        arm_effect = (
            noise.sd_arm_song * rng.normal(size=y.shape)
            + noise.sd_arm_cluster * rng.normal(size=(clusters.max() + 1, n_labels))[clusters]
        )
        runs, scores = [], []
        for s in range(len(seeds)):
            separation = noise.beta + gain + seed_effect[s] + noise.tau_run * rng.normal(size=n_labels)
            runs.append(_run_probs(rng, y, separation, arm_effect, difficulty, noise))
            # Validation (other songs) sees the run's skill plus its own noise: selecting on it is optimistic.
            scores.append(40 + 10 * (separation.mean() - noise.beta) + 0.5 * rng.normal())
        arms[name] = ArmRuns(seeds, np.stack(runs))
        val[name] = np.array(scores)
    return CellEvidence("simulated", 0.5, y, clusters, arms, {k: alphas[k] for k in gains}, val)


def true_gain(gain: float, noise: Noise = REALISTIC, n: int = 50_000, draws: int = 16, seed: int = 99) -> float:
    """Population PR-AUC gain (points) of a planted separation gain: mean over seeds, infinite test set.

    Common random numbers: each draw of seed effects, arm x song effects and
    noise is scored with and without the gain on one huge test set, so the
    difference is precise with few draws.
    """
    rng = np.random.default_rng(seed)
    y, _ = _labels(rng, n, replace(noise, songs_per_cluster=1))
    diffs = []
    for _ in range(draws):
        difficulty = noise.sd_difficulty * rng.normal(size=y.shape)
        arm_effect = noise.sd_arm_song * rng.normal(size=y.shape)
        separation = (
            noise.beta + noise.tau_seed * rng.normal(size=y.shape[1]) + noise.tau_run * rng.normal(size=y.shape[1])
        )
        e = noise.sd_noise * rng.normal(size=y.shape)
        score = [
            float(macro_metric(y, 1 / (1 + np.exp(-((separation + g + arm_effect) * y + difficulty + e)))))
            for g in (gain, 0.0)
        ]
        diffs.append(score[0] - score[1])
    return float(np.mean(diffs))
