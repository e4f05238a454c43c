"""Inference: mtlmood's library predict path vs musicnn MTT_vgg, same clips, same machine, same run.

    .venv/bin/python -m benchmarks.inference_bench [--rounds 7] [--extras] [--no-peer]

Every round runs, in a rotating order, one pass over the real clips (first 29 s) per
variant: ``Predictor.predict_file`` per file (decode -> log-mel -> segments -> forward
-> mean) at paper width (128 filters, 5 blocks; untrained weights, speed does not
depend on them) with each speed option, ``Predictor.predict_files`` (decode-ahead +
cross-file batches), and one pass of the peer (benchmarks/peer_musicnn.py in its own
venv: one persistent TF session, all of a file's patches in one run; it times itself).
Then the same for the network alone (each file's segments, one forward per file, as
the peer's ``forward`` stage), with 1 and 2 torch threads, and all files' segments in
one call (batching across files).

Accuracy: every variant's song probabilities against the fp32 reference path
(``fused=False``, NCHW, librosa features), max |Δp| over clips and moods.
``--extras`` adds what was tried and is not kept: torch.jit trace+freeze,
torch.compile (compile time reported), the bf16-weights model without autocast,
ONNX Runtime (only if importable; it is not a project dependency).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from benchmarks.common import (
    PEER_VENV,
    REPO,
    fmt,
    interleaved,
    machine,
    machine_line,
    publish,
    require_audio_files,
    table,
    untrained_predictor_parts,
)


class Peer:
    """benchmarks/peer_musicnn.py as a persistent subprocess: one JSON line per ``pass``."""

    def __init__(self, files: list[Path], python: Path) -> None:
        self.proc = subprocess.Popen(
            [str(python), str(REPO / "benchmarks" / "peer_musicnn.py"), *map(str, files)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.ready = self._read()
        if not self.ready.get("restore", {}).get("ok"):
            raise RuntimeError(f"the peer's weight restore failed: {self.ready}")
        self.passes: list[dict[str, Any]] = []

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer exited (code {self.proc.poll()})")
        return json.loads(line)

    def run_pass(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("pass\n")
        result = self._read()
        self.passes.append(result)
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def ensure_peer(no_setup: bool = False) -> Optional[Path]:
    """The peer venv's python, running benchmarks/setup_peer.sh first if needed; None if unavailable."""
    python = PEER_VENV / "bin" / "python"
    if python.exists():
        return python
    if no_setup:
        return None
    print("  installing the peer (benchmarks/setup_peer.sh) ...", flush=True)
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "setup_peer.sh")], capture_output=True, text=True)
    if done.returncode != 0 or not python.exists():
        print(f"  peer setup failed: {done.stderr.strip()[-500:]}", flush=True)
        return None
    return python


def with_threads(n: int, fn: Callable[[], Any]) -> Callable[[], Any]:
    import torch

    def call() -> Any:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    return call


