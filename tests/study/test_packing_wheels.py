"""benchmarks/build_wheels.py, without the network: what it would carry to the GPU machine (its
listing mode), and the slimming of Ray's wheel (on a small stand-in wheel: RECORD rewritten to
match what is left, the dashboard's static folder kept with a placeholder)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from benchmarks.build_wheels import IMAGE_PACKAGES, PLACEHOLDER, SKIPPED, main, read_image_packages, slim_wheel


def test_the_listing_carries_what_the_image_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list", "--grpcio", "1.84.0"]) == 0
    out = capsys.readouterr().out
    carried = out[: out.index("left to the image")]
    for wanted in ("ray==2.60.0", "optuna==", "librosa==", "pydantic==", "fastapi==", "soundfile==", "sqlalchemy=="):
        assert f"  {wanted}" in carried, wanted
    assert "  grpcio-reflection==1.84.0" in carried  # grpcio's companions match the image's grpcio
    for absent in ("torch==", "numpy==", "grpcio==", "mtlmood==", "virtualenv==", "cryptography=="):
        assert f"  {absent}" not in carried, absent
    assert "torch: not carried (the image's build)" in out and "virtualenv: not carried" in out


def test_the_image_list_parses() -> None:
    image = read_image_packages(IMAGE_PACKAGES)
    assert image["torch"] == "2.11.0" and image["numpy"] == "2.5.2" and image["grpcio"] is None
    assert "ray" not in image and "pydantic" not in image and not set(SKIPPED) & set(image)


def _stand_in_wheel(path: Path) -> None:
    files = {
        "ray/__init__.py": b"",
        "ray/jars/ray_dist.jar": b"x" * 1000,
        "ray/rllib/__init__.py": b"",
        "ray/dashboard/client/build/index.html": b"<html></html>",
        "ray/dashboard/client/build/static/js/main.js": b"y" * 1000,
        "ray-2.60.0.dist-info/METADATA": b"Name: ray\nVersion: 2.60.0\n",
    }
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr("ray-2.60.0.dist-info/RECORD", "".join(f"{name},,\n" for name in files))


def test_slimming_drops_the_unused_parts_and_rewrites_record(tmp_path: Path) -> None:
    wheel = tmp_path / "ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl"
    _stand_in_wheel(wheel)
    before, after = slim_wheel(wheel)
    assert after < before
    with zipfile.ZipFile(wheel) as slim:
        assert slim.testzip() is None
        names = set(slim.namelist())
        assert {"ray/__init__.py", "ray/dashboard/client/build/index.html", PLACEHOLDER} <= names
        assert not any(n.startswith(("ray/jars/", "ray/rllib/", "ray/dashboard/client/build/static/js")) for n in names)
        rows = list(csv.reader(io.StringIO(slim.read("ray-2.60.0.dist-info/RECORD").decode())))
    assert {row[0] for row in rows} == names
    for name, digest, size in rows:
        if name.endswith("RECORD"):
            assert digest == size == ""
            continue
        with zipfile.ZipFile(wheel) as slim:
            data = slim.read(name)
        expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert digest == f"sha256={expected}" and int(size) == len(data)
