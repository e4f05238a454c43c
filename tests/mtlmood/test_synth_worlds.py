"""Known-answer worlds (mtlmood.synth.worlds): the settings validate, plans and labels are
deterministic, the null world's metadata is independent of mood and the metadata-helps
world's is strongly dependent, label noise is what it says. Plan-level only: no audio."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from mtlmood.errors import ConfigError
from mtlmood.synth import SynthConfig, label_moods, plan_songs, read_manifest, synthesize, world_config
from mtlmood_cli.main import main as cli_main


def _table(rows: list[tuple[str, str]]) -> np.ndarray:
    """Contingency table of (metadata value, mood) pairs."""
    a = sorted({r[0] for r in rows})
    m = sorted({r[1] for r in rows})
    table = np.zeros((len(a), len(m)))
    for x, y in rows:
        table[a.index(x), m.index(y)] += 1
    return table


def _mutual_information(table: np.ndarray) -> float:
    """I(metadata; mood) in bits of a contingency table."""
    p = table / table.sum()
    outer = p.sum(1, keepdims=True) * p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / outer[nz])).sum())


def _pairs(world: str, field: str, labels: bool) -> list[tuple[str, str]]:
    cfg = world_config(world)
    plans = plan_songs(cfg)
    moods = [label_moods(p, cfg) if labels else p.moods for p in plans]
    return [(str(getattr(p, field)), m[0]) for p, m in zip(plans, moods)]  # one mood per song here


def test_presets_validate_and_differ_only_in_the_artist_link() -> None:
    helps, null = world_config("metadata-helps"), world_config("null")
    assert (helps.world, null.world) == ("metadata-helps", "null")
    assert dataclasses.replace(helps, world="null", artist_prior_strength=0.0) == null
    assert world_config("default") == SynthConfig()
    assert world_config("null", n_songs=300).n_songs == 300
    with pytest.raises(ValueError, match="unknown world"):
        world_config("nope")


def test_world_rules_are_checked() -> None:
    with pytest.raises(ConfigError, match="artist_prior_strength 0"):
        SynthConfig(world="null").validate()  # the default prior 0.7 is not a null world
    with pytest.raises(ConfigError, match="artist_prior_strength > 0"):
        SynthConfig(world="metadata-helps", artist_prior_strength=0.0).validate()
    with pytest.raises(ConfigError, match="world"):
        SynthConfig(world="bogus").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="label_noise"):
        SynthConfig(label_noise=1.5).validate()
    with pytest.raises(ConfigError, match="metadata source"):
        SynthConfig(world="metadata-helps", source="x.tsv").validate()


@pytest.mark.parametrize("world", ["metadata-helps", "null"])
def test_plans_and_labels_are_deterministic(world: str) -> None:
    a, b = world_config(world), world_config(world)
    plans_a, plans_b = plan_songs(a), plan_songs(b)
    assert plans_a == plans_b
    assert [label_moods(p, a) for p in plans_a] == [label_moods(p, b) for p in plans_b]
    other = [label_moods(p, dataclasses.replace(a, seed=1)) for p in plans_a]
    assert other != [label_moods(p, a) for p in plans_a]


def test_null_world_metadata_is_independent_of_mood() -> None:
    for field in ("artist", "year"):
        for labels in (False, True):
            table = _table(_pairs("null", field, labels))
            if field == "year":  # pool years into the paper's 5-year buckets
                table = np.add.reduceat(table, np.arange(0, table.shape[0], 5), axis=0)
            p_value = chi2_contingency(table)[1]
            assert p_value > 0.01, (field, labels, p_value)
            assert _mutual_information(table) < 0.02


def test_metadata_helps_world_artists_carry_a_strong_mood_prior() -> None:
    true = _table(_pairs("metadata-helps", "artist", labels=False))
    noisy = _table(_pairs("metadata-helps", "artist", labels=True))
    assert chi2_contingency(true)[1] < 1e-12 and chi2_contingency(noisy)[1] < 1e-12
    # The documented dependence: the artist says much about the true mood (of the ~1.5
    # bits of a 3-mood label), still a lot about the noisy label.
    assert _mutual_information(true) > 0.6
    assert 0.25 < _mutual_information(noisy) < _mutual_information(true)
    # Many songs per artist: the artist task is learnable.
    assert true.sum(1).min() >= 40


def test_label_noise_changes_the_promised_share_and_only_the_labels() -> None:
    cfg = world_config("metadata-helps")
    plans = plan_songs(cfg)
    changed = sum(label_moods(p, cfg) != p.moods for p in plans) / len(plans)
    expected = cfg.label_noise * (1 - 1 / len(cfg.moods))
    assert abs(changed - expected) < 0.03
    clean = dataclasses.replace(cfg, label_noise=0.0)
    assert plan_songs(clean) == plans  # the plan (the audio) does not depend on the noise
    assert all(label_moods(p, clean) == p.moods for p in plans)


def test_manifest_carries_the_noisy_labels(tmp_path: Path) -> None:
    cfg = world_config("metadata-helps", n_songs=12, n_artists=3, label_noise=0.5, formats=("wav",))
    synthesize(tmp_path, cfg)
    rows = read_manifest(tmp_path / "manifest.csv")
    plans = plan_songs(cfg)
    assert [r["moods"] for r in rows] == [";".join(label_moods(p, cfg)) for p in plans]
    assert any(r["moods"] != ";".join(p.moods) for r, p in zip(rows, plans))
    stamp = json.loads((tmp_path / "synth_config.json").read_text())["config"]
    assert stamp["world"] == "metadata-helps" and stamp["label_noise"] == 0.5
    # A default config's stamp leaves the new fields out (old datasets keep resuming).
    from mtlmood.synth.write import config_stamp

    assert "world" not in config_stamp(SynthConfig()) and "label_noise" not in config_stamp(SynthConfig())


def test_cli_world_flag_applies_the_preset_under_other_flags() -> None:
    from mtlmood_cli.commands import synth as synth_command

    parser = argparse.ArgumentParser()
    synth_command.register(parser.add_subparsers())
    args = parser.parse_args(["synth", "out", "--world", "null", "--songs", "300", "--label-noise", "0.1"])
    assert synth_command.config_from_args(args) == world_config("null", n_songs=300, label_noise=0.1)
    with pytest.raises(SystemExit):
        cli_main(["synth", "out", "--world", "nope"])


def test_artist_signature_is_deterministic_and_off_by_default() -> None:
    from mtlmood.synth import render_song

    cfg = world_config("metadata-helps", n_songs=12, n_artists=3)
    signed = dataclasses.replace(cfg, artist_signature=0.5)
    plan = plan_songs(cfg)[0]
    plain, a, b = render_song(plan, cfg), render_song(plan, signed), render_song(plan, signed)
    assert np.array_equal(a, b) and not np.array_equal(a, plain)
    assert SynthConfig().artist_signature == 0.0
    with pytest.raises(ConfigError, match="artist_signature"):
        SynthConfig(artist_signature=2.0).validate()