def extras(model: Any, card: Any, segs: list[np.ndarray]) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """Network-only variants that were tried and not kept (see the module docstring)."""
    import torch
    from torch import nn

    class MoodOnly(nn.Module):
        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.m(x, with_meta=False)[0])

    notes: dict[str, Any] = {}
    out: dict[str, Callable[[], Any]] = {}
    xs = [torch.from_numpy(s) for s in segs]
    cl = copy.deepcopy(model).use_channels_last()
    with torch.inference_mode():
        t0 = time.perf_counter()
        frozen = torch.jit.freeze(torch.jit.trace(MoodOnly(cl).eval(), xs[0]))
        notes["jit_freeze_s"] = round(time.perf_counter() - t0, 2)

        def run_frozen() -> None:
            with torch.inference_mode():
                for x in xs:
                    frozen(x)

        out["jit trace+freeze fp32 channels-last"] = run_frozen

        bf = copy.deepcopy(model).use_channels_last().to(torch.bfloat16)

        def run_bf16_weights() -> None:
            with torch.inference_mode():
                for x in xs:
                    bf(x.to(torch.bfloat16), with_meta=False)

        out["bf16 weights, channels-last (no autocast)"] = run_bf16_weights

        try:
            t0 = time.perf_counter()
            compiled = torch.compile(MoodOnly(copy.deepcopy(model).use_channels_last().to(torch.bfloat16)).eval())
            for x in xs:  # one compile per distinct batch size, as a server would see
                compiled(x.to(torch.bfloat16))
            notes["torch_compile_bf16_s"] = round(time.perf_counter() - t0, 1)

            def run_compiled() -> None:
                with torch.inference_mode():
                    for x in xs:
                        compiled(x.to(torch.bfloat16))

            out["torch.compile bf16 channels-last"] = run_compiled
        except Exception as exc:  # no C++ toolchain, or an inductor limitation
            notes["torch_compile_error"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        import io

        import onnxruntime as ort

        buffer = io.BytesIO()
        torch.onnx.export(
            MoodOnly(copy.deepcopy(model)).eval(),
            (xs[0],),
            buffer,
            dynamo=False,
            input_names=["x"],
            output_names=["p"],
            dynamic_axes={"x": {0: "batch"}},
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        out["onnxruntime fp32"] = lambda: [session.run(None, {"x": s}) for s in segs]
        notes["onnxruntime"] = ort.__version__
    except Exception as exc:
        notes["onnxruntime_error"] = f"{type(exc).__name__}: {exc}"[:200]
    return out, notes


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--extras", action="store_true", help="also time the variants that were not kept")
    parser.add_argument("--no-peer", action="store_true", help="skip the peer (and never install it)")
    parser.add_argument("--n-filters", type=int, default=128)
    parser.add_argument("--name", default="", help="result file name (default: inference, or inference_extras)")
    args = parser.parse_args(argv)

    import torch

    from mtlmood.features import features_from_file
    from mtlmood.inference import Predictor

    info = machine()
    files = require_audio_files()
    model, card = untrained_predictor_parts(args.n_filters)
    reference = Predictor(copy.deepcopy(model), card, fused=False, mel_method="librosa")
    default_name = "fused fp32 + fast mel (default)"
    predictors = {  # cumulative steps from the old library path to the fastest options
        "reference: plain fp32 NCHW, librosa mel": reference,
        "plain fp32 channels-last": Predictor(
            copy.deepcopy(model), card, fused=False, channels_last=True, mel_method="librosa"
        ),
        "plain bf16 autocast + channels-last": Predictor(
            copy.deepcopy(model), card, fused=False, channels_last=True, precision="bf16", mel_method="librosa"
        ),
        "fused fp32, librosa mel": Predictor(copy.deepcopy(model), card, mel_method="librosa"),
        default_name: Predictor(copy.deepcopy(model), card),
        "fused bf16 + fast mel": Predictor(copy.deepcopy(model), card, precision="bf16"),
    }
    batched = {
        "fused fp32 + fast mel, predict_files": predictors[default_name],
        "fused bf16 + fast mel, predict_files": predictors["fused bf16 + fast mel"],
    }
    # Accuracy against the fp32 reference path, song level.
    expected = [np.array(list(reference.predict_file(f).probabilities.values())) for f in files]

    def worst(predictions: Any) -> float:
        got = [np.array(list(p.probabilities.values())) for p in predictions]
        return float(max(np.abs(a - b).max() for a, b in zip(got, expected)))

    accuracy = {name: worst(p.predict_file(f) for f in files) for name, p in predictors.items()}
    accuracy.update({name: worst(p.predict_files(files)) for name, p in batched.items()})

    segments = [reference.segments(features_from_file(f, card.features)) for f in files]  # librosa mel
    n_files, n_segments = len(files), int(sum(len(s) for s in segments))
    print(f"inference: {n_files} clips, {n_segments} segments; torch threads {torch.get_num_threads()}", flush=True)

    peer: Optional[Peer] = None
    peer_note = "not run (--no-peer)"
    if not args.no_peer:
        python = ensure_peer()
        if python is None:
            peer_note = "unavailable (benchmarks/setup_peer.sh failed)"
        else:
            peer = Peer(files, python)
            peer_note = "ok"

    file_variants: dict[str, Callable[[], Any]] = {
        name: (lambda p=p: [p.predict_file(f) for f in files]) for name, p in predictors.items()
    }
    file_variants.update({name: (lambda p=p: list(p.predict_files(files))) for name, p in batched.items()})
    if peer is not None:
        file_variants["peer: musicnn MTT_vgg (TF, one session)"] = peer.run_pass
    try:
        files_t = interleaved(file_variants, args.rounds, warmup=1, progress="files")
        # The peer timed itself (no IPC in it): use its own numbers, from the timed rounds only.
        peer_stages: dict[str, float] = {}
        if peer is not None:
            timed = peer.passes[-args.rounds :]
            files_t.seconds["peer: musicnn MTT_vgg (TF, one session)"] = [p["seconds"] for p in timed]
            peer_stages = {k: float(np.median([p["stages"][k] for p in timed])) for k in timed[0]["stages"]}
    finally:
        if peer is not None:
            peer.close()

    net_variants: dict[str, Callable[[], Any]] = {}
    nets = {
        "reference: plain fp32 NCHW": reference,
        "plain fp32 channels-last": predictors["plain fp32 channels-last"],
        "plain bf16 autocast + channels-last": predictors["plain bf16 autocast + channels-last"],
        "fused fp32 (default)": predictors[default_name],
        "fused bf16": predictors["fused bf16 + fast mel"],
    }
    for name, p in nets.items():
        net_variants[name] = lambda p=p: [p.predict_segments(s) for s in segments]
    stacked = np.concatenate(segments)  # batching across files: one call for all 52 segments
    for name in ("fused fp32 (default)", "fused bf16"):
        p = nets[name]
        net_variants[f"{name}, all files' segments in one call"] = lambda p=p: p.predict_segments(stacked)
    for threads in (1, 2):
        if threads != torch.get_num_threads():
            for name in ("fused fp32 (default)", "fused bf16"):
                p = nets[name]
                net_variants[f"{name}, {threads} thread(s)"] = with_threads(
                    threads, lambda p=p: [p.predict_segments(s) for s in segments]
                )
    notes: dict[str, Any] = {}
    if args.extras:
        extra, notes = extras(model, card, segments)
        net_variants.update(extra)
    net_t = interleaved(net_variants, args.rounds, warmup=1, progress="network")

    base = files_t.median("reference: plain fp32 NCHW, librosa mel")
    peer_name = "peer: musicnn MTT_vgg (TF, one session)"
    peer_s = files_t.median(peer_name) if peer_name in files_t.seconds else float("nan")
    rows, results = [], {}
    for name in file_variants:
        s = files_t.median(name)
        results[name] = {
            "median_s": s,
            "iqr_s": files_t.spread(name),
            "files_per_s": n_files / s,
            "segments_per_s": n_segments / s,
            "vs_reference": base / s,
            "vs_peer": peer_s / s if peer is not None else None,
            "max_abs_dprob": accuracy.get(name),
        }
        rows.append(
            [
                name,
                fmt(n_files / s),
                fmt(n_segments / s),
                f"{base / s:.2f}×",
                f"{peer_s / s:.2f}×" if peer is not None else "–",
                "peer" if name == peer_name else f"{accuracy[name]:.1e}",
            ]
        )
    net_base = net_t.median("reference: plain fp32 NCHW")
    net_rows, net_results = [], {}
    peer_fwd = peer_stages.get("forward")
    for name in net_variants:
        s = net_t.median(name)
        net_results[name] = {"median_s": s, "segments_per_s": n_segments / s, "vs_reference": net_base / s}
        net_rows.append(
            [name, fmt(n_segments / s), f"{net_base / s:.2f}×", f"{peer_fwd / s:.2f}×" if peer_fwd else "–"]
        )
    if peer_fwd:
        net_rows.append(
            [
                "peer: MTT_vgg forward stage (TF fp32)",
                fmt(n_segments / peer_fwd),
                f"{net_base / peer_fwd:.2f}×",
                "1.00×",
            ]
        )

    payload = {
        "machine": info,
        "files": [f.name for f in files],
        "n_files": n_files,
        "n_segments": n_segments,
        "rounds": args.rounds,
        "peer": peer_note,
        "peer_ready": peer.ready if peer else None,
        "peer_stage_seconds": peer_stages,
        "file_level": results,
        "network_only": net_results,
        "extras_notes": notes,
        "tolerances": {"fp32": 1e-5, "bf16": 2e-2},
    }
    md = [
        "# Inference benchmark",
        "",
        machine_line(info),
        "",
        f"{n_files} real clips (first 29 s), {n_segments} segments; untrained paper-width model "
        f"({args.n_filters} filters, 5 blocks); median of {args.rounds} interleaved rounds. "
        f"Peer: musicnn 0.1.0 MTT_vgg, TF {peer.ready['tf'] if peer else '–'}, one persistent session, "
        f"all patches of a file per run (weights restore verified: "
        f"{peer.ready['restore'] if peer else peer_note}).",
        "",
        "## Files end to end (decode + log-mel + forward)",
        "",
        table(["variant", "files/s", "segments/s", "vs reference", "vs peer", "max abs Δp vs fp32 ref"], rows),
        "",
        "## Network only (per file, one forward of its segments)",
        "",
        table(["variant", "segments/s", "vs reference", "vs peer forward"], net_rows),
    ]
    if peer_stages:
        md += ["", "Peer stages (s per pass, median): " + ", ".join(f"{k} {v:.3f}" for k, v in peer_stages.items())]
    if notes:
        md += ["", "Extras: " + json.dumps(notes)]
    return publish(args.name or ("inference_extras" if args.extras else "inference"), payload, md)


if __name__ == "__main__":
    main()
    sys.exit(0)
