"""The training benchmark's step rates: ``WindowSampler`` batches/s vs optimizer steps/s with fp32
NCHW, fp32 channels-last and bf16 autocast at two widths on the CPU (sections 2 and 3 of
benchmarks/train_bench.py), and whole paper-width steps on an accelerator with each data path and
precision option (section 4)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from benchmarks.common import interleaved
from benchmarks.train_fits import base_config


def steps(study: Any, rounds: int) -> dict[str, Any]:
    """Sampler batches/s vs optimizer steps/s, and the bf16 / channels-last step times."""
    import torch

    from mtlmood.loss import multitask_loss, resolve_alpha
    from mtlmood.model import MoodCNN
    from mtlmood.rundata import load_run_data
    from mtlmood.sampler import WindowSampler

    config = base_config(study, 1)
    data = load_run_data(config)
    ids = data.song_ids("train")
    mood, meta = data.targets("train")
    frames = config.model.segment_frames  # the run's window: the model's head is sized for it
    sampler = WindowSampler(data.cache, ids, mood, meta, 32, frames, batches_per_epoch=10_000, seed=0)
    batch = sampler.batch(1, 0)
    n_sampler = 200

    def sample() -> None:
        for i in range(n_sampler):
            sampler.batch(2, i)

    alpha = resolve_alpha("auto", data.n_moods, data.n_meta)
    x, m, a = (torch.from_numpy(t) for t in batch)
    variants: dict[str, Callable[[], Any]] = {"sampler: 200 batches": sample}
    n_steps = {16: 6, 128: 2}
    threads = {16: 1, 128: torch.get_num_threads()}

    def make_step(width: int, bf16: bool, cl: bool) -> Callable[[], Any]:
        torch.manual_seed(0)
        model = MoodCNN(replace(config.model, n_filters=width), data.n_moods, data.n_meta).train()
        if cl:
            model.use_channels_last()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

        def step() -> None:
            before = torch.get_num_threads()
            torch.set_num_threads(threads[width])
            try:
                for _ in range(n_steps[width]):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        mood_logits, meta_logits = model(x)
                    total, _, _ = multitask_loss(mood_logits, meta_logits, m, a, alpha)
                    opt.zero_grad(set_to_none=True)
                    total.backward()
                    opt.step()
            finally:
                torch.set_num_threads(before)

        return step

    kinds = {
        "fp32 NCHW": (False, False),
        "fp32 channels-last": (False, True),
        "bf16 autocast + channels-last": (True, True),
    }
    for width in (16, 128):
        for kind, (bf16, cl) in kinds.items():
            variants[f"step width {width}: {kind}"] = make_step(width, bf16, cl)
    t = interleaved(variants, rounds, warmup=1, progress="steps")
    sampler_rate = n_sampler / t.median("sampler: 200 batches")
    out: dict[str, Any] = {
        "sampler_batches_per_s": sampler_rate,
        "n_mels": config.model.n_mels,
        "segment_frames": frames,
        "steps": {},
    }
    for width in (16, 128):
        base = None
        for kind in kinds:
            name = f"step width {width}: {kind}"
            rate = n_steps[width] / t.median(name)
            base = base or rate
            out["steps"][name] = {
                "steps_per_s": rate,
                "segments_per_s": rate * 32,
                "vs_fp32_nchw": rate / base,
                "sampler_over_step": sampler_rate / rate,
                "torch_threads": threads[width],
            }
    return out


def accelerator_steps(
    study: Any, device_name: str, n_steps: int, rounds: int, compile_model: bool = True
) -> dict[str, Any]:
    """Paper-width training steps/s on ``device_name`` with each data path and precision option."""
    import torch

    from mtlmood.loss import multitask_loss, resolve_alpha
    from mtlmood.model import MoodCNN
    from mtlmood.rundata import load_run_data
    from mtlmood.sampler import DeviceWindowSampler, WindowSampler

    device = torch.device(device_name)
    config = base_config(study, 1)
    data = load_run_data(config)
    ids = data.song_ids("train")
    mood, meta = data.targets("train")
    kwargs = dict(batch_size=32, segment_frames=config.model.segment_frames, batches_per_epoch=100_000, seed=0)
    host = WindowSampler(data.cache, ids, mood, meta, **kwargs)
    on_device = DeviceWindowSampler(data.cache, ids, mood, meta, device=device, **kwargs)
    alpha = resolve_alpha("auto", data.n_moods, data.n_meta)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def make(sampler_kind: str, bf16: bool, cl: bool, compiled: bool) -> Callable[[], Any]:
        torch.manual_seed(0)
        model = MoodCNN(replace(config.model, n_filters=128), data.n_moods, data.n_meta).to(device).train()
        if cl:
            model.use_channels_last()
        net = torch.compile(model) if compiled else model
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        cursor = [0]

        def batches() -> Any:
            start = cursor[0]
            cursor[0] += n_steps
            for i in range(start, start + n_steps):
                if sampler_kind == "device":
                    yield on_device.batch(1, i)
                else:
                    x, m, a = host.batch(1, i)
                    yield (
                        torch.from_numpy(x).to(device, non_blocking=True),
                        torch.from_numpy(m).to(device, non_blocking=True),
                        torch.from_numpy(a).to(device, non_blocking=True),
                    )

        def run() -> None:
            for x, m, a in batches():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    mood_logits, meta_logits = net(x)
                total, _, _ = multitask_loss(mood_logits, meta_logits, m, a, alpha)
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
            sync()

        return run

    variants = {
        "host sampler + copy, fp32 (baseline)": ("host", False, False, False),
        "device sampler, fp32": ("device", False, False, False),
        "device sampler, bf16 autocast": ("device", True, False, False),
        "device sampler, bf16 + channels-last": ("device", True, True, False),
    }
    if compile_model:
        variants["device sampler, bf16 + channels-last + torch.compile"] = ("device", True, True, True)
    runs = {name: make(*spec) for name, spec in variants.items()}
    t = interleaved(runs, rounds, warmup=1, progress="accelerator")  # the warm-up pays for compilation
    base = None
    out: dict[str, Any] = {
        "device": str(device),
        "n_steps": n_steps,
        "n_mels": config.model.n_mels,  # the window the steps ran at (the synthetic set's, not the paper's)
        "segment_frames": config.model.segment_frames,
        "steps": {},
    }
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    for name in variants:
        rate = n_steps * 32 / t.median(name)
        base = base or rate
        out["steps"][name] = {"segments_per_s": rate, "vs_baseline": rate / base}
    return out
