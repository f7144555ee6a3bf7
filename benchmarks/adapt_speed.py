"""Speed and memory of one stage-2 adaptation iteration: our step against a plain reference, side by side.

The **reference** is LWay's step written the obvious way, here in this file:
- the degradation embedding recomputed on every iteration from the bicubic-upsampled image
  (E on the same centred crop ``lway_rt.adapt.embed`` uses);
- the modulated convolution in DegAE's grouped form (one modulated, demodulated kernel per patch,
  ``groups=B``), from ``lway_rt.degae.modconv.grouped_modulated_conv``;
- the high-frequency weight through NumPy and ``pywt.dwt2`` on every step (a device-to-host copy);
- fp32, default (NCHW) memory format, plain Adam, ``loss.item()`` every step.

**Ours** are variants of the real ``lway_rt.adapt`` step:
- ``ours-plain``: ``step.adapt_step`` with ``embed.PreparedReconstructor`` (E once per image, R's
  factors once per image) -- what ``lwayrt adapt`` runs;
- ``ours-fold``: ``adapt.fast.fast_adapt_step`` with the per-image constants folded into R's kernels
  and one host-device sync per step, NCHW;
- ``ours-fast``: the same plus channels-last R and patches (``SpeedOptions()`` defaults: what the loop runs);
- ``ours-fast-snhwc``: ``ours-fast`` with S's weights channels-last too;
- ``ours-fast-whole``: ``ours-fast`` as it was before R ran one patch at a time and S's PReLU got its
  vectorised backward (``SpeedOptions(recon_chunk=0, fast_prelu=False)``), to measure that change;
- ``ours-bf16`` / ``ours-fp16``: ``ours-fast`` under autocast; ``ours-compile``: S under ``torch.compile``.

All variants start from the same backbone weights and consume the same patch sequence (one seed).
Before timing, the first-step losses of the reference and the fp32 variants (compile aside), computed in
float64 from the same weights and patches, must agree to 1e-5 (relative): they do the same arithmetic. The fp32
losses as timed are recorded too (they differ by the rounding of ~25 convolution layers, about 1e-5);
autocast variants report their difference. Timing interleaves the variants in rounds (order rotated
each round) in one process, so a shared machine's load hits all of them alike; the headline is the
median over rounds of reference time / variant time.

Memory (``--memory``): the real adaptation loop (``adapt_images``, default settings) runs in a child
process and reports its peak RSS on the CPU, or its CUDA allocator peak. ``--estimate-cuda`` estimates
the CUDA allocator peak of one step on a CPU-only machine from the tensors autograd keeps (an estimate,
not a measurement).

    .venv/bin/python benchmarks/adapt_speed.py --memory --estimate-cuda --patch-size 32 \
        --json benchmarks/results/adapt_speed_cpu_animevideov3.json
    .venv/bin/python benchmarks/adapt_speed.py --device cuda --model realesrgan-x4plus --iterations 100 --json OUT.json

More reproduce commands: benchmarks/README.md. ``--json FILE`` is written (replaced if it exists: naming it is asking
for it) atomically, as strict JSON; without it the results are only printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
from _args import nonnegative_int, positive_int, write_json  # noqa: E402

FP64_CHECKED = ("reference", "ours-plain", "ours-fold", "ours-fast", "ours-fast-snhwc", "ours-fast-whole")
ALL_VARIANTS = ("reference", "ours-plain", "ours-fold", "ours-fast", "ours-fast-snhwc", "ours-fast-whole", "ours-bf16",
                "ours-fp16", "ours-compile")
LOSS_RTOL = 1e-5


# ------------------------------------------------------------------------------------------
# inputs


def lr_photo(name: str, side: int, scale: int, with_hr: bool = False):
    """An LR test image: a centred (side*scale)^2 crop of a bundled photo, bicubic-downscaled x scale
    (and the crop itself, the ground truth, with ``with_hr``)."""
    from lway_rt.io.images import bundled_photo, resize_bicubic

    img = bundled_photo(name)
    hr_side = side * scale
    h, w = img.shape[:2]
    if min(h, w) < hr_side:
        raise SystemExit(f"error: photo {name} ({w}x{h}) is smaller than {hr_side} px; use a smaller --lr-size")
    t, l = (h - hr_side) // 2, (w - hr_side) // 2
    hr = np.ascontiguousarray(img[t:t + hr_side, l:l + hr_side, :3])
    lr = resize_bicubic(hr, (side, side))
    return (lr, hr) if with_hr else lr


def load_stage1_for_bench(which: str, device: str, seed: int):
    """The stage-1 pair to time with: ``fresh`` (default), ``shipped`` or a checkpoint path.

    ``fresh`` is R at its default width (64 channels, 4 blocks, 512-d embedding; DESIGN §2.2), freshly
    initialised: speed does not depend on R's weight values. It is built with its input skip (R starts
    near the identity), because a fresh R without it outputs almost zero everywhere, and the min-max
    normalised wavelet map of a near-flat image is rounding noise: the autocast variants' loss
    differences would then say nothing about a trained R. The skip costs one addition.
    ``shipped`` is the checkpoint that ``lwayrt adapt`` uses by default (its width is what it was
    trained at).
    """
    from lway_rt.degae import Stage1, default_checkpoint_path, load_stage1

    if which == "fresh":
        return (Stage1.fresh(seed=seed, skip=True, device=device).freeze(),
                "freshly initialised at the default width, skip=True")
    if which == "shipped":
        return load_stage1(device=device), f"shipped checkpoint {default_checkpoint_path().name}"
    return load_stage1(which, device=device), str(which)


# ------------------------------------------------------------------------------------------
# the plain reference


def pywt_hf_weight(pred: torch.Tensor) -> torch.Tensor:
    """LWay's wavelet weight through NumPy/pywt: BT.601 luma, haar dwt2, L2 of the detail bands,
    per-image min-max to [0, 1], nearest x2 back to full size, shared by the three channels."""
    import pywt

    x = pred.detach().cpu().numpy().astype(np.float64)
    out = np.empty_like(x)
    for i, img in enumerate(x):
        y = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
        _, (ch, cv, cd) = pywt.dwt2(y, "haar")
        e = np.sqrt(ch ** 2 + cv ** 2 + cd ** 2)
        span = e.max() - e.min()
        e = (e - e.min()) / span if span > 1e-12 else np.zeros_like(e)
        full = np.repeat(np.repeat(e, 2, axis=0), 2, axis=1)[: y.shape[0], : y.shape[1]]
        out[i] = full[None]
    return torch.from_numpy(out).to(pred.device, pred.dtype)


def reference_reconstruct(r, clean: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """R with every modulated conv in DegAE's grouped form (per-patch kernels built on every call)."""
    from lway_rt.degae.modconv import grouped_modulated_conv

    x = r.act(r.conv_first(clean))
    for block in r.blocks:
        x = block.res(x)
        mod = block.mod
        style = mod.modulation(e.reshape(e.shape[0], -1, 1, 1)).flatten(1)
        y = grouped_modulated_conv(x, mod.weight * mod.scale, style)
        x = mod.act(mod.conv_last(y))
    out = r.conv_last(r.act(r.conv_hr(x)))
    return out + clean if r.skip else out


