"""Known-answer benchmark: does alpha = N_mood/N_meta beat alpha = 0 where metadata truly
helps (world "metadata-helps"), cost where it competes (world "metadata-costs", the demo's) and
make no difference where it cannot (world "null")?

    python benchmarks/known_answer.py --world metadata-helps --seeds 5
    python benchmarks/known_answer.py --world null --seeds 5 --synth n_artists=12

Outside the study (no Ray): synthesize the world (mtlmood.synth.worlds.world_config),
prepare its log-mel features, then train the demo's model (study/configs/synthetic.yaml:
8 filters, 32 mels, 64-frame windows, lr 0.003, 30 batches per epoch, split 0.4/0.15)
with ``mtlmood.train.fit``, alpha = 0 and alpha = "auto" (labels.metadata = artist),
over ``--seeds`` training seeds (same split: paired differences).

One run per (seed, arm) serves every stopping rule. Each run trains ``--epochs`` epochs
with no early stopping while a callback scores the test split after every new best
validation score (the only epochs a rule can keep). A stopping rule only decides when to
stop and which epoch's weights to keep, and training is deterministic, so the test score
a rule would give is replayed exactly from the run's validation and test curves
(``mtlmood.stopping.stop_epoch``, then the best raw validation epoch up to there).
``--verify`` checks that claim against a real ``fit`` with the demo rule. The rules:

- ``old``: the demo's budget and the paper's rule (max 16 epochs, patience 4);
- ``new``: the same budget with min_epochs and stop_smoothing (``--new-rule``);
- ``converged``: all ``--epochs`` epochs, the best validation epoch kept.

Runs are appended to ``<work>/runs.jsonl`` and skipped when already there (resumable).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CACHE
from mtlmood.synth.plan import WORLDS

DEMO_RUN = [  # study/configs/synthetic.yaml's run section, as --set overrides
    "dataset.name=synthetic",
    "features.n_mels=32",
    "labels.metadata=artist",
    "labels.n_moods=3",
    "split.train_fraction=0.4",
    "split.validation_fraction=0.15",
    "model.n_filters=8",
    "model.n_mels=32",
    "model.segment_frames=64",
    "model.bn_momentum=0.1",
    "train.lr=0.003",
    "train.max_batches_per_epoch=30",
    "train.eval_batch_size=256",
    "train.num_threads=1",
    "train.device=cpu",
]
ARMS = {"baseline": "0", "heuristic": "auto"}
# The stopping rules replayed from each run: (max_epochs, patience, min_epochs, smoothing);
# None = the run's full length, no early stopping.
OLD_RULE = (16, 4, 0, 1)


def _parse_sets(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


def prepare(world: str, synth_sets: list[str], work: Path, workers: int) -> Path:
    """Synthesize the world and compute its features under ``work``; returns the data folder."""
    from mtlmood.cache import default_cache_dir
    from mtlmood.config import RunConfig
    from mtlmood.config_io import load_config
    from mtlmood.datasets import load_run_songs
    from mtlmood.prepare import prepare_features
    from mtlmood.synth import synthesize, world_config

    data_dir = work / "data"
    cfg = world_config(world, **_parse_sets(synth_sets))
    t0 = time.perf_counter()
    synthesize(data_dir, cfg, workers=workers)
    run = load_config(RunConfig, overrides=[*DEMO_RUN, f"dataset.root={data_dir}"])
    prepare_features(load_run_songs(run), default_cache_dir(run), run.features)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: {data_dir}", flush=True)
    return data_dir


def train_curves(data_dir: Path, arm: str, seed: int, epochs: int, extra: list[str]) -> dict[str, Any]:
    """One run of ``epochs`` epochs without early stopping: per-epoch validation and test PR-AUC."""
    from mtlmood.config import RunConfig
    from mtlmood.config_io import load_config
    from mtlmood.rundata import load_run_data
    from mtlmood.train import evaluate_split, fit

    overrides = [
        *DEMO_RUN,
        f"dataset.root={data_dir}",
        f"train.alpha={ARMS[arm]}",
        f"train.seed={seed}",
        f"train.max_epochs={epochs}",
        f"train.patience={epochs}",
        *extra,
    ]
    config = load_config(RunConfig, overrides=overrides)
    data = load_run_data(config)
    test: list[float] = []

    def score_test(result: Any, state: Any) -> None:
        # Only a new best raw validation epoch can be the one a stopping rule keeps (the
        # best so far when it stops), so the test split is scored at those alone.
        if result.is_best:
            test.append(float(evaluate_split(state.model, data, "test", config, per_label=False).scores["pr_auc"]))
        else:
            test.append(math.nan)

    t0 = time.perf_counter()
    result = fit(data, config, callback=score_test)
    return {
        "arm": arm,
        "seed": seed,
        "alpha": result.alpha,
        "val": [float(h.val["pr_auc"]) for h in result.history],
        "test": test,
        "seconds": time.perf_counter() - t0,
        "n_meta": result.n_meta,
    }


def replay(run: dict[str, Any], rule: tuple[int, int, int, int] | None) -> tuple[float, int, int]:
    """(test PR-AUC, best epoch, epochs trained) that ``rule`` would have given this run."""
    from mtlmood.stopping import stop_epoch

    val, test = run["val"], run["test"]
    if rule is None:
        last = len(val)
    else:
        max_epochs, patience, min_epochs, smoothing = rule
        val = val[:max_epochs]
        last = stop_epoch(val, patience, min_epochs, smoothing) or len(val)
    best = max(range(last), key=lambda i: (val[i], -i))  # the first best raw epoch, as fit keeps
    return test[best], best + 1, last


def summarize(runs: list[dict[str, Any]], rules: dict[str, Any]) -> str:
    """A markdown table per rule: per-seed test PR-AUC of both arms, means, SDs, paired difference."""
    lines = []
    seeds = sorted(
        {r["seed"] for r in runs if r["arm"] == "baseline"} & {r["seed"] for r in runs if r["arm"] == "heuristic"}
    )
    by = {(r["arm"], r["seed"]): r for r in runs}
    for name, rule in rules.items():
        base = [replay(by["baseline", s], rule) for s in seeds]
        heur = [replay(by["heuristic", s], rule) for s in seeds]
        diffs = [h[0] - b[0] for b, h in zip(base, heur)]
        lines.append(f"\n**{name}** (rule {rule or 'none: every epoch, best validation epoch kept'})\n")
        lines.append("| seed | baseline PR-AUC (best ep / trained) | heuristic PR-AUC (best ep / trained) | diff |")
        lines.append("|---|---|---|---|")
        for s, b, h, d in zip(seeds, base, heur, diffs):
            lines.append(f"| {s} | {b[0]:.2f} ({b[1]}/{b[2]}) | {h[0]:.2f} ({h[1]}/{h[2]}) | {d:+.2f} |")
        sd = statistics.stdev(diffs) if len(diffs) > 1 else math.nan
        se = sd / math.sqrt(len(diffs))
        bsd = statistics.stdev([b[0] for b in base]) if len(base) > 1 else math.nan
        hsd = statistics.stdev([h[0] for h in heur]) if len(heur) > 1 else math.nan
        lines.append(
            f"| **mean** | {statistics.mean(b[0] for b in base):.2f} (SD {bsd:.2f}) | "
            f"{statistics.mean(h[0] for h in heur):.2f} (SD {hsd:.2f}) | "
            f"**{statistics.mean(diffs):+.2f} ± {se:.2f}** (SE; t = {statistics.mean(diffs) / se:.1f}) |"
        )
    return "\n".join(lines)


# (max_epochs, patience, min_epochs, stop_smoothing) at the demo's budget; the first is the old rule.
CANDIDATE_RULES = [
    (16, 4, 0, 1),
    (16, 4, 8, 1),
    (16, 4, 0, 2),
    (16, 4, 0, 3),
    (16, 4, 6, 2),
    (16, 4, 8, 3),
    (16, 4, 10, 3),
]


def rule_spread(runs: list[dict[str, Any]]) -> str:
    """Per candidate stopping rule at the demo budget: mean and SD over seeds of each arm's
    test PR-AUC, epochs trained, and the paired difference (replayed, no training)."""
    lines = [
        "| rule (max, patience, min, smoothing) | baseline mean (SD) | heuristic mean (SD) | mean epochs | diff ± SE |",
        "|---|---|---|---|---|",
    ]
    by = {(r["arm"], r["seed"]): r for r in runs}
    base_seeds = sorted(s for a, s in by if a == "baseline")
    seeds = [s for s in base_seeds if ("heuristic", s) in by]
    for rule in CANDIDATE_RULES:
        base = [replay(by["baseline", s], rule) for s in base_seeds]
        heur = [replay(by["heuristic", s], rule) for s in seeds]
        diffs = [replay(by["heuristic", s], rule)[0] - replay(by["baseline", s], rule)[0] for s in seeds]
        epochs = statistics.mean([x[2] for x in base + heur])
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
        sd = [statistics.stdev([x[0] for x in arm]) if len(arm) > 1 else math.nan for arm in (base, heur)]
        heur_mean = statistics.mean(h[0] for h in heur) if heur else math.nan
        diff_mean = statistics.mean(diffs) if diffs else math.nan
        lines.append(
            f"| {rule} | {statistics.mean(b[0] for b in base):.2f} ({sd[0]:.2f}) | "
            f"{heur_mean:.2f} ({sd[1]:.2f}) | {epochs:.1f} | {diff_mean:+.2f} ± {se:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default="metadata-helps", choices=tuple(WORLDS))
    p.add_argument("--synth", nargs="*", default=[], metavar="FIELD=VALUE", help="SynthConfig changes")
    p.add_argument("--set", nargs="*", default=[], dest="sets", metavar="KEY=VALUE", help="RunConfig overrides")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=40, help="length of every run (the converged measurement)")
    p.add_argument("--new-rule", default="16,4,8,3", help="max_epochs,patience,min_epochs,stop_smoothing")
    p.add_argument("--work", type=Path, help=f"work folder (default {CACHE}/known_answer/<world>[-tag])")
    p.add_argument("--tag", default="", help="suffix of the default work folder (one per variant)")
    p.add_argument("--workers", type=int, default=1, help="synthesis processes")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="which arms to train")
    p.add_argument("--verify", action="store_true", help="check the replay against a real fit (old rule)")
    args = p.parse_args(argv)

    work = args.work or CACHE / "known_answer" / (args.world + (f"-{args.tag}" if args.tag else ""))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = prepare(args.world, args.synth, work, args.workers)
    log = work / "runs.jsonl"
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    key = (tuple(args.sets), args.epochs)
    runs = [r for r in runs if (tuple(r["sets"]), r["epochs"]) == key]
    done = {(r["arm"], r["seed"]) for r in runs}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for arm in args.arms:
            if (arm, seed) in done:
                continue
            run = train_curves(data_dir, arm, seed, args.epochs, args.sets)
            run.update(sets=list(args.sets), epochs=args.epochs)
            runs.append(run)
            with log.open("a") as fh:
                fh.write(json.dumps(run) + "\n")
            print(f"{arm:9s} seed {seed}: alpha {run['alpha']:.3g}, {run['seconds']:.0f} s", flush=True)
    new = tuple(int(x) for x in args.new_rule.split(","))
    rules = {"demo budget, old rule": OLD_RULE, "demo budget, new rule": new, "converged": None}
    if {r["arm"] for r in runs} == set(ARMS):
        print(summarize(runs, rules))
    print("\nStopping rules at the demo budget (replayed):\n")
    print(rule_spread(runs))
    if args.verify:
        verify(data_dir, runs, args.sets)
    return 0


def verify(data_dir: Path, runs: list[dict[str, Any]], sets: list[str]) -> None:
    """A real fit with the old rule must give the replayed test score of the same seed."""
    from mtlmood.config import RunConfig
    from mtlmood.config_io import load_config
    from mtlmood.rundata import load_run_data
    from mtlmood.train import fit

    run = next(r for r in runs if r["arm"] == "heuristic")
    max_epochs, patience, _, _ = OLD_RULE
    config = load_config(
        RunConfig,
        overrides=[
            *DEMO_RUN,
            f"dataset.root={data_dir}",
            "train.alpha=auto",
            f"train.seed={run['seed']}",
            f"train.max_epochs={max_epochs}",
            f"train.patience={patience}",
            *sets,
        ],
    )
    result = fit(load_run_data(config), config)
    expected = replay(run, OLD_RULE)
    assert result.test is not None
    print(
        f"verify: real fit {result.test['pr_auc']:.4f} at epoch {result.best_epoch}/{len(result.history)}, "
        f"replay {expected[0]:.4f} at {expected[1]}/{expected[2]}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
