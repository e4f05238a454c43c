"""The study's live progress lines: a summary only when something changed (or as a heartbeat)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

from study import progress  # noqa: E402
from study.progress import ProgressTable  # noqa: E402


def trial(trial_id: str, status: str = "RUNNING") -> SimpleNamespace:
    return SimpleNamespace(
        trial_id=trial_id,
        status=status,
        last_result={},
        config={"cell": "6|artist", "alpha_factor": 1.0},
    )


def test_summary_lines_skip_repeats_but_keep_a_heartbeat(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    table = ProgressTable("search", total=4, every_s=15, heartbeat_s=60)
    trials = [trial("a"), trial("b")]

    def report(at: float, value: float) -> list[str]:
        clock[0] = 1000.0 + at
        table.on_trial_result(0, trials, trials[0], {"val_pr_auc": value, "epoch": 1})
        return [line for line in capsys.readouterr().out.splitlines() if line]

    first = report(0, 50.0)
    assert first == [
        "[search] 0/4 trials finished (running 2); best val PR-AUC % per cell: 6|artist 50.00; 0 min 00 s elapsed"
    ]
    assert report(5, 50.0) == []  # within every_s
    assert report(20, 50.0) == []  # nothing changed: no repeat
    assert report(30, 61.5)[0].startswith(
        "[search] 0/4 trials finished (running 2); best val PR-AUC % per cell: 6|artist 61.50"
    )
    assert report(50, 61.5) == []
    assert report(95, 61.5) == [
        "[search] 0/4 trials finished (running 2); best val PR-AUC % per cell: 6|artist 61.50; 1 min 35 s elapsed"
    ]  # heartbeat after 60 s of sameness

    trials[1].status = "TERMINATED"
    table.on_trial_complete(0, trials, trials[1])
    done = capsys.readouterr().out
    assert "b" in done and "stopped early" in done
    assert "1/4 trials finished" in report(111, 61.5)[0]


def test_a_curve_trial_of_several_arms_names_its_cell_arms_and_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    jobs = [
        {"cell": "4|artist", "arm": arm, "alpha": alpha, "alpha_factor": factor, "seeds": [1, 2]}
        for arm, alpha, factor in (("x1/3", 0.22, 1 / 3), ("heuristic", 0.67, 1.0))
    ]
    packed = SimpleNamespace(trial_id="c1", status="TERMINATED", last_result={}, config={"jobs": jobs})
    table = ProgressTable("curve", total=1)
    table.on_trial_result(0, [packed], packed, {"val_pr_auc": 40.0, "alpha": 0.67, "final": True})
    table.on_trial_complete(0, [packed], packed)
    line = capsys.readouterr().out.splitlines()[-1]
    assert "cell=4|artist" in line and "arm=x1/3+heuristic" in line and "seeds=1,2" in line
    assert "alpha=0.67" in line and line.endswith("done")  # the last run's alpha, from its result
    single = SimpleNamespace(trial_id="c2", status="TERMINATED", last_result={}, config={"jobs": jobs[:1]})
    table.on_trial_complete(0, [single], single)
    assert "arm=x1/3" in capsys.readouterr().out and table.best == {"4|artist": 40.0}