def reference_loss(model, stage1, up_image: torch.Tensor, batch) -> torch.Tensor:
    from lway_rt.adapt.embed import EMBED_MAX_SIDE, _centre_crop

    with torch.no_grad():  # E is frozen; recomputed every iteration, the obvious way
        e = stage1.encoder(_centre_crop(up_image, EMBED_MAX_SIDE))
    sr = model(batch.lr)
    x_hat = reference_reconstruct(stage1.reconstructor, sr, e.expand(batch.lr.shape[0], -1))
    weight = pywt_hf_weight(x_hat)
    return ((x_hat - batch.up).abs() * weight).mean()


def reference_step(model, opt, stage1, up_image, batch) -> float:
    opt.zero_grad()
    loss = reference_loss(model, stage1, up_image, batch)
    loss.backward()
    opt.step()
    return loss.item()


# ------------------------------------------------------------------------------------------
# variants


class Variant:
    """One way of running the step: its own copy of S, its optimizer and a ``step(batch)`` callable."""

    def __init__(self, name: str, base: torch.nn.Module, stage1, image, emb: torch.Tensor, config):
        from lway_rt.adapt import fast
        from lway_rt.adapt.embed import PreparedReconstructor
        from lway_rt.adapt.losses import adaptation_loss
        from lway_rt.adapt.step import adapt_step

        self.name = name
        self.model = copy.deepcopy(base).train(False)
        for p in self.model.parameters():
            p.requires_grad_(True)
        params = list(self.model.parameters())
        if name == "reference":
            self.opt = torch.optim.Adam(params, lr=config.lr, betas=config.adam_betas)
            self.step = lambda b: reference_step(self.model, self.opt, stage1, image.up, b)
            self.first_loss = lambda b: reference_loss(self.model, stage1, image.up, b).item()
        elif name == "ours-plain":
            self.opt = torch.optim.Adam(params, lr=config.lr, betas=config.adam_betas)
            recon = PreparedReconstructor(stage1.reconstructor, emb)
            self.step = lambda b: adapt_step(self.model, self.opt, b, recon, config)["loss"]
            self.first_loss = lambda b: adaptation_loss(self.model(b.lr), b, recon, config)[0].item()
        else:
            opts = {
                "ours-fold": fast.SpeedOptions(channels_last=False),
                "ours-fast": fast.SpeedOptions(),
                "ours-fast-snhwc": fast.SpeedOptions(backbone_channels_last=True),
                "ours-fast-whole": fast.SpeedOptions(recon_chunk=0, fast_prelu=False),
                "ours-bf16": fast.SpeedOptions(autocast="bf16"),
                "ours-fp16": fast.SpeedOptions(autocast="fp16"),
                "ours-compile": fast.SpeedOptions(compile=True),
            }[name]
            self.options = opts
            self.opt = fast.make_optimizer(params, config, opts)
            call = fast.prepare_backbone(self.model, opts)
            recon = fast.FastReconstructor(stage1.reconstructor, emb, opts)

            def first(b, call=call, recon=recon, opts=opts):
                with fast._autocast(b.lr.device, opts.autocast):
                    sr = call(b.lr.contiguous(memory_format=opts.memory_format))
                    return fast.fast_adaptation_loss(sr, b, recon, config, 0)[0].item()

            self.step = lambda b: fast.fast_adapt_step(call, self.opt, b, recon, config, opts, image=0)["loss"]
            self.first_loss = first


