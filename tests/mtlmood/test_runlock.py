"""One writer per run directory (mtlmood.runlock): a second taker is refused naming the
owner; a stale lock (dead pid here, silent heartbeat elsewhere) is taken over; the
heartbeat moves; the lock goes on exit, normal or not; `mtlmood train`, `mtlmood prepare`
and `run_study` hold it. Other processes are real subprocesses; every wait is bounded."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from helpers.train_cli import REPO, TIMEOUT, child_env, cli_dataset, train_command, wait_for
from mtlmood.lock_file import LOCK_FILE, command_line, read_owner
from mtlmood.runlock import RunDirInUse, RunLock, held_here
from mtlmood_cli.main import main

HOLD = textwrap.dedent("""\
    import sys, time
    from mtlmood.runlock import RunLock
    lock = RunLock(sys.argv[1], command="holder of the test")
    lock.acquire()
    time.sleep(float(sys.argv[2]))
    """)
TRY = textwrap.dedent("""\
    import sys
    from mtlmood.runlock import RunDirInUse, RunLock
    try:
        with RunLock(sys.argv[1]):
            print("acquired")
    except RunDirInUse as exc:
        print(exc)
        sys.exit(3)
    """)


def _stamp(seconds_ago: float = 0.0) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds")


def _write_lock(directory: Path, **fields: object) -> None:
    data: dict[str, object] = {"pid": 1, "hostname": socket.gethostname(), "command": "mtlmood train x"}
    data.update(started=_stamp(), heartbeat=_stamp(), token="f00d")
    data.update(fields)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOCK_FILE).write_text(json.dumps(data))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=60)  # exited and reaped: its pid names no process now
    return process.pid


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """Another process holding the lock of ``tmp_path / 'run'`` (killed afterwards)."""
    directory = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), "120"], cwd=REPO)
    try:
        wait_for(directory / LOCK_FILE, process, 60)
        yield process, directory
    finally:
        process.kill()
        process.wait(timeout=30)


def test_a_second_process_is_refused_naming_the_owner(tmp_path: Path) -> None:
    with RunLock(tmp_path, command="mtlmood train --output x") as lock:
        assert held_here(tmp_path) and lock.path.exists()
        tried = subprocess.run(
            [sys.executable, "-c", TRY, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert tried.returncode == 3, tried.stderr
        message = tried.stdout.strip()
        assert len(message.splitlines()) == 1
        assert message.startswith(f"{tmp_path} is in use by pid {os.getpid()} on {socket.gethostname()} ")
        assert "(`mtlmood train --output x`) since " in message and "heartbeat " in message
        # ... and a second lock in this very process says that it is this process.
        with pytest.raises(RunDirInUse, match=f"in use by this process, pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_FILE).exists()
    assert not held_here(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", TRY, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout == "acquired\n"


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = _dead_pid()
    _write_lock(tmp_path, pid=dead, started="2020-01-01T00:00:00+00:00")
    with caplog.at_level(logging.WARNING, logger="mtlmood.runlock"):
        with RunLock(tmp_path):
            owner = read_owner(tmp_path)
            assert owner is not None and owner.pid == os.getpid() and owner.token != "f00d"
    taking = [r.getMessage() for r in caplog.records if "taking over" in r.getMessage()]
    assert len(taking) == 1 and f"pid {dead} on {socket.gethostname()}" in taking[0]
    assert not (tmp_path / LOCK_FILE).exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temp or stale files left behind


def test_staleness_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Another host: its processes are invisible from here, so only its heartbeat counts.
    _write_lock(tmp_path, hostname="elsewhere", pid=os.getpid(), heartbeat=_stamp(5))
    with pytest.raises(RunDirInUse, match=f"pid {os.getpid()} on elsewhere .*heartbeat 5 s ago"):
        RunLock(tmp_path).acquire()
    _write_lock(tmp_path, hostname="elsewhere", heartbeat=_stamp(61))
    with RunLock(tmp_path, stale_after_s=60):
        pass
    # This host, a live process: never stale, however old its heartbeat.
    _write_lock(tmp_path, pid=os.getppid(), heartbeat=_stamp(3600))
    with pytest.raises(RunDirInUse, match=f"pid {os.getppid()}"):
        RunLock(tmp_path).acquire()
    # This host, our own pid but not our lock: a leftover of an earlier process with this pid.
    _write_lock(tmp_path, pid=os.getpid())
    with RunLock(tmp_path):
        pass
    # An unreadable lock: refused while it is fresh, taken over once old.
    (tmp_path / LOCK_FILE).write_text("{not json")
    with pytest.raises(RunDirInUse, match="unreadable"):
        RunLock(tmp_path).acquire()
    old = time.time() - 120
    os.utime(tmp_path / LOCK_FILE, (old, old))
    with RunLock(tmp_path):
        pass
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_that_changed_since_it_was_judged_stale_is_put_back(tmp_path: Path) -> None:
    """Two takers of one stale lock: the loser moves the winner's fresh lock aside, sees
    that it is not the stale one it judged, and puts it back."""
    _write_lock(tmp_path, pid=_dead_pid())
    stale = (tmp_path / LOCK_FILE).read_bytes()
    _write_lock(tmp_path, pid=os.getppid(), token="winner")  # another taker was quicker
    assert RunLock(tmp_path)._remove_stale(stale) is False
    owner = read_owner(tmp_path)
    assert owner is not None and owner.token == "winner"
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_FILE]


def test_the_heartbeat_moves_and_a_lost_lock_is_left_alone(tmp_path: Path) -> None:
    with RunLock(tmp_path, heartbeat_s=0.05) as lock:
        first = read_owner(tmp_path)
        assert first is not None
        deadline = time.monotonic() + 10
        while (now := read_owner(tmp_path)) is None or now.heartbeat == first.heartbeat:
            assert time.monotonic() < deadline, "the heartbeat did not move"
            time.sleep(0.02)
        assert now.started == first.started and now.token == first.token
        # Another process took the lock over (it thought us dead): we stop beating and,
        # on release, leave its lock alone.
        _write_lock(tmp_path, pid=os.getppid(), token="taker")
        deadline = time.monotonic() + 10
        while not lock.lost:
            assert time.monotonic() < deadline, "the heartbeat did not notice"
            time.sleep(0.02)
    owner = read_owner(tmp_path)
    assert owner is not None and owner.token == "taker"


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_on_an_exception(tmp_path: Path, error: type[BaseException]) -> None:
    with pytest.raises(error):
        with RunLock(tmp_path):
            assert (tmp_path / LOCK_FILE).exists()
            raise error("boom")
    assert not (tmp_path / LOCK_FILE).exists()
    with RunLock(tmp_path):  # free again
        pass


def test_a_killed_holder_leaves_a_lock_the_next_process_takes_over(
    holder: tuple[subprocess.Popen, Path], caplog: pytest.LogCaptureFixture
) -> None:
    process, directory = holder
    owner = read_owner(directory)
    assert owner is not None and owner.pid == process.pid and owner.command == "holder of the test"
    with pytest.raises(RunDirInUse, match=f"pid {process.pid} .*holder of the test"):
        RunLock(directory).acquire()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert (directory / LOCK_FILE).exists()
    with caplog.at_level(logging.WARNING, logger="mtlmood.runlock"), RunLock(directory):
        assert read_owner(directory).pid == os.getpid()  # type: ignore[union-attr]
    assert any(f"pid {process.pid}" in r.getMessage() for r in caplog.records)


def test_command_line_reads_like_what_the_user_typed() -> None:
    assert command_line(["/x/mtlmood", "train", "--output", "a b"]) == "mtlmood train --output 'a b'"
    assert command_line(["/repo/mtlmood_cli/__main__.py", "prepare"]) == "mtlmood prepare"
    assert len(command_line(["mtlmood", "x" * 1000])) == 300


# --- the commands that hold it ------------------------------------------------------------


def test_two_trains_on_one_output_the_second_exits_2_naming_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = cli_dataset(tmp_path / "data", epochs=30)
    out = tmp_path / "run"
    first = subprocess.Popen(
        train_command(config, out), cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for(out / LOCK_FILE, first, TIMEOUT)
        started = time.monotonic()
        code = main(["train", "--config", str(config), "--output", str(out)])
        refused_in = time.monotonic() - started
        err = capsys.readouterr().err
    finally:
        first.kill()
        first.communicate(timeout=30)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"mtlmood train: error: {out} is in use by pid {first.pid} on {socket.gethostname()} ")
    assert f"mtlmood train --config {config} --output {out}" in err
    assert refused_in < 10  # at once: before loading any data
    assert not (out / "metrics.json").exists()


def test_prepare_is_refused_while_another_process_writes_the_cache(
    holder: tuple[subprocess.Popen, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    process, cache = holder
    manifest = cache.parent / "manifest.csv"
    manifest.write_text("song_id,path,moods\ns1,a/s1.ogg,calm\ns2,a/s2.ogg,happy\n")
    argv = ["prepare", "--set", "dataset.name=csv", "--set", f"dataset.root={manifest}", "--cache-dir", str(cache)]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(
        f"mtlmood prepare: error: {cache} is in use by pid {process.pid}"
    )
    # The library entry point (the demo's) is guarded by the same lock.
    from mtlmood.config import FeatureConfig
    from mtlmood.datasets.base import SongRecord
    from mtlmood.prepare import prepare_features

    with pytest.raises(RunDirInUse, match=f"pid {process.pid}"):
        prepare_features([SongRecord("s1", Path("a/s1.ogg"), ("calm",))], cache, FeatureConfig(), progress=False)


def test_run_study_is_refused_while_another_process_runs_the_study(
    holder: tuple[subprocess.Popen, Path],
) -> None:
    from study.config import load_study_config
    from study.runner import run_study

    process, directory = holder
    study = load_study_config("synthetic", [f"storage_path={directory.parent}", f"name={directory.name}"])
    assert Path(study.run_dir) == directory.resolve()
    with pytest.raises(RunDirInUse, match=f"pid {process.pid} .*holder of the test"):
        run_study(study)  # before Ray is touched
    assert not (directory / "study_config.yaml").exists()


def test_study_run_command_is_refused_before_ray_starts(
    holder: tuple[subprocess.Popen, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    process, directory = holder
    data = directory.parent / "data"
    data.mkdir()
    (data / "manifest.csv").write_text("song_id,path,moods,artist,year\ns1,audio/s1.wav,happy,a1,2001\n")
    if ray.is_initialized():  # left by an earlier test: this one must see whether the command starts Ray
        ray.shutdown()
    started = time.monotonic()
    try:
        code = main(
            [
                "study",
                "run",
                "synthetic",
                "--set",
                f"storage_path={directory.parent}",
                "--set",
                f"name={directory.name}",
            ]
            + ["--set", f"run.dataset.root={data}"]
        )
        err = capsys.readouterr().err
        assert code == 2 and f"pid {process.pid}" in err and len(err.strip().splitlines()) == 1
        assert time.monotonic() - started < 30  # no Ray start: refused at once
        assert not ray.is_initialized()
    finally:
        if ray.is_initialized():  # the command started Ray after all: stop it for the tests after this one
            ray.shutdown()
