"""The sentences of a report a reader quotes: the learning check, the primary verdict, the
split, and the verdict lines printed on the console. Every level, power and method named
in them comes from the study's config, never from a constant."""

from __future__ import annotations

import io
import json
import math
import os
from typing import Optional

import pandas as pd

from mtlmood import storage
from study.cells import Cell
from study.config import StudyConfig
from study.report.families import PRIMARY, SLOPE, method_sentence
from study.report.render import fmt_ci, fmt_p

REPORT_DIR = "report"
LEARNING_FILE = "learning.json"


def _count(rows: pd.DataFrame, start: str) -> int:
    return int(rows["verdict"].astype(str).str.startswith(start).sum())


def primary_summary(verdicts: pd.DataFrame, study: StudyConfig) -> str:
    """One paragraph on the declared primary family: what it found, how it was tested, what it could detect."""
    r = study.report
    level = 1.0 - r.confidence
    primary = verdicts[verdicts["family"] == PRIMARY]
    testable = primary[primary["p_adjusted"].notna()]
    size = int(testable.shape[0])
    cells = primary[primary["comparison"] != SLOPE]
    gain = cells[cells["comparison"] == "heuristic - baseline"]
    regret = cells[cells["comparison"] == "best alpha - heuristic"]
    how = method_sentence(r.adjust, level, r.power, size)
    parts = [f"Primary family ({', '.join(r.primary)} on {r.primary_metric}; {how})"]
    if not gain.empty:
        parts.append(
            f"the heuristic α = N_mood/N_meta gave a significant gain over the baseline in "
            f"{_count(gain, 'significant gain')} of {len(gain)} cell(s) and a significant loss in "
            f"{_count(gain, 'significant loss')}"
        )
    if not regret.empty:
        parts.append(
            f"its regret against the best α (validation, cross-fitted) was significant in "
            f"{_count(regret, 'significant')} of {len(regret)}"
        )
    text = "; ".join(parts) + "."
    mdes = pd.to_numeric(cells["mde"], errors="coerce").dropna()
    if not mdes.empty:
        text += (
            f" At this design the primary comparisons could detect differences of {mdes.min():.1f}–{mdes.max():.1f} "
            f"points with {r.power:.0%} power at the family's level; smaller true differences may be there "
            "unseen: 'no significant difference' is not 'no difference'."
        )
    text += " Every other row is secondary: adjusted in its own family and exploratory."
    return text


def primary_lines(verdicts: pd.DataFrame) -> list[str]:
    """One bullet per primary row: estimate, CI, adjusted p, verdict."""
    lines = []
    for _, row in verdicts[verdicts["family"] == PRIMARY].iterrows():
        unit = "" if row["comparison"] == SLOPE else " points"
        lines.append(
            f"- {row['cell']}: {row['comparison']} = {fmt_ci(row['estimate'], row['low'], row['high'], 2)}{unit} "
            f"({row['test']}, p adj {fmt_p(row['p_adjusted'])}): **{row['verdict']}**"
        )
    return lines


def split_sentence(study: StudyConfig, cells: dict[str, Cell], unit: str) -> str:
    """How songs were split, whether test artists were seen in training, and what the bootstrap resamples."""
    split = study.run.split
    if split.method == "official":
        how = f"the dataset's official split {split.official_split}"
    else:
        test = 1 - split.train_fraction - split.validation_fraction
        how = (
            f"a random song-level split {split.train_fraction:.0%}/{split.validation_fraction:.0%}/{test:.0%} "
            f"(seed {split.seed}; clips of one track stay together)"
        )
    values = [c.facts.get("test_songs_artist_in_train_percent") for c in cells.values()]
    shares = sorted({round(float(v)) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))})
    if shares and shares[-1] == 0:
        overlap = "artist-disjoint: no test song is by an artist seen in training"
    elif shares:
        span = f"{shares[0]}" if len(shares) == 1 else f"{shares[0]}-{shares[-1]}"
        overlap = f"{span} % of test songs are by an artist seen in training"
    else:
        overlap = "artist overlap unknown (no artist metadata)"
    return (
        f"Split: {how}; {overlap}. The song bootstrap resamples {unit} clusters. Artist and year classes "
        "(N_meta) come from the training songs only, so the heuristic N_mood/N_meta counts classes the model "
        "can learn."
    )


def _read_optional(location: str) -> Optional[bytes]:
    try:
        return storage.read_bytes(location)
    except FileNotFoundError:
        return None


def verdict_summary(run_dir: "str | os.PathLike[str]") -> str:
    """The learning check and the primary verdict lines of a written report, for the terminal."""
    learning = _read_optional(storage.join(storage.normalize(run_dir), REPORT_DIR, LEARNING_FILE))
    verdicts = _read_optional(storage.join(storage.normalize(run_dir), REPORT_DIR, "verdicts.csv"))
    lines = []
    if learning is not None:
        info = json.loads(learning)
        if info.get("warning"):
            lines.append(str(info["warning"]).replace("**", ""))
        lines.extend(f"learning check: {line}" for line in info.get("cells", []))
    if verdicts is not None and len(verdicts) > 1:
        v = pd.read_csv(io.BytesIO(verdicts))
        shown = v[v["family"] == PRIMARY] if "family" in v else v[v["metric"] == "pr_auc"]
        for _, row in shown.iterrows():
            lines.append(
                f"{row['cell']}: {row['comparison']} {row['estimate']:+.2f} "
                f"[{row['low']:+.2f}, {row['high']:+.2f}] -> {row['verdict']} (p adj {fmt_p(row['p_adjusted'])})"
            )
    return "\n".join(lines)