def first_losses(names, base, stage1, image, config, batch, dtype) -> dict[str, float]:
    """Each variant's loss on ``batch`` from the initial weights, with every tensor cast to ``dtype``."""
    from lway_rt.adapt.embed import compute_embeddings
    from lway_rt.adapt.patches import AdaptImage, Batch

    base = copy.deepcopy(base).to(dtype)
    s1 = copy.deepcopy(stage1)
    s1.encoder.to(dtype)
    s1.reconstructor.to(dtype)
    img = AdaptImage(image.name, image.lr.to(dtype), image.scale)
    emb = compute_embeddings([img.up], s1)
    b = Batch(lr=batch.lr.to(dtype), up=batch.up.to(dtype), index=batch.index)
    return {v: Variant(v, base, s1, img, emb, config).first_loss(b) for v in names}


def _db(value: float) -> float | str:
    """PSNR for JSON: identical images give "identical" rather than an infinite number."""
    return round(value, 2) if np.isfinite(value) else "identical"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------
# memory of the real loop, in a child process


def _memory_child(args) -> dict:
    """Run the real adaptation loop (default settings except iterations) and report its peak memory."""
    from lway_rt.adapt._imageio import from_array
    from lway_rt.adapt.config import AdaptConfig
    from lway_rt.adapt.loop import adapt_images
    from lway_rt.bench.machine import peak_rss_mb, rss_mb
    from lway_rt.io.store import load_model

    torch.set_num_threads(args.threads)
    desc = load_model(args.model, device=args.device)
    stage1, _ = load_stage1_for_bench(args.stage1, args.device, args.seed)
    lr = lr_photo(args.photo, args.lr_size, desc.scale)
    config = AdaptConfig(iterations=args.memory_iterations, device=args.device, seed=args.seed,
                         **({"patch_size": args.patch_size} if args.patch_size else {}))
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        res = adapt_images([from_array("photo", lr)], desc, config, Path(tmp), stage1=stage1, write_outputs=False)
    out = {"peak_rss_mb": round(peak_rss_mb(), 1), "rss_end_mb": round(rss_mb() or 0.0, 1),
           "iterations": res.report["iterations_run"], "config": config.to_dict(),
           "lr_size": list(lr.shape[:2]), "ms_per_iteration_in_loop": res.report["timings"]["ms_per_iteration"]}
    if args.device.startswith("cuda"):
        out["cuda_allocator_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["cuda_reserved_peak_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


# every option ``_memory_child`` reads: the child measures what the parent was asked for (--patch-size was once left
# out, so ``--memory --patch-size 32`` measured the loop at the default 48)
MEMORY_CHILD_OPTIONS = ("model", "device", "threads", "stage1", "photo", "lr_size", "seed", "memory_iterations",
                        "patch_size")


def measure_loop_memory(args) -> dict:
    cmd = [sys.executable, __file__, "--memory-child"]
    for name in MEMORY_CHILD_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            cmd += ["--" + name.replace("_", "-"), str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"error: the memory run failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def estimate_step_memory(variant: Variant, batch) -> dict:
    """Estimate one step's device-memory peak from what it holds: parameters, gradients, Adam's two
    moments, the batch, and every tensor autograd saves for the backward pass (unique storages), plus
    the largest saved tensor twice over for the backward's transients. Measured on any device; an
    estimate of a CUDA allocator's peak (no cuDNN workspace, no allocator rounding)."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        saved[st.data_ptr()] = st.nbytes()
        return t

    variant.step(batch)  # Adam's state exists after one step
    params = [p for g in variant.opt.param_groups for p in g["params"]]
    p_bytes = sum(p.numel() * p.element_size() for p in params)
    opt_bytes = sum(t.numel() * t.element_size() for s in variant.opt.state.values() for t in s.values()
                    if isinstance(t, torch.Tensor))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        variant.step(batch)
    act = sum(saved.values())
    largest = max(saved.values(), default=0)
    batch_bytes = sum(t.numel() * t.element_size() for t in (batch.lr, batch.up))
    total = 2 * p_bytes + opt_bytes + act + 2 * largest + batch_bytes
    # the loop also keeps the last good weights and optimizer state for its drift guard
    loop_total = total + p_bytes + opt_bytes
    mb = lambda n: round(n / 2**20, 1)  # noqa: E731
    return {"params_mb": mb(p_bytes), "grads_mb": mb(p_bytes), "adam_state_mb": mb(opt_bytes),
            "saved_activations_mb": mb(act), "largest_saved_mb": mb(largest), "batch_mb": mb(batch_bytes),
            "estimated_step_peak_mb": mb(total), "estimated_loop_peak_mb": mb(loop_total)}


# ------------------------------------------------------------------------------------------
# main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="realesr-animevideov3", help="backbone S (store name or weights file)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    p.add_argument("--stage1", default="fresh",
                   help="fresh (R at its default width, untrained; the default), shipped, or a checkpoint path")
    p.add_argument("--photo", default="astronaut", help="bundled scikit-image photo the LR image is cut from")
    p.add_argument("--lr-size", type=positive_int, default=128, help="LR image side (E then sees 512 px at x4)")
    p.add_argument("--variants", default="reference,ours-plain,ours-fold,ours-fast,ours-fast-snhwc,ours-bf16",
                   help=f"comma-separated, from {','.join(ALL_VARIANTS)} ('reference' is always run)")
    p.add_argument("--iterations", type=positive_int, default=16, help="timed iterations per variant (spread over the rounds)")
    p.add_argument("--rounds", type=positive_int, default=16, help="interleaved rounds (one iteration each by default: the finest interleaving)")
    p.add_argument("--warmup", type=nonnegative_int, default=2, help="untimed iterations per variant first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patch-size", type=positive_int, default=None,
                   help="LR patch side [adapt's default, 48; the committed CPU results used 32]")
    p.add_argument("--memory", action="store_true", help="also measure the real loop's peak memory (child process)")
    p.add_argument("--memory-iterations", type=positive_int, default=10)
    p.add_argument("--estimate-cuda", action="store_true", help="estimate one step's device-memory peak per variant")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(_memory_child(args)))
        return 0
    from lway_rt.adapt.config import AdaptConfig
    from lway_rt.adapt.embed import compute_embeddings
    from lway_rt.adapt.patches import AdaptImage, sample_batch
    from lway_rt.bench.machine import load_average, machine_info, package_versions, peak_rss_mb
    from lway_rt.io.store import load_model

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA GPU; run on a GPU machine or use --device cpu")
    torch.set_num_threads(args.threads)
    variants = ["reference"] + [v for v in args.variants.split(",") if v and v != "reference"]
    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(ALL_VARIANTS)}")
    if args.rounds < 1 or args.iterations < args.rounds:
        raise SystemExit("error: --iterations must be >= --rounds >= 1")
    load_before = load_average()
    torch.manual_seed(args.seed)
    desc = load_model(args.model, device=args.device)
    stage1, stage1_source = load_stage1_for_bench(args.stage1, args.device, args.seed)
    config = AdaptConfig(device=args.device, seed=args.seed, **({"patch_size": args.patch_size} if args.patch_size else {}))
    lr, hr = lr_photo(args.photo, args.lr_size, desc.scale, with_hr=True)
    x = torch.from_numpy(lr.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).to(args.device)
    image = AdaptImage.from_lr(args.photo, x, desc.scale)
    emb = compute_embeddings([image.up], stage1)
    per_round = -(-args.iterations // args.rounds)
    gen = torch.Generator().manual_seed(args.seed)
    batches = [sample_batch([image], config.batch_size, config.patch_size, desc.scale, gen)
               for _ in range(args.warmup + per_round * args.rounds)]

    # 1. the same first-step loss (same initial weights, same first batch), in float64 so that the check
    #    tests the arithmetic, not the rounding of ~25 fp32 convolution layers; then the fp32 values.
    checked = [v for v in variants if v in FP64_CHECKED]
    first64 = first_losses(checked, desc.model, stage1, image, config, batches[0], torch.float64)
    rel64 = {v: abs(first64[v] - first64["reference"]) / abs(first64["reference"]) for v in checked}
    print("first-step loss, float64: " + ", ".join(f"{v} {first64[v]:.12g} (rel {rel64[v]:.1e})" for v in checked),
          flush=True)
    bad = [v for v in checked if rel64[v] > LOSS_RTOL]
    if bad:
        raise SystemExit(f"error: first-step loss of {', '.join(bad)} differs from the reference by more than "
                         f"{LOSS_RTOL:g} (relative, float64): the variants do not compute the same thing")
    built = {v: Variant(v, desc.model, stage1, image, emb, config) for v in variants}
    first = {v: built[v].first_loss(batches[0]) for v in variants}
    ref = first["reference"]
    rel = {v: abs(first[v] - ref) / abs(ref) for v in variants}
    print("first-step loss, as timed: " + ", ".join(f"{v} {first[v]:.7g} (rel {rel[v]:.1e})" for v in variants),
          flush=True)

    # 2. warm-up (the first warm-up step is counted for FLOPs: what the step computes, forward and
    #    backward), the machine's dense-kernel ceiling now, then interleaved timing
    from torch.utils.flop_counter import FlopCounterMode

    from lway_rt.bench.flops import measure_peak

    flops = {}
    for v in variants:
        for k, b in enumerate(batches[: args.warmup]):
            if k == 0 and v != "ours-compile":
                with FlopCounterMode(display=False) as counter:
                    built[v].step(b)
                flops[v] = counter.get_total_flops()
            else:
                built[v].step(b)
    _sync(args.device)
    peak_before = measure_peak(device=args.device.split(":")[0], threads=args.threads)
    times: dict[str, list[list[float]]] = {v: [] for v in variants}
    cuda_peak = {}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        chunk = batches[args.warmup + r * per_round: args.warmup + (r + 1) * per_round]
        for v in order:
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            ts = []
            for b in chunk:
                t0 = time.perf_counter()
                built[v].step(b)
                _sync(args.device)
                ts.append(time.perf_counter() - t0)
            times[v].append(ts)
            if args.device.startswith("cuda"):
                cuda_peak[v] = max(cuda_peak.get(v, 0.0), torch.cuda.max_memory_allocated() / 2**20)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{v} {1000 * statistics.median(times[v][-1]):.1f} ms" for v in variants), flush=True)

    peak_after = measure_peak(device=args.device.split(":")[0], threads=args.threads)

    # 3. where the timed steps took each variant: all saw the same patches from the same start, so the
    #    adapted models should agree; Y-PSNR against the ground-truth crop, and against the reference's
    #    adapted output (how closely a variant follows the reference's trajectory).
    from lway_rt.metrics import psnr_y

    outputs = {}
    with torch.no_grad():
        for v in variants:
            sr = built[v].model(x).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
            outputs[v] = np.round(sr * 255.0).astype(np.uint8)
    after = {v: {"steps": args.warmup + per_round * args.rounds,
                 "psnr_y_vs_ground_truth": round(psnr_y(outputs[v], hr, desc.scale), 3),
                 "psnr_y_vs_reference_output": (None if v == "reference" else
                                                _db(psnr_y(outputs[v], outputs["reference"], desc.scale)))}
             for v in variants}
    peak = (peak_before["best"] + peak_after["best"]) / 2
    results = {}
    for v in variants:
        flat = [t for rnd in times[v] for t in rnd]
        ratios = [statistics.median(times["reference"][k]) / statistics.median(times[v][k]) for k in range(args.rounds)]
        results[v] = {"ms_per_iteration_median": round(1000 * statistics.median(flat), 2),
                      "ms_per_iteration_mean": round(1000 * statistics.fmean(flat), 2),
                      "ms_per_iteration_min": round(1000 * min(flat), 2),
                      "speedup_vs_reference_per_round": [round(x, 3) for x in ratios],
                      "speedup_vs_reference": round(statistics.median(ratios), 3),
                      "first_step_loss": first[v], "first_step_loss_rel_diff": rel[v],
                      "first_step_loss_fp64": first64.get(v), "first_step_loss_fp64_rel_diff": rel64.get(v)}
        results[v]["after_timed_steps"] = after[v]
        if v in flops:
            gflops = flops[v] / statistics.median(flat) / 1e9
            results[v]["gflop_per_iteration"] = round(flops[v] / 1e9, 2)
            results[v]["achieved_gflops"] = round(gflops, 1)
            results[v]["fraction_of_measured_peak"] = round(gflops / peak, 3)
        if v in cuda_peak:
            results[v]["cuda_allocator_peak_mb_all_variants_resident"] = round(cuda_peak[v], 1)
    if args.estimate_cuda:
        for v in variants:
            results[v]["step_memory_estimate"] = estimate_step_memory(built[v], batches[0])
    report = {
        "format": "lway_rt.adapt-speed/1",
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(), "load_average_before": load_before, "load_average_after": load_average(),
        "versions": package_versions(), "threads": torch.get_num_threads(), "device": args.device,
        "model": args.model, "stage1": {"source": stage1_source, "width": stage1.reconstructor.width, "skip": stage1.reconstructor.skip,
                                        "blocks": len(stage1.reconstructor.blocks), "embed_dim": stage1.embed_dim},
        "image": {"photo": args.photo, "lr_size": list(lr.shape[:2]), "scale": desc.scale},
        "config": {"patch_size": config.patch_size, "batch_size": config.batch_size, "loss": config.loss,
                   "target": config.target, "hf_mode": config.hf_mode, "hf_source": config.hf_source, "lr": config.lr},
        "timing": {"rounds": args.rounds, "iterations_per_round": per_round, "warmup": args.warmup,
                   "interleaved": True, "loss_rtol": LOSS_RTOL},
        "measured_peak_gflops": {"before": peak_before, "after": peak_after,
                                 "note": "best of a large matmul and a 64-channel 3x3 convolution, same threads"},
        "variants": results,
        "peak_rss_mb_this_process": round(peak_rss_mb(), 1),
    }
    if args.memory:
        report["loop_memory"] = measure_loop_memory(args)
    print(json.dumps({v: {k: r.get(k) for k in ("ms_per_iteration_median", "speedup_vs_reference",
                                                  "gflop_per_iteration", "fraction_of_measured_peak",
                                                  "after_timed_steps")}
                      for v, r in results.items()}, indent=1))
    if "loop_memory" in report:
        print("loop memory:", json.dumps({k: v for k, v in report["loop_memory"].items() if k != "config"}))
    if args.json:
        write_json(args.json, report, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
