"""Stage-1 training: E's head and R on synthetic degradations of clean photos.

Design origin: DegAE's cross-image pre-training (``lyh-18/DegAE_DegradationAutoencoder``): R rebuilds
image A's degraded version from clean A and the embedding of *another* image B degraded with the
same draw, while a consistency term pulls the embeddings of A and B together. LWay (CVPR 2024)
draws the same-image variant; it is kept as ``pairing="same"``. Written anew.

Loss = pixel(R(clean_A, E(deg_B)), deg_A) + w_p * perceptual + w_c * consistency + w_a * (RMS(e) - 1)^2.
- pixel: the paper's L1, or (default) Charbonnier with eps 0.01 (quadratic below 2.5 grey levels,
  L1 above). Measured on a fixed batch with a skip-connected R: under plain L1 the residual shrank
  to zero and stayed there (the gradient is a +-1 sign per pixel, dominated by noise and 8-bit
  quantisation), under Charbonnier it grew and the loss fell.
- perceptual: LPIPS needs AlexNet/VGG weights that cannot be fetched offline; the substitute that
  runs here is an L1 between the frozen trunk's features of output and target ("trunk-l1").
- consistency: ``"normalised"`` (default) is ||e_A - e_B||^2 over the batch's embedding variance,
  so it cannot be lowered by shrinking every embedding towards one point (the collapse DESIGN.md
  section 2.5 warns about); ``"mse"`` is DegAE's plain MSE. The RMS anchor pins the embedding's
  scale, which the scale-invariant ratio leaves free to grow.

``train_step`` is a pure step: (networks, optimiser, batch, config) -> metrics. ``train`` loops,
writes atomic checkpoints (weights as safetensors with the full recipe, optimiser and RNG state in
a ``.resume.pt`` beside them) and resumes from them.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from lway_rt.degae import Stage1, load_stage1
from lway_rt.bench.machine import cpu_model
from lway_rt.degae.data import BUNDLED_TRAIN, folder_digests, load_images, random_crops, same_file
from lway_rt.degae.degrade import SynthConfig, apply_degradation, sample_degradation
from lway_rt.degae.trunk import TrunkSpec
from lway_rt.io.images import image_subfolders
from lway_rt.io.weights import ensure_writable_dir, exclusive_run, file_id, refuse_if_busy
from lway_rt.errors import (STOPS, DamagedFileError, InputError, Interrupted, ModelError, OutputError,
                            TrainingError, WriteFailed, finishing_steps, listing)

__all__ = ["TrainConfig", "Batch", "batch_rng", "make_batch", "BatchSource", "batch_loss", "train_step", "train", "TrainResult"]


LPIPS_MIN_CROP = 31  # the smallest side LPIPS-AlexNet takes (30 px leaves its last max-pool a 2x2 input: an error)


@dataclass(frozen=True)
class TrainConfig:
    out: str = "stage1.safetensors"
    data: str | None = None  # folder of clean photos; None = bundled training photos
    crop: int = 64
    crop_tries: int = 2  # keep the most textured of this many random crop positions
    batch: int = 8
    iters: int = 2500
    lr: float = 1e-3
    lr_min_ratio: float = 0.1  # cosine decay to lr * this
    seed: int = 0
    device: str = "cpu"
    embed_dim: int = 512
    width: int = 32
    blocks: int = 4
    # R without an input skip, as in DegAE: the stage 2 it drives gained as much as with the skip
    # checkpoint (benchmarks/results/quality_dev_sweep_round3.json); skip=True trains faster on a CPU
    skip: bool = False
    head_widths: tuple[int, ...] = (128, 256, 512)
    trunk_model: str = "realesr-animevideov3"
    trunk_layers: int = 2
    pairing: str = "cross"  # "cross" (DegAE) or "same" (the LWay figure)
    consistency: str = "normalised"  # "normalised", "mse" or "none"
    w_consistency: float = 0.1
    w_anchor: float = 0.1  # keeps the embedding's RMS near 1
    pixel_loss: str = "charbonnier"  # "l1" (the paper), "charbonnier" or "mse"
    charbonnier_eps: float = 0.01
    perceptual: str = "trunk-l1"  # "trunk-l1", "lpips" (needs lpips_weights) or "none"
    lpips_weights: tuple[str, ...] = ()
    w_perceptual: float = 0.02
    synth: SynthConfig = field(default_factory=lambda: SynthConfig(p_roundtrip=0.5))
    ckpt_every: int = 100
    threads: int | None = None
    workers: int = 0  # processes that synthesise batches ahead of the optimiser (0: in this process)
    time_limit_s: float | None = None  # fix the iteration count from the measured rate to end in about this time

    def __post_init__(self):
        if self.pairing not in ("cross", "same"):
            raise InputError(f"pairing must be 'cross' or 'same', got {self.pairing!r}")
        if self.consistency not in ("normalised", "mse", "none"):
            raise InputError(f"consistency must be normalised, mse or none, got {self.consistency!r}")
        if self.pixel_loss not in ("l1", "charbonnier", "mse"):
            raise InputError(f"pixel loss must be l1, charbonnier or mse, got {self.pixel_loss!r}")
        if self.perceptual not in ("trunk-l1", "lpips", "none"):
            raise InputError(f"perceptual must be 'trunk-l1', 'lpips' or 'none', got {self.perceptual!r}")
        if self.perceptual == "lpips" and not self.lpips_weights:
            raise InputError("--perceptual lpips needs --lpips-weights (they cannot be fetched offline); "
                             "or use --perceptual trunk-l1")
        if self.crop < 24:
            raise InputError(f"--crop must be at least 24 px (the encoder needs 22), got {self.crop}")
        if self.perceptual == "lpips" and self.w_perceptual > 0 and self.crop < LPIPS_MIN_CROP:
            # a smaller crop reached AlexNet's last max-pool at 2x2 and failed there in a traceback
            least, why = LPIPS_MIN_CROP, f"LPIPS-AlexNet's layers need {LPIPS_MIN_CROP} px"
            if self.synth.p_roundtrip > 0 and least % self.synth.roundtrip_scale:
                least += -least % self.synth.roundtrip_scale
                why += ", and the crop a multiple of the round-trip scale"
            raise InputError(f"--perceptual lpips needs --crop {least} or more ({why}), got {self.crop}; use a larger "
                             "--crop or --perceptual trunk-l1")
        if self.synth.p_roundtrip > 0 and self.crop % self.synth.roundtrip_scale:
            raise InputError(f"--crop must be a multiple of the round-trip scale {self.synth.roundtrip_scale}, got {self.crop}")
        if self.batch < 2 and self.consistency == "normalised" and self.pairing == "cross" and self.w_consistency > 0:
            raise InputError("--batch must be at least 2 (the normalised consistency term of --pairing cross compares "
                             "images in a batch)")
        if self.workers < 0:
            raise InputError(f"--workers must be 0 or more, got {self.workers}")
        if self.time_limit_s is not None and not (self.time_limit_s > 0 and math.isfinite(self.time_limit_s)):
            raise InputError(f"--time-limit must be a positive number of seconds, got {self.time_limit_s}")
        for name in ("batch", "crop_tries", "iters", "embed_dim", "width", "blocks", "ckpt_every", "trunk_layers"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be a positive number, got {self.lr}")
        if not (self.w_perceptual >= 0 and math.isfinite(self.w_perceptual)):  # a negative one was taken for 0
            raise InputError(f"--w-perceptual must be a number >= 0 (0, or --perceptual none, turns the term off), got "
                             f"{self.w_perceptual}")

    # fields that fix the architecture: a resumed run must agree on them
    ARCH_FIELDS = ("embed_dim", "width", "blocks", "skip", "head_widths", "trunk_model", "trunk_layers")

    # fields that change how fast a run goes, not what it computes: left out of the recipe
    RUN_FIELDS = ("workers", "time_limit_s", "threads")

    def recipe(self) -> dict:
        d = asdict(self)
        for k in self.RUN_FIELDS:
            d.pop(k)
        d["head_widths"] = list(self.head_widths)
        d["lpips_weights"] = [Path(p).name for p in self.lpips_weights]
        return d


@dataclass
class Batch:
    clean_a: torch.Tensor  # R's input
    deg_a: torch.Tensor  # R's target
    deg_b: torch.Tensor  # what E reads (another image, same draw, in cross pairing)


def batch_rng(seed: int, iteration: int) -> np.random.Generator:
    """The generator of iteration ``iteration``'s batch: a function of (seed, iteration) alone, so a
    resumed run, and a run whose batches come from worker processes, draw exactly the same batches."""
    return np.random.default_rng([seed, iteration])


def make_batch(rng: np.random.Generator, images: list[torch.Tensor], cfg: TrainConfig) -> Batch:
    """One training batch; each pair shares a degradation draw (noise realisations differ)."""
    clean_a, picks = random_crops(rng, images, cfg.batch, cfg.crop, tries=cfg.crop_tries)
    draws = [sample_degradation(rng, cfg.synth) for _ in range(cfg.batch)]
    shared = [{} for _ in draws]  # each pair's draw as a whole, its correlated noise's channel mix included
    deg_a = torch.stack([apply_degradation(c, d, s) for c, d, s in zip(clean_a, draws, shared)])
    if cfg.pairing == "same":
        return Batch(clean_a, deg_a, deg_a)
    clean_b, _ = random_crops(rng, images, cfg.batch, cfg.crop, avoid=picks, tries=cfg.crop_tries)
    deg_b = torch.stack([apply_degradation(c, d.with_seed(d.seed + 1), s) for c, d, s in zip(clean_b, draws, shared)])
    return Batch(clean_a, deg_a, deg_b)


_WORKER_STATE: dict = {}
WORKER_GRACE_S = 10.0  # how long closing the pool waits for its workers to end on SIGTERM before it kills them


def _worker_init(shared: list, cfg: TrainConfig, closing) -> None:
    import signal
    from multiprocessing import shared_memory

    # a terminal's Ctrl-C reaches the whole process group: only the run handles it (it stops the pool); a worker
    # killed inside the pool's queue lock left Pool.terminate() waiting for ever, and each printed a traceback.
    # (The run started this process with SIGINT and SIGHUP ignored, so the seconds of imports before this are covered
    # too.) So do a closed terminal's SIGHUP and a SIGTERM sent to the group (``timeout``, a batch scheduler), which
    # had left the run hanging for good; SIGTERM ends a worker once the run closes the pool (``closing``), as
    # Pool.terminate() ends its workers with it. (Before this runs, SIGTERM ends a worker that has not yet taken a
    # task, and so holds no lock.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):  # (none on Windows)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def terminated(signum, frame):
        if closing.is_set():
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    torch.set_num_threads(1)
    if shared and isinstance(shared[0], np.ndarray):  # the photos themselves (shared memory too small for them)
        _WORKER_STATE["images"] = [torch.from_numpy(a) for a in shared]
    else:  # the run's photos in shared memory: read in place, not a copy per worker sent down its pipe
        blocks = [shared_memory.SharedMemory(name=name) for name, _, _ in shared]
        _WORKER_STATE["blocks"] = blocks  # kept open for the worker's life
        _WORKER_STATE["images"] = [torch.from_numpy(np.ndarray(shape, np.dtype(dtype), buffer=b.buf))
                                   for b, (_, shape, dtype) in zip(blocks, shared)]
    _WORKER_STATE["cfg"] = cfg


def _worker_batch(iteration: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = make_batch(batch_rng(_WORKER_STATE["cfg"].seed, iteration), _WORKER_STATE["images"], _WORKER_STATE["cfg"])
    # numpy, not tensors: torch would pass tensors through shared-memory file descriptors
    return b.clean_a.numpy(), b.deg_a.numpy(), b.deg_b.numpy()


class BatchSource:
    """Batches for iterations ``start, start+1, ...``: made here (``workers=0``) or by a pool of
    processes that keep up to ``2 * workers`` batches ready, so synthesis (CPU) overlaps the step
    (on a GPU the step is faster than one core's synthesis). Same batches either way."""

    def __init__(self, images: list[torch.Tensor], cfg: TrainConfig, start: int, end: int):
        self.images, self.cfg, self.next_it, self.end = images, cfg, start, end
        self.pool = None
        self.pending: list = []
        self.blocks: list = []
        if cfg.workers > 0:
            try:
                self._start_pool(images)
            except BaseException:  # (a Ctrl-C too): no pool or shared memory left behind
                self.close()
                raise

    def _start_pool(self, images: list[torch.Tensor]) -> None:
        """The worker pool, started in milliseconds: the photos go into shared memory (one copy, read in place by
        every worker) and the workers are started with SIGINT (and SIGHUP) ignored, so a Ctrl-C while they import torch
        (seconds) is the run's alone, not a traceback from each worker. (Sending the photos down each worker's pipe kept
        ``Pool()`` blocked for seconds, a window where ignoring SIGINT would have swallowed the user's Ctrl-C.)"""
        import multiprocessing as mp
        import signal
        import threading
        from multiprocessing import resource_tracker, shared_memory

        main = threading.current_thread() is threading.main_thread()  # (signals can be set there only)
        hangup = [signal.SIGHUP] if main and hasattr(signal, "SIGHUP") else []  # (there is none on Windows)
        if hangup:  # the resource tracker (of the pool's locks and the shared memory) inherits SIGHUP ignored: a
            with _ignoring(hangup):  # closed terminal's had killed it, and its records then printed tracebacks
                resource_tracker.ensure_running()
        arrays = [t.numpy() for t in images]
        quick = _shared_memory_holds(sum(a.nbytes for a in arrays))
        if quick:
            shared = []
            for a in arrays:
                block = shared_memory.SharedMemory(create=True, size=max(1, a.nbytes))
                self.blocks.append(block)
                np.ndarray(a.shape, a.dtype, buffer=block.buf)[...] = a
                shared.append((block.name, a.shape, a.dtype.str))
        else:  # (a container's /dev/shm is often 64 MB: writing past it kills the process with SIGBUS) the photos go
            shared = arrays  # down each worker's pipe as before: Pool() takes seconds, SIGINT left to Python then
        # (the workers inherit the signals' handling as they start, and OPENBLAS_NUM_THREADS: numpy's OpenBLAS thread
        # in a worker could take the SIGTERM that ends it, while the main thread, whose handler it is, waited on a lock)
        with _ignoring([signal.SIGINT, *hangup] if quick and main else []), _environment(OPENBLAS_NUM_THREADS="1"):
            # spawn: a forked child of a process that has started CUDA or OpenMP threads can hang
            context = mp.get_context("spawn")
            self.closing = context.Event()
            self.pool = context.Pool(self.cfg.workers, initializer=_worker_init,
                                     initargs=(shared, self.cfg, self.closing))
        self.queued = self.next_it
        self._fill()

    def _fill(self) -> None:
        while len(self.pending) < 2 * self.cfg.workers and self.queued < self.end:
            self.pending.append(self.pool.apply_async(_worker_batch, (self.queued,)))
            self.queued += 1

    def next(self) -> Batch:
        it = self.next_it
        self.next_it += 1
        if self.pool is None:
            return make_batch(batch_rng(self.cfg.seed, it), self.images, self.cfg)
        arrays = self.pending.pop(0).get()
        self._fill()
        return Batch(*(torch.from_numpy(a) for a in arrays))

    def close(self) -> None:
        try:
            self._end_workers()
        finally:  # the workers are gone: free the photos' shared memory
            for block in self.blocks:
                block.close()
                block.unlink()
            self.blocks = []

    def _end_workers(self) -> None:
        if self.pool is not None:
            import threading

            self.closing.set()  # the workers' SIGTERM handler ends them now (Pool.terminate() sends it)
            # a worker its SIGTERM did not end (seen once: in a lock wait, its handler never ran) kept Pool.terminate()
            # joining it for ever, the run hung after its last checkpoint: killed after a grace period. (A worker has other
            # threads, numpy's OpenBLAS: the kernel may hand a process's SIGTERM to one, and Python runs the handler
            # only when the main thread, blocked in the lock wait, next runs Python code.)
            workers = list(getattr(self.pool, "_pool", ()))  # (Pool's own list of its processes)

            def kill_the_rest() -> None:
                for p in workers:  # (kill: SIGKILL to one not yet reaped; no wait, so no race with Pool's own joins)
                    with contextlib.suppress(Exception):
                        p.kill()

            stuck = threading.Timer(WORKER_GRACE_S, kill_the_rest)
            stuck.daemon = True
            stuck.start()
            try:
                self.pool.terminate()
                self.pool.join()
            except BaseException:  # a Ctrl-C (or SIGTERM) in the wait: no worker is left to keep the exit waiting
                kill_the_rest()
                raise
            finally:
                stuck.cancel()
                self.pool = None


@contextlib.contextmanager
def _environment(**values: str):
    """``os.environ`` holding ``values`` within (so processes started within have them), then as before."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _ignoring(signals):
    """``signals`` ignored within (and so by the processes started within), then handled as before."""
    import signal

    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _shared_memory_holds(nbytes: int, folder: str = "/dev/shm") -> bool:
    """Whether the shared-memory file system has room for ``nbytes`` and a margin (False where it cannot be told)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize >= nbytes + max(nbytes // 10, 16 << 20)


def _consistency(e_a: torch.Tensor, e_b: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(e_a, e_b)
    both = torch.cat([e_a, e_b])
    spread = (both - both.mean(0, keepdim=True)).pow(2).sum(1).mean()
    return (e_a - e_b).pow(2).sum(1).mean() / (2 * spread + 1e-6)


def _rms_anchor(e: torch.Tensor) -> torch.Tensor:
    """(RMS(e) - 1)^2. The normalised consistency is scale-invariant, so its gradient is orthogonal
    to e and the embedding norm grows without bound under Adam (seen: norms ~3e4 after 200 steps,
    after which the reconstructor ignored e). This term pins the scale."""
    return (e.pow(2).mean().sqrt() - 1.0).pow(2)


def train_step(s1: Stage1, opt: torch.optim.Optimizer, batch: Batch, cfg: TrainConfig,
               lpips: torch.nn.Module | None = None) -> dict[str, float]:
    """One optimisation step; returns the loss terms (floats). Raises TrainingError on a non-finite loss.

    ``lpips`` is the frozen LPIPS network when ``cfg.perceptual == "lpips"``."""
    loss, terms = batch_loss(s1, batch, cfg, lpips)
    if not torch.isfinite(loss):
        raise TrainingError("non-finite loss")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
    opt.step()
    return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}


def batch_loss(s1: Stage1, batch: Batch, cfg: TrainConfig,
               lpips: torch.nn.Module | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss of ``batch`` under the current weights, and its terms (tensors)."""
    dev = cfg.device
    clean_a, deg_a, deg_b = (t.to(dev) for t in (batch.clean_a, batch.deg_a, batch.deg_b))
    e_b = s1.encoder(deg_b)
    out = s1.reconstructor(clean_a, e_b)
    if cfg.pixel_loss == "l1":
        pix = F.l1_loss(out, deg_a)
    elif cfg.pixel_loss == "mse":
        pix = F.mse_loss(out, deg_a)
    else:  # Charbonnier: quadratic below eps, L1 above; the gradient scales with small errors
        pix = torch.sqrt((out - deg_a).pow(2) + cfg.charbonnier_eps**2).mean() - cfg.charbonnier_eps
    loss = pix
    terms = {"pix": pix}
    if cfg.perceptual == "trunk-l1" and cfg.w_perceptual > 0:
        with torch.no_grad():
            f_t = s1.encoder.features(deg_a)
        perc = F.l1_loss(s1.encoder.features(out), f_t)
        loss = loss + cfg.w_perceptual * perc
        terms["perc"] = perc
    elif cfg.perceptual == "lpips" and cfg.w_perceptual > 0:
        if lpips is None:
            raise ValueError("perceptual='lpips' needs the lpips network")
        perc = lpips(out, deg_a).mean()
        loss = loss + cfg.w_perceptual * perc
        terms["perc"] = perc
    e_all = e_b
    if cfg.pairing == "cross" and cfg.consistency != "none" and cfg.w_consistency > 0:
        e_a = s1.encoder(deg_a)
        cons = _consistency(e_a, e_b, cfg.consistency)
        loss = loss + cfg.w_consistency * cons
        terms["cons"] = cons
        e_all = torch.cat([e_a, e_b])
    if cfg.w_anchor > 0:
        anchor = _rms_anchor(e_all)
        loss = loss + cfg.w_anchor * anchor
        terms["anchor"] = anchor
    return loss, terms


def _unsavable(s1: Stage1, opt: torch.optim.Optimizer, batch: Batch, cfg: TrainConfig, lpips: torch.nn.Module | None,
               it: int, before: float, typical: float) -> str | None:
    """Why the weights after a step must not be written as a checkpoint, or None: a non-finite weight or optimiser
    state, or weights that give the batch they were just trained on a non-finite loss, or one over ``DIVERGED`` times
    both its loss before the step and the running loss ``typical``. The finiteness of the loss *before* a step says
    nothing of the weights the step wrote (a step at --lr 1e30 moved them to ~1e29, finite, whose next loss was inf):
    this re-reads the step's own batch, one forward pass per checkpoint."""
    for name, t in s1.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            return f"weights became NaN/inf at iteration {it} ({name})"
    for st in opt.state.values():
        for t in st.values():
            if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
                return f"the optimiser state became NaN/inf at iteration {it}"
    with torch.no_grad():
        after = float(batch_loss(s1, batch, cfg, lpips)[0])
    if not math.isfinite(after):
        return f"loss became NaN/inf at iteration {it} (the weights its step wrote give its batch a loss of {after})"
    if after > DIVERGED * max(before, typical):
        return (f"loss diverged at iteration {it}: its step raised its batch's loss from {before:.3g} to {after:.3g}, "
                f"over {DIVERGED:g}x that and the running mean {typical:.3g}")
    return None


@dataclass
class TrainResult:
    out: Path
    iterations: int
    seconds: float
    last: dict[str, float]
    resumed_from: int


DIVERGED = 10.0  # a running loss this many times its lowest is a run blown up (a sound run's falls or wobbles)


def _is_stage1_file(path: Path) -> bool:
    """Whether ``path`` is a stage-1 checkpoint (its metadata's format), readable or cut: what --overwrite may replace."""
    from lway_rt.degae import FORMAT

    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            head = f.read(min(n, 1 << 20)) if 0 < n < (1 << 24) else b""
    except OSError:
        return False
    return FORMAT.encode() in head


def _same_data(recorded, data, segments) -> bool:
    """Whether a run's recorded --data folder (as typed before folders were recorded absolute, so perhaps relative to
    another working folder) is the folder ``data``: itself, or the absolute folder its last checkpoint read."""
    last = segments[-1].get("data") if isinstance(segments, list) and segments and isinstance(segments[-1], dict) else None
    return same_file(recorded, data) or (recorded is not None and same_file(last, data))


def _resume_path(out: Path) -> Path:
    return out.with_name(out.name + ".resume.pt")


# --time-limit: after PROBE iterations the rate of iterations PROBE/4..PROBE (warm-up excluded) fixes the iteration count
PROBE = 40


def _plan_iters(asked: int, it: int, rate: float, left: float) -> int:
    """The iteration count --time-limit fixes at iteration ``it``: what ``rate`` it/s fits into ``left`` seconds (3% kept
    for checkpoints and drift), within ``it`` .. ``asked``."""
    return max(it, min(asked, it + max(0, int(rate * left * 0.97))))


def _lr_at(cfg: TrainConfig, it: int) -> float:
    t = min(1.0, it / max(1, cfg.iters))
    return cfg.lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _machine(device: str) -> str:
    text = f"{cpu_model()}, torch threads {torch.get_num_threads()}"
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return text


def _save(out: Path, s1: Stage1, opt, cfg: TrainConfig, it: int, elapsed: float,
          last: dict[str, float], perceptual_ran: str, segments: list[dict], guard: dict[str, float | None]) -> None:
    """Write the checkpoint and its resume state as a pair; ModelError (nothing written) on a NaN/inf tensor."""
    from lway_rt.degae import stage1_bytes
    from lway_rt.io.weights import atomic_path

    meta = {
        "recipe": cfg.recipe(), "iterations": it, "train_seconds": round(elapsed, 1),
        "perceptual_ran": perceptual_ran,
        "data": cfg.data or "bundled scikit-image photos: " + ",".join(BUNDLED_TRAIN),
        "machine": _machine(cfg.device),
        "torch": torch.__version__, "last_losses": last,
        # one entry per (resumed) run: a resume with another --iters restarts the cosine schedule
        "segments": segments,
    }
    # Everything is checked and serialised before anything is written: NaN weights (refused by stage1_bytes) leave
    # the last pair as it was.
    weights = stage1_bytes(s1, meta)
    resume_state = {"iteration": it, "weights": s1.state_dict(), "optimizer": opt.state_dict(), "elapsed": elapsed,
                    "recipe": json.dumps(cfg.recipe()), "segments": segments, "guard": guard}
    bad = [k for k, t in _tensors(resume_state) if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ModelError(f"refusing to save a resume state with NaN/inf values ({bad[0]})")
    buf = io.BytesIO()
    torch.save(resume_state, buf)
    try:
        # Both files are written to temporary files first and renamed only once both are complete, so a failed
        # write (a full disk) leaves the older pair whole. The checkpoint is renamed first: a kill between the two
        # renames leaves the file people use the newest, and a resume state one interval older, which is complete on
        # its own (weights, optimiser and RNG agree): --resume goes on from it and trains that interval again. (The
        # other order left, after the last save, a checkpoint an interval short that --resume then called finished.)
        with atomic_path(_resume_path(out)) as tmp_resume, atomic_path(out) as tmp_out:
            tmp_resume.write_bytes(buf.getvalue())
            tmp_out.write_bytes(weights)
    except OSError as exc:
        raise OutputError(f"cannot write checkpoint {out}: {exc.strerror or exc}; free disk space or choose another --out") from exc


def _tensors(obj, name: str = ""):
    """(name, tensor) for every tensor in nested dicts and lists."""
    if torch.is_tensor(obj):
        yield name, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{name}.{k}" if name else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{name}[{i}]")


def _check_out(out: Path) -> None:
    if out.suffix.lower() != ".safetensors":
        raise OutputError(f"--out must end in .safetensors, got {out}")
    if out.is_dir():
        raise OutputError(f"--out {out} is a folder; name a .safetensors file")
    from lway_rt.degae import default_checkpoint_path

    if out.resolve() == default_checkpoint_path().resolve():  # --overwrite would break every run that uses it
        raise OutputError(f"--out {out} is the stage-1 checkpoint lway_rt ships (adapt, eval-degae and demo check its "
                          "hash): choose another --out, and pass your checkpoint with --stage1 / --checkpoint")
    ensure_writable_dir(out.parent, "--out")


def _lock_path(out: Path) -> Path:
    """The hidden lock file beside ``out`` that a run holds while it writes there (``exclusive_run``)."""
    return out.parent / f".{out.name}.lock"


def train(cfg: TrainConfig, *, resume: bool = False, log: Callable[[str], None] | None = None,
          progress: bool = False, stop_after: int | None = None, overwrite: bool = False) -> TrainResult:
    """Run (or resume) training to ``cfg.iters``; checkpoints every ``cfg.ckpt_every`` iterations.

    ``stop_after`` ends the call after that many iterations of this call (tests, time slicing);
    the run can be continued with ``resume=True``. An existing ``cfg.out`` (finished, or unfinished with its
    resume state) is replaced only with ``overwrite``: a stage-1 run can be hours of work. While it runs no other
    run can write to ``cfg.out`` (a lock file beside it, ``exclusive_run``).
    """
    made = _missing_folders(Path(cfg.out).parent)  # folders this run makes for --out: removed again if it fails empty
    try:
        with contextlib.ExitStack() as held:
            return _train(cfg, held, resume=resume, log=log, progress=progress, stop_after=stop_after, overwrite=overwrite)
    except BaseException:
        for folder in made:  # deepest first; a folder something was written into stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _train(cfg: TrainConfig, held: contextlib.ExitStack, *, resume: bool, log: Callable[[str], None] | None,
           progress: bool, stop_after: int | None, overwrite: bool) -> TrainResult:
    from lway_rt.runtime.device import check_torch_device

    log = log or (lambda s: None)
    check_torch_device(cfg.device)
    out = Path(cfg.out)
    _check_out(out)
    refuse_if_busy(_lock_path(out), "--out")  # at once, not after the images are read
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start, elapsed0 = 0, 0.0
    if not out.exists() and _resume_path(out).exists():  # its checkpoint moved or deleted: nothing to go on from
        log(f"note: {_resume_path(out)} is left from a run whose checkpoint {out.name} is gone; this run starts "
            "afresh and its first checkpoint replaces it")
    elif resume and not out.exists():
        log(f"note: {out} does not exist, so there is no run to resume: starting a new one with this command's "
            f"settings, on {'the bundled photos' if cfg.data is None else f'the photos in {cfg.data}'}")
    if resume and out.exists():
        if not _resume_path(out).exists():
            raise TrainingError(f"{out} has no resume state ({_resume_path(out).name}); it is a finished or foreign "
                                "checkpoint: start a new run with another --out")
        try:
            s1 = load_stage1(out, cfg.device, trainable=True, trunk_file=cfg.trunk_model)  # (its trunk moved there)
        except DamagedFileError:
            raise TrainingError(f"the checkpoint {out} cannot be read (cut or damaged): its resume state "
                                f"{_resume_path(out).name} cannot go on without it; pass --overwrite to start the run "
                                "again, or choose another --out") from None
        gone = Path(cfg.trunk_model).expanduser()
        if (gone.suffix or len(gone.parts) > 1) and not gone.exists() and s1.meta.get("trunk_model") != cfg.trunk_model \
                and cfg.trunk_model == (s1.meta.get("recipe") or {}).get("trunk_model"):  # (not typed: a --trunk typo
            # naming no file is still refused below as another trunk)
            # its trunk file moved and was found beside the checkpoint: the recipe this run writes records that place,
            # as its metadata does (it kept the old one, from which nothing could be built again)
            cfg = replace(cfg, trunk_model=str(s1.meta["trunk_model"]))
        prev = s1.meta.get("recipe", {})
        for k in TrainConfig.ARCH_FIELDS:
            mine = list(getattr(cfg, k)) if k == "head_widths" else getattr(cfg, k)
            if k == "trunk_model" and prev.get(k) != mine and (same_file(prev.get(k), mine)
                                                                or same_file(s1.meta.get(k), mine)):
                continue  # a trunk file recorded relative (before paths were made absolute), or moved, given now
            if prev.get(k) != mine:
                raise ModelError(f"cannot resume {out}: it was trained with {k}={prev.get(k)}, this run asks for {mine}; "
                                 "use the same options or a new --out")
        # the rest may change on a resume (--iters and --lr are meant to), but say what did
        def plain(v):  # as the checkpoint's JSON holds it: a tuple read back is a list, and is the same setting
            return json.loads(json.dumps(v))

        def flat(recipe: dict) -> dict:  # the synthesis settings one by one (synth.p_motion), not as one dict
            return {f"{k}.{kk}" if isinstance(v, dict) else k: vv for k, v in recipe.items()
                    for kk, vv in (v.items() if isinstance(v, dict) else [(None, v)])}

        was = flat(prev)
        changes = {k: [was[k], v] for k, v in flat(plain(cfg.recipe())).items()
                   if k in was and k not in ("iters", "lr", "out") and was[k] != v
                   and not (k == "data" and _same_data(was[k], v, s1.meta.get("segments")))}
        if changes:  # (recorded in this part's segment: the recipe holds the last part's settings)
            log("note: resuming with other settings than the run had: "
                + "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
        try:
            state = torch.load(_resume_path(out), map_location="cpu", weights_only=True)
            s1.load_state_dict(state["weights"])
            start, elapsed0 = int(state["iteration"]), float(state["elapsed"])
        except Exception as exc:  # cut, emptied or foreign: say which file, not torch's internals
            raise TrainingError(f"the resume state {_resume_path(out)} cannot be read ({type(exc).__name__}): pass "
                                "--overwrite to start the run again, or choose another --out") from None
        segments = list(state.get("segments") or [{"from": 0, "to": start, "iters": prev.get("iters"), "lr": prev.get("lr")}])
    else:
        if out.exists() and not _is_stage1_file(out):  # --overwrite replaces a run, not an SR model or another file
            raise TrainingError(f"{out} exists and is not a stage-1 checkpoint: choose another --out")
        if out.exists() and not overwrite:
            if _resume_path(out).exists():
                raise TrainingError(f"{out} holds a run that can go on ({_resume_path(out).name} beside it): pass --resume "
                                    "to continue or extend it, --overwrite to start again, or choose another --out")
            raise TrainingError(f"{out} exists (a finished stage-1 checkpoint): pass --overwrite to replace it, or choose "
                                "another --out")
        if out.exists():  # the old file and its resume state stay until this run's first checkpoint replaces both,
            log(f"overwriting {out}")  # so an overwrite stopped before it leaves the old run whole, not half of it
        s1 = Stage1.fresh(cfg.embed_dim, cfg.width, cfg.blocks, skip=cfg.skip, trunk=TrunkSpec(cfg.trunk_model, cfg.trunk_layers),
                          head_widths=cfg.head_widths, seed=cfg.seed, device=cfg.device)
        state = None
        segments, changes = [], {}
    # read once --out is accepted: a refusal of --out (resume or overwrite it?) came after minutes of decoding photos
    notes: list[str] = []
    images = list(load_images(cfg.data, cfg.crop, notes).values())
    for line in notes:
        log(line)
    if cfg.data and (nested := image_subfolders(Path(cfg.data))):  # (as adapt and upscale name them)
        log(f"note: the photos in sub-folders of {cfg.data} ({listing(nested, 3)}) are not read: train-degae reads "
            "those directly inside --data")
    if len(images) == 1 and cfg.pairing == "cross":
        log("note: --data holds one photo, so --pairing cross reads each degradation from another crop of it, not "
            "from another photo as it is meant to: add photos")
    # recorded per segment: a resume sees a change; eval-degae, photos of it in another folder
    data_sha, data_photos = folder_digests(Path(cfg.data)) if cfg.data else (None, [])
    seen = segments[-1] if segments else {}
    if data_sha and seen.get("data_sha256") and seen["data_sha256"] != data_sha and _same_data(seen.get("data"), cfg.data, [seen]):
        log(f"note: the photos in {cfg.data} changed since the run's last checkpoint (it read {seen.get('data_images', '?')} "
            f"image(s) there, {len(images)} now): the run goes on with them as they are now")
    held.enter_context(exclusive_run(_lock_path(out), "--out"))  # accepted: nothing else writes there
    lpips = None
    if cfg.perceptual == "lpips":
        from lway_rt.degae.lpips import load_lpips

        lpips, lp_hash = load_lpips(cfg.lpips_weights, cfg.device)
        perceptual_ran = f"LPIPS-AlexNet (user weights, sha256 {lp_hash[:16]})"
    elif cfg.perceptual == "trunk-l1":
        perceptual_ran = "L1 on the frozen trunk's features (offline LPIPS substitute)"
    else:
        perceptual_ran = "none"
    log(f"perceptual term: {perceptual_ran}")
    s1.encoder.train()
    s1.reconstructor.train()
    params = [p for m in (s1.encoder, s1.reconstructor) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.99))
    asked = cfg.iters  # --iters as given: a --time-limit plan replaces cfg.iters
    plan_fixed, spent = False, 0.0  # whether the --time-limit count is fixed; seconds of the limit spent before this call
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        log(f"resumed {out} at iteration {start}")
        seg = segments[-1] if segments else {}
        if cfg.time_limit_s is not None and (seg.get("time_limit_s"), seg.get("asked_iters")) == (cfg.time_limit_s, asked):
            # the same command resumed: go on with the run's plan (count and schedule), not a new one from a fresh budget
            if seg.get("plan_fixed"):
                plan_fixed = True
                cfg = replace(cfg, iters=int(seg["iters"]))
                log(f"--time-limit: going on with the {cfg.iters} iterations the run planned")
            else:  # stopped before its rate was measured: what is left of the limit, not all of it
                spent = elapsed0
        if start >= cfg.iters:  # no header of --iters iterations nor a bar past its end
            done = (f"it has run the {cfg.iters} iterations its --time-limit planned", " without --time-limit") \
                if plan_fixed else (f"it is at or past --iters {cfg.iters}", "")
            log(f"{done[0]}: nothing to train, the file is kept as it is (a larger --iters{done[1]} continues it)")
            return TrainResult(out, start, elapsed0, {}, start)
    log(f"stage-1 training: {cfg.iters} iterations, batch {cfg.batch}, crop {cfg.crop}, pairing {cfg.pairing}, "
        f"perceptual {cfg.perceptual}, trunk {cfg.trunk_model}[:{cfg.trunk_layers}], {len(images)} images")
    t0 = time.time()
    it = start
    last: dict[str, float] = {}
    last_saved = start
    saving = None  # (the iteration of the checkpoint being written, and the resume state it replaces)
    end = cfg.iters if stop_after is None else min(cfg.iters, start + stop_after)
    # --time-limit: the count PROBE iterations fix, not the clock, then drives the schedule, so the recipe recorded
    # in the checkpoint reproduces the run (the first PROBE learning rates used the old count: cos(pi * PROBE / iters)
    # differs from 1 by < 1e-3 for iters >= 2000); each segment records the limit and whether the count is fixed, so
    # the same command resumed goes on with that count
    t_probe = None
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("stage 1"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                       TimeRemainingColumn())
        bar.start()
        task = bar.add_task("train", total=cfg.iters, completed=start, info="")
    # the running loss and its lowest so far, carried over a resume (a resume state without them: from the checkpoint's
    # last loss), else from the first iteration (at --lr 0.5 a fresh run blew up within 5): a run whose running loss
    # climbs DIVERGED x above its lowest has blown up short of NaN/inf, and is stopped before it writes a checkpoint,
    # as a NaN is
    guard = (state.get("guard") or {}) if state is not None else {}
    ema = guard.get("ema")
    low = guard["low"] if "low" in guard else (s1.meta.get("last_losses") or {}).get("loss") if state is not None else None
    source = None

    # how the same command goes on from a kept checkpoint (--resume and --overwrite together are refused: 57L-1)
    again = "with --resume in place of --overwrite" if overwrite else "with --resume"

    def kept() -> str:
        return (f"the last good checkpoint (iteration {last_saved}) is kept at {out}; lower --lr and continue with "
                "--resume") if last_saved > 0 else "no checkpoint had been written yet; lower --lr and start again"

    def save() -> None:
        """A checkpoint of iteration ``it`` (the weights and the resume state beside them)."""
        nonlocal saving, last_saved
        # never a checkpoint of weights that are not finite or that blow the loss up
        why = _unsavable(s1, opt, batch, cfg, lpips, it, last["loss"], ema)
        if why:
            raise TrainingError(f"{why}; training stopped before that checkpoint was written; {kept()}")
        # per segment: what a resume may change (the recipe keeps the last segment's settings only)
        seg = {"from": start, "to": it, "iters": cfg.iters, "lr": cfg.lr, "batch": cfg.batch, "crop": cfg.crop,
               "data": str(Path(cfg.data).absolute()) if cfg.data else None}
        if data_sha:
            seg.update(data_sha256=data_sha, data_images=len(images), data_photos=data_photos)
        if changes:  # what this part ran with that the parts before it did not: [before, now] by recipe key
            seg.update(changed=changes)
        if cfg.time_limit_s is not None:  # what a resume of the same command goes on with
            seg.update(time_limit_s=cfg.time_limit_s, asked_iters=asked, plan_fixed=plan_fixed)
        saving = (it, file_id(out))  # (the checkpoint is renamed into place first)
        try:
            _save(out, s1, opt, cfg, it, elapsed0 + time.time() - t0, last, perceptual_ran, segments + [seg],
                  {"ema": ema, "low": low})
        except ModelError as exc:  # NaN/inf found as it was to be written: nothing was
            raise TrainingError(f"weights became NaN/inf at iteration {it} ({exc}); training stopped before "
                                f"that checkpoint was written; {kept()}") from None
        except WriteFailed as exc:  # a full disk: the pair before it stands, and --resume goes on from it (57L-3: the
            # line advised another output folder, as if the run were lost)
            raise OutputError(f"cannot write {exc.path}: {exc.reason}; the checkpoint of iteration {last_saved} and its "
                              f"resume state are kept at {out}: make room, then run the same command {again}"
                              if last_saved > 0 else f"{exc} (no checkpoint had been written yet)") from None
        last_saved = it

    batch = None
    try:
        source = BatchSource(images, cfg, start, end)  # inside: a Ctrl-C while its workers start says the run's line
        with finishing_steps() as steps:  # under the CLI, a first stop lets the step in hand finish; it is saved
            while it < end:
                if STOPS:  # a stop asked for during the last step (or whose KeyboardInterrupt was lost before)
                    if it != last_saved:
                        save()
                    raise KeyboardInterrupt
                steps.unsaved = it != last_saved  # (nothing unsaved: a stop in the next step stops at once)
                for g in opt.param_groups:
                    g["lr"] = _lr_at(cfg, it)
                batch = source.next()
                try:
                    last = train_step(s1, opt, batch, cfg, lpips)
                except TrainingError:
                    raise TrainingError(f"loss became NaN/inf at iteration {it + 1}, training stopped; {kept()}") from None
                it += 1
                if cfg.time_limit_s is not None and not plan_fixed and it - start == PROBE // 4:
                    t_probe = time.time()
                if cfg.time_limit_s is not None and not plan_fixed and it - start == PROBE:
                    rate = (PROBE - PROBE // 4) / max(1e-9, time.time() - t_probe)
                    planned = _plan_iters(cfg.iters, it, rate, cfg.time_limit_s - spent - (time.time() - t0))
                    plan_fixed = True
                    if planned != cfg.iters:
                        log(f"--time-limit {cfg.time_limit_s:g}s at {rate:.2f} it/s: {planned} iterations instead of {cfg.iters}")
                        cfg = replace(cfg, iters=planned)
                        end = planned if stop_after is None else min(planned, start + stop_after)
                        source.end = end
                        if bar is not None:
                            bar.update(task, total=planned)
                ema = last["loss"] if ema is None else 0.98 * ema + 0.02 * last["loss"]
                if low is not None and ema > DIVERGED * low:
                    raise TrainingError(f"loss diverged at iteration {it}: its running mean {ema:.3g} is over {DIVERGED:g}x "
                                        f"its lowest, {low:.3g}; training stopped; {kept()}")
                low = ema if low is None else min(low, ema)
                rate = (it - start) / max(1e-9, time.time() - t0)
                if bar is not None:
                    bar.update(task, completed=it, info=f"avg loss {ema:.4f}  {rate:.2f} it/s")
                if it % min(25, cfg.ckpt_every) == 0 or it == end:
                    log(f"it {it} " + " ".join(f"{k} {v:.4f}" for k, v in last.items()) + f" ema {ema:.4f} {rate:.2f} it/s")
                if it % cfg.ckpt_every == 0 or it == end:
                    save()
    except KeyboardInterrupt:
        if saving and saving[0] != last_saved and file_id(out) not in (None, saving[1]):
            last_saved = saving[0]  # the stop came after the new checkpoint took the old one's place
        kept = (f"the checkpoint of iteration {last_saved} is kept at {out}: run the same command {again} to "
                "continue" if last_saved > 0 else f"no checkpoint had been written yet (one every {cfg.ckpt_every} "
                "iterations): run the command again")
        raise Interrupted(f"stage-1 training interrupted at iteration {it}; {kept}") from None
    finally:
        if source is not None:
            source.close()
        if bar is not None:
            bar.stop()
    return TrainResult(out, it, elapsed0 + time.time() - t0, last, start)
