"""Dataset adapters on the real MTG-Jamendo / MagnaTagATune metadata, and on hand-made manifests."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from mtlmood.config import DatasetConfig, RunConfig, SplitConfig
from mtlmood.datasets import REGISTRY, get_adapter, load_run_songs, load_songs, missing_audio
from mtlmood.datasets.magnatagatune import MOOD_TAGS
from mtlmood.errors import DatasetError


def test_registry_names_every_adapter() -> None:
    assert {"mtg-jamendo", "magnatagatune", "csv", "synthetic"} <= set(REGISTRY)
    with pytest.raises(DatasetError, match="unknown dataset 'nope'; known: .*mtg-jamendo"):
        get_adapter("nope")


# --- MTG-Jamendo -------------------------------------------------------------------------------


def test_mtg_jamendo_reads_every_track(mtg_jamendo_dir: Path) -> None:
    records = load_songs(DatasetConfig(name="mtg-jamendo", root=str(mtg_jamendo_dir)))
    assert len(records) == 18486
    assert len({r.song_id for r in records}) == 18486
    assert len({r.artist for r in records}) == 1533
    tags = {t for r in records for t in r.tags}
    assert len(tags) == 59 and "happy" in tags and not any("---" in t for t in tags)
    first = records[0]
    assert first.song_id == "track_0000948" and first.artist == "artist_000087"
    assert first.tags == ("background",) and first.year is None and first.split_group == "track_0000948"
    assert first.audio_path == mtg_jamendo_dir / "48" / "948.mp3"
    # A track with several TAGS columns keeps all of them.
    multi = [r for r in records if len(r.tags) > 1]
    assert multi and all(len(set(r.tags)) == len(r.tags) for r in multi)


def test_mtg_jamendo_official_splits(mtg_jamendo_dir: Path) -> None:
    config = DatasetConfig(name="mtg-jamendo", root=str(mtg_jamendo_dir))
    split0 = Counter(r.official_split for r in load_songs(config))
    assert split0 == {"train": 9949, "validation": 3802, "test": 4231, None: 504}

    run = RunConfig(dataset=config, split=SplitConfig(method="official", official_split=3))
    split3 = {r.song_id: r.official_split for r in load_run_songs(run)}
    test3 = [
        line.split("\t")[0]
        for line in (mtg_jamendo_dir / "splits/split-3/autotagging_moodtheme-test.tsv").read_text().splitlines()[1:]
    ]
    assert {split3[track] for track in test3} == {"test"}
    assert sum(1 for s in split3.values() if s is None) == 504

    with pytest.raises(DatasetError, match=r"official split 7 not found.*split-0, split-1"):
        load_run_songs(RunConfig(dataset=config, split=SplitConfig(official_split=7)))


def test_mtg_jamendo_limit_and_audio_root(mtg_jamendo_dir: Path, tmp_path: Path) -> None:
    records = load_songs(
        DatasetConfig(
            name="mtg-jamendo",
            root=str(mtg_jamendo_dir / "autotagging_moodtheme.tsv"),
            audio_root=str(tmp_path),
            limit=10,
        )
    )
    assert len(records) == 10
    assert records[0].audio_path == tmp_path / "48" / "948.mp3"


def test_mtg_jamendo_malformed_lines_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "autotagging_moodtheme.tsv"
    header = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
    path.write_text(
        header + "track_1\tartist_1\talbum_1\t01/1.mp3\t30.0\tmood/theme---happy\ntrack_2\tartist_1\talbum_1\n"
    )
    with pytest.raises(DatasetError, match=r"autotagging_moodtheme.tsv:3: .*column PATH is missing"):
        load_songs(DatasetConfig(name="mtg-jamendo", root=str(tmp_path)))
    path.write_text(header + "track_1\tartist_1\talbum_1\t01/1.mp3\t30.0\thappy\n")
    with pytest.raises(DatasetError, match=r":2: tag 'happy' is not of the form"):
        load_songs(DatasetConfig(name="mtg-jamendo", root=str(tmp_path)))
    path.write_text("ID\tTAGS\n")
    with pytest.raises(DatasetError, match=r":1: expected header starting with TRACK_ID"):
        load_songs(DatasetConfig(name="mtg-jamendo", root=str(tmp_path)))
    with pytest.raises(DatasetError, match="MTG-Jamendo metadata not found"):
        load_songs(DatasetConfig(name="mtg-jamendo", root=str(tmp_path / "nowhere")))


# --- MagnaTagATune -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtt_all(magnatagatune_dir: Path) -> list:
    return load_songs(DatasetConfig(name="magnatagatune", root=str(magnatagatune_dir), tag_set="all"))


def test_magnatagatune_every_clip_is_a_song(mtt_all: list, magnatagatune_dir: Path) -> None:
    assert len(mtt_all) == 25863
    assert len({t for r in mtt_all for t in r.tags}) == 188
    assert sum(1 for r in mtt_all if not r.tags) == 4221
    first = mtt_all[0]
    assert first.song_id == "2" and first.artist == "American Bach Soloists" and first.year is None
    assert (
        first.audio_path
        == magnatagatune_dir / "f" / "american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-30-59.mp3"
    )


def test_magnatagatune_groups_keep_tracks_together(mtt_all: list, magnatagatune_dir: Path) -> None:
    groups = defaultdict(list)
    for record in mtt_all:
        groups[record.split_group].append(record)
    assert len(groups) == 5405  # tracks (album url + track number) in SOURCE.md
    assert len({r.artist for r in mtt_all}) == 230
    assert all(len({r.artist for r in clips}) == 1 for clips in groups.values())
    # Same partition as jukemir's track id (album url, track number).
    meta = json.load(gzip.open(magnatagatune_dir / "magnatagatune.json.gz", "rt"))
    uid = {v["extra"]["clip_id"]: tuple(v["clip"]["audio_uid"]) for v in meta.values()}
    by_uid = defaultdict(set)
    for record in mtt_all:
        by_uid[uid[record.song_id]].add(record.split_group)
    assert all(len(g) == 1 for g in by_uid.values()) and len(by_uid) == 5405


def test_magnatagatune_official_split_is_jukemirs(mtt_all: list) -> None:
    assert Counter(r.official_split for r in mtt_all) == {"train": 18706, "validation": 1825, "test": 5329, None: 3}


def test_magnatagatune_mood_vocabulary(magnatagatune_dir: Path) -> None:
    records = load_songs(DatasetConfig(name="magnatagatune", root=str(magnatagatune_dir)))
    assert len(records) == 25863  # clips without a mood tag are dropped later, by the labels
    used = Counter(t for r in records for t in r.tags)
    assert set(used) == set(MOOD_TAGS)
    # MOOD_TAGS is listed by clip count (ties are not an issue: counts differ).
    assert [t for t, _ in sorted(used.items(), key=lambda kv: (-kv[1], kv[0]))][:3] == ["slow", "fast", "loud"]


def test_magnatagatune_missing_clip_info_row(tmp_path: Path) -> None:
    (tmp_path / "annotations_final.csv").write_text(
        '"clip_id"\t"happy"\t"mp3_path"\r\n"5"\t"1"\t"a/x.mp3"\r\n"6"\t"2"\t"a/y.mp3"\r\n'
    )
    (tmp_path / "clip_info_final.csv").write_text(
        '"clip_id"\t"track_number"\t"title"\t"artist"\t"album"\r\n"5"\t"01"\t"t"\t"A"\t"B"\r\n'
    )
    with pytest.raises(DatasetError, match=r"annotations_final.csv:3: tag column 'happy' holds '2'"):
        load_songs(DatasetConfig(name="magnatagatune", root=str(tmp_path)))
    (tmp_path / "annotations_final.csv").write_text(
        '"clip_id"\t"happy"\t"mp3_path"\r\n"5"\t"1"\t"a/x.mp3"\r\n"6"\t"0"\t"a/y.mp3"\r\n'
    )
    with pytest.raises(DatasetError, match=r":3: clip_id 6 has no row in .*clip_info_final.csv"):
        load_songs(DatasetConfig(name="magnatagatune", root=str(tmp_path)))


# --- CSV manifests -----------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_manifest_reads_columns(tmp_path: Path) -> None:
    _write(
        tmp_path / "songs.csv",
        "Path,Moods,artist,year,group,split\n"
        "a/one.mp3,happy; sad,Ann,2005,g1,train\n"
        f"{tmp_path / 'abs.ogg'},calm|happy|calm,,2010.0,,valid\n"
        '"b/three, live.wav",,Bob,,,\n',
    )
    records = load_songs(DatasetConfig(name="csv", root=str(tmp_path / "songs.csv")))
    assert [r.song_id for r in records] == ["a/one.mp3", str(tmp_path / "abs.ogg"), "b/three, live.wav"]
    assert records[0].tags == ("happy", "sad") and records[1].tags == ("calm", "happy") and records[2].tags == ()
    assert records[0].audio_path == tmp_path / "a/one.mp3" and records[1].audio_path == tmp_path / "abs.ogg"
    assert [r.artist for r in records] == ["Ann", None, "Bob"]
    assert [r.year for r in records] == [2005, 2010, None]
    assert [r.split_group for r in records] == ["g1", str(tmp_path / "abs.ogg"), "b/three, live.wav"]
    assert [r.official_split for r in records] == ["train", "validation", None]


def test_csv_manifest_tsv_sniffing_and_folder_root(tmp_path: Path) -> None:
    _write(tmp_path / "manifest.tsv", "song_id\tpath\tmoods\nx\tx.wav\thappy;sad\n")
    records = load_songs(DatasetConfig(name="csv", root=str(tmp_path), audio_root="/audio"))
    assert records[0].song_id == "x" and records[0].audio_path == Path("/audio/x.wav")
    _write(tmp_path / "list.txt", "path;moods;year\nx.wav;happy;1999\n")
    records = load_songs(DatasetConfig(name="csv", root=str(tmp_path / "list.txt")))
    assert records[0].year == 1999 and records[0].tags == ("happy",)


@pytest.mark.parametrize(
    "text, message",
    [
        ("path,artist\nx.wav,A\n", r"songs.csv:1: missing required column\(s\) moods"),
        (
            "path,moods,year\nx.wav,happy,2001\ny.wav,sad,the nineties\n",
            r"songs.csv:3: column year holds 'the nineties', expected an integer year",
        ),
        ("path,moods,year\nx.wav,happy,2001.5\n", r"songs.csv:2: column year holds '2001.5'"),
        ("path,moods\nx.wav,happy\nx.wav,sad\n", r"songs.csv:3: song_id 'x.wav' already appears on line 2"),
        ("path,moods,split\nx.wav,happy,dev\n", r"songs.csv:2: column split holds 'dev'"),
        ("path,moods\n,happy\n", r"songs.csv:2: column path is empty"),
        ("path,moods\nx.wav,happy,sad\n", r"songs.csv:2: 3 fields but the header has 2"),
        ("", r"songs.csv: manifest is empty"),
    ],
)
def test_csv_manifest_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    _write(tmp_path / "songs.csv", text)
    with pytest.raises(DatasetError, match=message):
        load_songs(DatasetConfig(name="csv", root=str(tmp_path / "songs.csv")))


def test_csv_manifest_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="manifest not found"):
        load_songs(DatasetConfig(name="csv", root=str(tmp_path / "missing.csv")))
    with pytest.raises(DatasetError, match="no manifest in .*manifest.csv or manifest.tsv"):
        load_songs(DatasetConfig(name="csv", root=str(tmp_path)))


# --- synthetic + missing audio -----------------------------------------------------------------


def test_synthetic_reads_the_synth_manifest(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "s0.wav").write_bytes(b"RIFF")
    _write(
        tmp_path / "manifest.csv",
        "song_id,path,moods,artist,year\n"
        "s0,audio/s0.wav,happy;energetic,artist_0,2001\n"
        "s1,audio/s1.wav,sad,artist_1,2003\n",
    )
    records = load_songs(DatasetConfig(name="synthetic", root=str(tmp_path), limit=0))
    assert [(r.song_id, r.tags, r.artist, r.year) for r in records] == [
        ("s0", ("happy", "energetic"), "artist_0", 2001),
        ("s1", ("sad",), "artist_1", 2003),
    ]
    assert records[0].audio_path == tmp_path / "audio" / "s0.wav"
    assert [r.song_id for r in missing_audio(records)] == ["s1"]
    assert len(load_songs(DatasetConfig(name="synthetic", root=str(tmp_path), limit=1))) == 1


def test_synthetic_missing_folder_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no synthetic dataset at .*mtlmood synth"):
        load_songs(DatasetConfig(name="synthetic", root=str(tmp_path / "nothing")))


def test_missing_audio_on_real_clips(real_audio_dir: Path, tmp_path: Path) -> None:
    clips = sorted(p.name for p in real_audio_dir.iterdir() if p.suffix in (".ogg", ".mp3", ".flac", ".wav"))
    rows = "".join(f"{name},happy,A,2000\n" for name in clips) + "gone.mp3,sad,B,2001\n"
    _write(tmp_path / "m.csv", "path,moods,artist,year\n" + rows)
    records = load_songs(DatasetConfig(name="csv", root=str(tmp_path / "m.csv"), audio_root=str(real_audio_dir)))
    assert len(records) == len(clips) + 1
    assert [r.song_id for r in missing_audio(records)] == ["gone.mp3"]


def test_mtg_jamendo_other_categories_only_with_all_tags(tmp_path: Path) -> None:
    (tmp_path / "autotagging.tsv").write_text(
        "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
        "track_1\tartist_1\talbum_1\t01/1.mp3\t30.0\tgenre---rock\tmood/theme---happy\tinstrument---piano\n"
    )
    root = str(tmp_path / "autotagging.tsv")
    assert load_songs(DatasetConfig(name="mtg-jamendo", root=root))[0].tags == ("happy",)
    assert load_songs(DatasetConfig(name="mtg-jamendo", root=root, tag_set="all"))[0].tags == (
        "genre/rock",
        "happy",
        "instrument/piano",
    )
