"""MODEL_CARD.md: the human-readable card of a checkpoint, rendered from its model_card.json.

    write_model_card("runs/train")                     # -> runs/train/MODEL_CARD.md
    write_study_model_cards("runs/studies/my-study")   # one per cell's best checkpoint

It says what the model is for, what it was trained on (labels, metadata, α), how well
it scored, its limitations, the preprocessing a caller must reproduce and how to cite
the paper. Every number comes from the checkpoint's own card (a small test config's
32 mel bands are printed as 32, not as the paper's 96), so nothing here is hard-coded
but the paper's defaults that the card is compared against.

Checkpoints chosen by an α study get the study's evidence too: the study run directory
is found by walking up from the checkpoint to a ``best_checkpoint.json`` that names it;
the interval over seeds of the checkpoint's arm is read from that run's
``report/curves.csv`` (and its level from ``study_config.yaml``). Those are files the
study writes (mtlmood imports no study code); when they are missing or hold no row for
the arm, the card says so plainly.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from mtlmood.checkpoint import ModelCard, read_card
from mtlmood.config import FeatureConfig, ModelConfig
from mtlmood.errors import MtlmoodError
from mtlmood.fileio import atomic_write_text, read_json_object
from mtlmood.filenames import BEST_CHECKPOINTS_FILE

if TYPE_CHECKING:
    from mtlmood.export import ExportResult

MODEL_CARD_FILE = "MODEL_CARD.md"
CURVES_FILE = Path("report") / "curves.csv"  # the study report's alpha-response table
STUDY_CONFIG_FILE = "study_config.yaml"

CITATION = (
    'Rajnish Kumar and Manjeet Dahiya, "Multi-task Learning with Metadata for Music Mood '
    'Classification", 2022. arXiv:2110.04765.'
)
BIBTEX = """@misc{kumar2022multitask,
  author        = {Kumar, Rajnish and Dahiya, Manjeet},
  title         = {Multi-task Learning with Metadata for Music Mood Classification},
  year          = {2022},
  eprint        = {2110.04765},
  archivePrefix = {arXiv},
  primaryClass  = {cs.SD}
}"""

PathLike = Union[str, "os.PathLike[str]"]
log = logging.getLogger(__name__)


# ------------------------------------------------------------------ study evidence
@dataclass(frozen=True)
class ArmScores:
    """Test scores of a study arm: mean and interval over seeds and test songs (%)."""

    seeds: int
    pr_auc: float
    pr_low: float
    pr_high: float
    roc_auc: float
    roc_low: float
    roc_high: float
    confidence: Optional[float]  # the interval's level (e.g. 0.95), None when not recorded


@dataclass(frozen=True)
class StudyRecord:
    """What a study says about one of its best checkpoints (best_checkpoint.json + report)."""

    run_dir: Path
    cell: str
    is_default: bool
    selected_by: str
    arm: str
    phase: str
    alpha: Optional[float]
    seed: Optional[int]
    val_pr_auc: Optional[float]
    test_pr_auc: Optional[float]
    test_roc_auc: Optional[float]
    arm_scores: Optional[ArmScores]
    arm_note: str = ""  # why arm_scores is None


def _number(value: Any) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _confidence(run_dir: Path) -> Optional[float]:
    try:
        import yaml

        data = yaml.safe_load((run_dir / STUDY_CONFIG_FILE).read_text())
        return _number(data["report"]["confidence"])
    except Exception:  # absent or another layout: the level is then "not recorded"
        return None


def _curve_row_matches(label: str, n_moods: Any, metadata: str) -> bool:
    """Whether a curves.csv cell label ("<dataset> · <n> moods · <metadata>") is this cell.
    A baseline cell ("none") matches any metadata set of its mood count: its baseline rows
    are the same runs, shared by the metadata sets."""
    parts = [part.strip() for part in label.split("·")]
    if len(parts) < 3 or not parts[-2].split():
        return False
    return parts[-2].split()[0] == str(n_moods) and (metadata in ("none", parts[-1]))


def _arm_scores(run_dir: Path, entry: dict[str, Any]) -> tuple[Optional[ArmScores], str]:
    """(the arm's mean and interval from report/curves.csv, or None and why)."""
    path = run_dir / CURVES_FILE
    if not path.exists():
        return None, f"the study has no {CURVES_FILE.as_posix()} (no report yet, or no curve runs)"
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row.get("arm") == entry.get("arm") and _curve_row_matches(
            row.get("cell", ""), entry.get("n_moods"), str(entry.get("metadata", ""))
        ):
            values = [
                _number(row.get(k))
                for k in ("PR-AUC", "PR-AUC low", "PR-AUC high", "ROC-AUC", "ROC-AUC low", "ROC-AUC high")
            ]
            seeds = _number(row.get("seeds"))
            if any(v is None for v in values) or seeds is None:
                return None, f"its row in {CURVES_FILE.as_posix()} has no interval (too few seeds?)"
            pr, pr_lo, pr_hi, roc, roc_lo, roc_hi = (float(v or 0.0) for v in values)
            return ArmScores(int(seeds), pr, pr_lo, pr_hi, roc, roc_lo, roc_hi, _confidence(run_dir)), ""
    return None, (
        f"{CURVES_FILE.as_posix()} has no row for arm {entry.get('arm')!r} of this cell "
        "(a search trial, or a cell without curve runs)"
    )


def study_record(run_dir: PathLike, cell: str) -> StudyRecord:
    """The study's record of ``cell``'s best checkpoint (MtlmoodError when the pointer lacks it)."""
    run_dir = Path(run_dir)
    data = read_json_object(run_dir / BEST_CHECKPOINTS_FILE, MtlmoodError, "study pointer")
    entry = (data.get("cells") or {}).get(cell)
    if not isinstance(entry, dict):
        raise MtlmoodError(f"{run_dir / BEST_CHECKPOINTS_FILE} has no cell {cell!r}")
    scores, note = _arm_scores(run_dir, entry)
    seed = _number(entry.get("seed"))
    return StudyRecord(
        run_dir=run_dir,
        cell=cell,
        is_default=data.get("default_cell") == cell,
        selected_by=str(data.get("selected_by", "")),
        arm=str(entry.get("arm", "")),
        phase=str(entry.get("phase", "")),
        alpha=_number(entry.get("alpha")),
        seed=None if seed is None else int(seed),
        val_pr_auc=_number(entry.get("val_pr_auc")),
        test_pr_auc=_number(entry.get("test_pr_auc")),
        test_roc_auc=_number(entry.get("test_roc_auc")),
        arm_scores=scores,
        arm_note=note,
    )


def _study_cells(run_dir: Path) -> dict[str, Path]:
    """cell -> checkpoint directory of a study's best_checkpoint.json ({} when unreadable)."""
    try:
        data = read_json_object(run_dir / BEST_CHECKPOINTS_FILE, MtlmoodError, "study pointer")
    except MtlmoodError:
        return {}
    cells = data.get("cells")
    out = {}
    for cell, entry in cells.items() if isinstance(cells, dict) else []:
        target = entry.get("checkpoint") if isinstance(entry, dict) else None
        if isinstance(target, str) and target:
            out[str(cell)] = Path(target) if Path(target).is_absolute() else run_dir / target
    return out


def find_study_record(checkpoint: PathLike) -> Optional[StudyRecord]:
    """The record of the study that chose ``checkpoint`` as a cell's best, found by walking up
    from it to a best_checkpoint.json that names it; None when no study chose it."""
    start = Path(checkpoint).resolve()
    for run_dir in start.parents:
        if not (run_dir / BEST_CHECKPOINTS_FILE).is_file():
            continue
        for cell, target in _study_cells(run_dir).items():
            if _same_dir(target, start):
                try:
                    return study_record(run_dir, cell)
                except (MtlmoodError, OSError, ValueError):
                    return None
    return None


# ------------------------------------------------------------------ rendering
def _f(value: Optional[float], digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _alpha(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _names(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def _paper_differences(card: ModelCard) -> list[str]:
    """Settings of this checkpoint that differ from the paper's (the configs' defaults)."""
    out = []
    for section, ours, paper in (
        ("features", card.features, FeatureConfig()),
        ("model", card.model, ModelConfig()),
    ):
        for key, value in vars(ours).items():
            if key in ("init", "bn_momentum", "bn_eps"):  # not in the paper: Keras defaults chosen here
                continue
            if getattr(paper, key) != value:
                out.append(f"{section}.{key} = {value!r} (paper: {getattr(paper, key)!r})")
    return out


def _summary_table(card: ModelCard, checkpoint: str) -> list[str]:
    m = card.model
    kind = "single-task baseline (no metadata head)" if card.n_meta == 0 else "multi-task (mood + metadata heads)"
    rows = [
        ("checkpoint", f"`{checkpoint}` (id `{card.checkpoint_id or 'n/a'}`, created {card.created_at or 'n/a'})"),
        ("code", f"mtlmood {card.code_version}"),
        (
            "architecture",
            f"{m.n_blocks} × [Conv2d {m.n_filters} × {m.kernel_size}×{m.kernel_size} → ReLU → "
            f"BatchNorm → MaxPool {m.pool_size}×{m.pool_size} → Dropout {m.dropout:g}] → dense sigmoid heads; {kind}",
        ),
        ("dataset", f"`{card.dataset.name}`"),
        ("moods (N_mood)", str(card.n_moods)),
        ("metadata set (N_meta)", f"`{card.labels.metadata}` ({card.n_meta})"),
        ("α", _alpha(card.alpha) + (" (learned: uncertainty weighting)" if card.alpha_mode == "learned" else "")),
        ("seed", str(card.seed)),
    ]
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _intended_use(card: ModelCard) -> list[str]:
    lines = [
        f"Scoring music recordings with a probability for each of its {card.n_moods} mood labels — e.g. to "
        "suggest mood tags for search, playlists or recommendation, with people reviewing the tags — and "
        "research on multi-task learning with metadata (a reproduction of Kumar & Dahiya).",
        "",
        "Out of scope: labels outside the list below; audio that is not music (speech, field recordings); "
        "judging listeners, artists or their feelings; automatic decisions with consequences for people "
        "without human review; the metadata head (not part of an export, and meaningless for unseen artists).",
    ]
    if card.dataset.name == "synthetic":
        lines += [
            "",
            "**This checkpoint was trained on synthetic songs** (generated by mtlmood, not real music): it "
            "exists to test the pipeline and says nothing about how a model would score real recordings.",
        ]
    return lines


def _training_data(card: ModelCard) -> list[str]:
    d, lab, s = card.dataset, card.labels, card.split
    limit = f"the first {d.limit} songs" if d.limit else "all songs"
    if s.method == "official":
        split = f"the dataset's official split {s.official_split}"
    else:
        test = 1.0 - s.train_fraction - s.validation_fraction
        split = (
            f"random at song level, {s.train_fraction:.0%} / {s.validation_fraction:.0%} / {test:.0%} "
            f"train / validation / test, seed {s.seed}"
        )
    lines = [
        f"- Dataset `{d.name}` ({limit}; tag set `{d.tag_set}`), metadata from `{d.root}`.",
        f"- Split: {split}. No song is in two splits.",
        f"- Mood labels (N_mood = {card.n_moods}; the top {card.n_moods} mood tags by song count, songs "
        f"without any of them dropped): {_names(card.mood_names, 60)}.",
    ]
    if card.n_meta == 0:
        lines.append(f"- Metadata: none (metadata set `{lab.metadata}`); the model was trained on moods alone.")
    else:
        artists = [n for n in card.meta_names if n.startswith("artist:")]
        years = [n for n in card.meta_names if n.startswith("year:")]
        parts = []
        if artists:
            parts.append(
                f"{len(artists)} artist labels (the top {lab.n_artists} artists of the training songs; "
                "other songs get an all-zero artist target)"
            )
        if years:
            parts.append(f"{len(years)} year buckets of {lab.year_bucket_size} years: {_names(years)}")
        lines.append(
            f"- Metadata set `{lab.metadata}`, N_meta = {card.n_meta}: "
            + ("; ".join(parts) or _names(card.meta_names))
            + "."
        )
    for split_name in ("validation", "test"):
        n = (card.metrics.get(split_name) or {}).get("n_songs")
        if n:
            lines.append(f"- {split_name.capitalize()} songs: {n}.")
    return lines


def _weighting(card: ModelCard) -> list[str]:
    if card.n_meta == 0:
        return ["Single-task baseline: α = 0 and no metadata head; the loss is the mood BCE alone."]
    heuristic = card.n_moods / card.n_meta
    configured = (card.run_config.get("train") or {}).get("alpha", "n/a")
    configured = f"{configured:.4g}" if isinstance(configured, float) else configured
    lines = [
        f"Loss L = L_mood + α·L_meta (both binary cross-entropy, multi-label) with α = {_alpha(card.alpha)}, "
        f"{card.alpha / heuristic:.3g} × the paper's heuristic N_mood / N_meta = {card.n_moods}/{card.n_meta} "
        f"= {heuristic:.4g} (configured as `train.alpha: {configured}`).",
    ]
    if card.alpha_mode == "learned":
        lines.append(
            "α was learned by uncertainty weighting (Kendall et al. 2018); the value is its effective weight "
            "exp(−s_meta)/exp(−s_mood) at the saved epoch."
        )
    lines.append(
        "Metadata is used only in training, as a second task for the shared trunk; inference and exports use "
        "the mood head alone."
    )
    return lines


def _evaluation(card: ModelCard, study: Optional[StudyRecord]) -> list[str]:
    test = card.metrics.get("test") or {}
    val = card.metrics.get("validation") or {}
    lines = ["All scores are song-level macro averages over the mood labels, in percent.", ""]
    if test:
        lines.append(
            f"This checkpoint on its test split ({test.get('n_songs', 'n/a')} songs, "
            f"{test.get('n_labels', card.n_moods)} labels): **PR-AUC {_f(_number(test.get('pr_auc')))}**, "
            f"ROC-AUC {_f(_number(test.get('roc_auc')))} (chance PR-AUC = mean prevalence "
            f"{_f(_number(test.get('prevalence')))}); validation PR-AUC {_f(_number(val.get('pr_auc')))} at the "
            f"best epoch {card.metrics.get('best_epoch', 'n/a')}."
        )
        if test.get("excluded_labels"):
            lines.append(
                f"Excluded from the averages (no positive or no negative test song): "
                f"{_names(list(test['excluded_labels']))}."
            )
        per_label = test.get("per_label") or {}
        if per_label:
            lines += ["", "| mood | test ROC-AUC % | test PR-AUC % | positive test songs |", "|---|---|---|---|"]
            for name, s in per_label.items():
                lines.append(
                    f"| {name} | {_f(_number(s.get('roc_auc')))} | {_f(_number(s.get('pr_auc')))} | "
                    f"{s.get('positives', 'n/a')} |"
                )
    else:
        lines.append("No test scores were recorded with this checkpoint.")
    lines.append("")
    if study is None:
        lines.append(
            "**No confidence interval is available**: this checkpoint was not chosen by an α study, so the scores "
            "above are one training run with one seed, and their seed-to-seed and test-sample noise is unknown "
            "(the paper's gains of 0.2–0.6 points are of that order). An α study (`mtlmood study run`) reports "
            "intervals over seeds and test songs."
        )
        return lines
    default = " (the study's default cell for serving)" if study.is_default else ""
    lines += [
        f"### From the α study `{study.run_dir}`",
        "",
        f"Chosen as the best model of cell `{study.cell}`{default}: {study.selected_by or 'by validation'}. "
        f"Arm `{study.arm}` ({study.phase} phase), α = {_alpha(study.alpha)}, seed {study.seed}; validation "
        f"PR-AUC {_f(study.val_pr_auc)}, test PR-AUC {_f(study.test_pr_auc)}, test ROC-AUC "
        f"{_f(study.test_roc_auc)} (this single run).",
        "",
    ]
    a = study.arm_scores
    if a is None:
        lines.append(f"**No interval is available** for its arm: {study.arm_note}. The scores above are one run.")
    else:
        level = f"{a.confidence:.0%}" if a.confidence else "level not recorded"
        lines.append(
            f"Its arm over {a.seeds} seeds (from the study's {CURVES_FILE.as_posix()}; mean [{level} interval], "
            f"hierarchical bootstrap over seeds and test songs): test **PR-AUC {_f(a.pr_auc)} "
            f"[{_f(a.pr_low)}, {_f(a.pr_high)}]**, ROC-AUC {_f(a.roc_auc)} [{_f(a.roc_low)}, {_f(a.roc_high)}]. "
            "The study report's verdicts say which differences between arms survive this noise."
        )
    return lines


def _preprocessing(card: ModelCard) -> list[str]:
    f, m = card.features, card.model
    fps = f.frames_per_second
    rows = [
        ("decode", "any common format (mp3, ogg, flac, wav, …); mono = mean of the channels"),
        ("resample", f"{f.sample_rate} Hz (soxr, as `librosa.load`)"),
        ("keep", f"the first {f.max_seconds:g} s = at most {f.max_frames} frames"),
        (
            "STFT",
            f"n_fft {f.n_fft}, hop {f.hop_length} ({fps:g} frames/s), Hann window, centred frames with zero padding",
        ),
        (
            "mel",
            f"{f.n_mels} bands of the power spectrogram, Slaney mel scale and norm, 0 Hz to Nyquist "
            "(`librosa.feature.melspectrogram` defaults)",
        ),
        ("compression", f"log10(1 + {f.log_multiplier:g} · mel)"),
        (
            "windows",
            f"non-overlapping windows of {m.segment_frames} frames (≈ {m.segment_frames / fps:.2f} s); "
            "the remainder after the last full window is dropped; a song shorter than one window is "
            "zero-padded to one",
        ),
        ("model input", f"float32 (batch, {m.segment_frames}, {f.n_mels}): windows × frames × mel bands"),
        ("model output", f"float32 (batch, {card.n_moods}): sigmoid probability per mood and window"),
        ("song probability", "the mean over the song's windows of the per-window probabilities"),
    ]
    return [
        "Values read from this checkpoint's config; `mtlmood.features.log_mel` and "
        "`mtlmood.inference.segment_song` are the reference implementation.",
        "",
        "| step | contract |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
    ]


def _export_section(export: ExportResult) -> list[str]:
    diffs = "; ".join(f"{name} ({export.windows[name]} windows) {d:.1e}" for name, d in export.diffs.items())
    lines = [
        f"`{export.path.name}` ({export.format}"
        + (f", ONNX opset {export.opset}" if export.opset else "")
        + f"; sha256 `{export.sha256}`).",
        "",
        f"- Input `logmel`: float32 {export.input_shape}, dynamic batch; output `mood_probabilities`: float32 "
        f"(batch, {len(export.mood_names)}), columns in the order of the mood labels above. The metadata head is "
        "not included.",
        f"- Validated against the PyTorch model when written: max |Δp| = {export.max_abs_diff:.1e} "
        f"(tolerance {export.tolerance:.0e}; {diffs}).",
    ]
    if export.operators:
        lines.append(f"- ONNX operators: {', '.join(export.operators)}.")
    lines.append("- The file carries the label names and preprocessing settings as metadata.")
    return lines


def _limitations(card: ModelCard, study: Optional[StudyRecord]) -> list[str]:
    f, m = card.features, card.model
    lines = [
        f"- Only the first {f.max_seconds:g} s of a recording are heard; moods that arrive later are missed.",
        f"- Each {m.segment_frames / f.frames_per_second:.2f} s window counts equally in a song's probability.",
        f"- It knows only the {card.n_moods} labels above, as the `{card.dataset.name}` tags define them; tags are "
        "noisy, subjective and culturally specific, and the model knows only music like its training songs.",
        "- Probabilities are not calibrated: compare them within a label, and choose thresholds on your own data.",
    ]
    if card.dataset.name == "synthetic":
        lines.append("- **Trained on synthetic data**: not evidence of performance on real music.")
    if card.split.method == "random":
        lines.append(
            "- The split is random at song level, so an artist's songs can be in both training and test; test "
            "scores may be higher than on unseen artists."
        )
    if study is None:
        lines.append("- One training run (one seed): its scores carry no interval.")
    differences = _paper_differences(card)
    if differences:
        lines.append("- Settings that differ from the paper: " + "; ".join(differences) + ".")
    return lines


def render_model_card(
    card: ModelCard,
    checkpoint: str = "",
    study: Optional[StudyRecord] = None,
    export: Optional[ExportResult] = None,
) -> str:
    """MODEL_CARD.md for a checkpoint's card (plus a study's evidence and an export, when given)."""
    title = f"# Model card: mtlmood mood classifier `{card.checkpoint_id or 'unsaved'}`"
    sections: list[tuple[str, list[str]]] = [
        ("Intended use", _intended_use(card)),
        ("Training data and labels", _training_data(card)),
        ("α and metadata", _weighting(card)),
        ("Evaluation", _evaluation(card, study)),
        ("Preprocessing contract", _preprocessing(card)),
    ]
    if export is not None:
        sections.append(("Exported model", _export_section(export)))
    sections += [
        ("Limitations", _limitations(card, study)),
        (
            "How to cite",
            [
                "The method is that of",
                "",
                f"> {CITATION}",
                "",
                "```bibtex",
                BIBTEX,
                "```",
            ],
        ),
    ]
    out = [
        title,
        "",
        "Generated by `mtlmood model-card` from the checkpoint's model_card.json; regenerate rather than edit.",
        "",
        *_summary_table(card, checkpoint),
    ]
    for heading, lines in sections:
        out += ["", f"## {heading}", "", *lines]
    return "\n".join(out) + "\n"


def write_model_card(
    checkpoint: PathLike,
    path: Optional[PathLike] = None,
    export: Optional[ExportResult] = None,
    study: Optional[StudyRecord] = None,
) -> Path:
    """Write MODEL_CARD.md (default: inside the checkpoint); the study that chose the
    checkpoint is found on its own when ``study`` is not given. CheckpointError when the
    directory is not a checkpoint."""
    card = read_card(checkpoint)
    if study is None:
        study = find_study_record(checkpoint)
    target = Path(path) if path else Path(checkpoint) / MODEL_CARD_FILE
    atomic_write_text(target, render_model_card(card, str(checkpoint), study, export))
    return target


def write_study_model_cards(run_dir: PathLike) -> list[Path]:
    """MODEL_CARD.md beside the best checkpoint of every cell in a study's best_checkpoint.json.

    Called by the study report after it writes the pointer. A checkpoint whose card cannot
    be written is logged and skipped: a report is never lost over a model card.
    """
    run_dir = Path(run_dir)
    written = []
    for cell, checkpoint in _study_cells(run_dir).items():
        try:
            written.append(write_model_card(checkpoint, study=study_record(run_dir, cell)))
        except (MtlmoodError, OSError, ValueError) as exc:
            log.warning("no %s for cell %s (%s): %s", MODEL_CARD_FILE, cell, checkpoint, exc)
    return written
