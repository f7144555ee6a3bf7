"""``lwayrt train-degae``: train the stage-1 degradation encoder and reconstructor."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from lway_rt.cli._params import DEVICE, FINITE, NAME, PathParam, typed


#: the options a --resume takes from the run's checkpoint where they are not typed (device, threads, workers and the
#: time limit are the machine's; the LPIPS weights are recorded by name only)
_RECORDED = ("data", "crop", "crop_tries", "batch", "iters", "lr", "seed", "embed_dim", "width", "blocks", "skip",
             "trunk_model", "trunk_layers", "pairing", "perceptual", "pixel_loss", "w_perceptual", "ckpt_every")
_RECORDED_SYNTH = ("p_roundtrip", "p_motion", "p_sharpen")


def _with_recorded_settings(cfg, out: Path, ctx):
    """``cfg`` with every setting the run in ``out`` recorded that the command line did not type: ``--out X --resume``
    continues that run as it was (the defaults stood in for them, so a run on a --data folder went on with the
    bundled photos, or was refused for another --embed-dim). A checkpoint that cannot be read is left to ``train``
    to name."""
    import dataclasses

    try:  # (its header alone: loading it would build the trunk, which may have moved: --trunk NEWPATH says where)
        from lway_rt.degae import FORMAT, stage1_metadata

        meta = stage1_metadata(out)
    except Exception:  # noqa: BLE001 - train() says what is wrong with it, in one line
        return cfg
    if meta.get("format") != FORMAT:
        return cfg
    prev = meta.get("recipe") or {}
    changes = {k: prev[k] for k in _RECORDED if k in prev and not typed(ctx, k)}
    segments = meta.get("segments") if isinstance(meta.get("segments"), list) else []
    last_data = segments[-1].get("data") if segments and isinstance(segments[-1], dict) else None
    if changes.get("data") and not Path(changes["data"]).is_absolute() and isinstance(last_data, str):
        changes["data"] = last_data  # a run that recorded its folder as typed (relative): the folder it read
    if changes.get("data") and not Path(changes["data"]).is_dir():  # "leave --data out" was the advice: it was left out
        from lway_rt.errors import InputError

        raise InputError(f"the run in {out} trained on the photos in {changes['data']}, which is not a folder now (moved "
                         "or deleted?): pass --data FOLDER to go on with them where they are now")
    if typed(ctx, "time_limit_s"):  # the iterations come from the time limit's plan, which train() keeps
        changes.pop("iters", None)
    synth = prev.get("synth") if isinstance(prev.get("synth"), dict) else {}
    fractions = {k: synth[k] for k in _RECORDED_SYNTH if k in synth and not typed(ctx, k)}
    if fractions:
        changes["synth"] = dataclasses.replace(cfg.synth, **fractions)
    return dataclasses.replace(cfg, **changes)


@click.command("train-degae")
@click.option("--data", type=PathParam(path_type=Path), default=None,
              help="Folder of clean photos, those directly inside it (hidden files skipped; default: the bundled "
                   "scikit-image training photos).")
@click.option("-o", "--out", "--output", "out", type=PathParam(path_type=Path, names_a_file=True), default=Path("stage1.safetensors"), show_default=True,
              help="Checkpoint to write (.safetensors); a .resume.pt with the optimiser state lands beside it.")
@click.option("--crop", type=int, default=64, show_default=True, help="Training crop side in px.")
@click.option("--crop-tries", type=int, default=2, show_default=True,
              help="Keep the most textured of this many random crop positions.")
@click.option("--batch", "--batch-size", "batch", type=int, default=8, show_default=True, help="Pairs per step.")
@click.option("--iters", "--iterations", "iters", type=int, default=2500, show_default=True,
              help="Training steps (--time-limit fixes them from the first steps' rate instead).")
@click.option("--lr", type=FINITE, default=1e-3, show_default=True, help="Adam learning rate (cosine decay to 10%).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the networks' start and of the crops and degradations drawn.")
@click.option("--device", type=DEVICE, default="cpu", show_default=True, help="torch device: cpu, cuda or cuda:N.")
@click.option("--embed-dim", type=int, default=512, show_default=True, help="Embedding width (the paper uses 512 or 2048).")
@click.option("--width", type=int, default=32, show_default=True, help="Reconstructor width (DegAE: 64; 32 is 4x cheaper in stage 2).")
@click.option("--blocks", type=int, default=4, show_default=True, help="Modulated blocks in the reconstructor.")
@click.option("--skip/--no-skip", default=False, show_default=True,
              help="Add the clean input to R's output: trains faster; the shipped checkpoint and DegAE have no skip.")
@click.option("--trunk", "trunk_model", default="realesr-animevideov3", show_default=True, type=NAME,
              help="Store model or weights file whose first layers form the frozen encoder trunk.")
@click.option("--trunk-layers", type=int, default=2, show_default=True,
              help="How much of --trunk forms the trunk: its first N conv + activation pairs (SRVGGNetCompact), or "
                   "conv_first and its first N RRDB blocks (RRDBNet).")
@click.option("--pairing", type=click.Choice(["cross", "same"]), default="cross", show_default=True,
              help="cross: E reads another image with the same degradation (DegAE); same: E reads the target itself.")
@click.option("--roundtrip", "p_roundtrip", type=FINITE, default=0.5, show_default=True,
              help="Fraction of draws degraded through a x4 scale round trip (what stage 2 shows E and R).")
@click.option("--motion", "p_motion", type=FINITE, default=0.0, show_default=True,
              help="Fraction of blurred draws whose blur is a linear motion blur (beyond DegAE's family; 0: off).")
@click.option("--sharpen", "p_sharpen", type=FINITE, default=0.0, show_default=True,
              help="Fraction of the degraded (not clean) draws sharpened (unsharp mask), always before their JPEG "
                   "(beyond DegAE's family; 0: off).")
@click.option("--perceptual", type=click.Choice(["trunk-l1", "lpips", "none"]), default="trunk-l1", show_default=True,
              help="Perceptual term: L1 on the frozen trunk's features (offline LPIPS substitute), or LPIPS.")
@click.option("--lpips-weights", type=PathParam(path_type=Path, names_a_file=True), multiple=True,
              help="LPIPS-AlexNet weights (.pth/.safetensors; backbone and linear layers, one or two files).")
@click.option("--pixel-loss", type=click.Choice(["l1", "charbonnier", "mse"]), default="charbonnier", show_default=True,
              help="Pixel term: charbonnier (smooth L1, eps 0.01) learns small residuals that plain L1 ignores.")
@click.option("--w-perceptual", type=FINITE, default=0.02, show_default=True,
              help="Weight of the perceptual term beside the pixel term (0: off).")
@click.option("--ckpt-every", "--checkpoint-every", "ckpt_every", type=int, default=100, show_default=True, help="Checkpoint interval in iterations.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads [torch's default].")
@click.option("--workers", type=int, default=0, show_default=True,
              help="Processes that synthesise batches ahead of the step (worth it on a GPU; batches are the same).")
@click.option("--time-limit", "time_limit_s", type=FINITE, default=None,
              help="Seconds: fix --iters from the rate of the first iterations so the run ends in about this time "
                   "(the count used is logged and recorded, and the same command with --resume goes on with it; the "
                   "first 40 iterations, which measure the rate, always run).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out checkpoint (finished or not) with a new run.")
@click.option("--log", "log_path", type=PathParam(path_type=Path, names_a_file=True), default=None, help="Also append progress to this file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or progress lines: print only notes and the result "
                                                  "(--log still gets every line).")
def command(data, out, crop, crop_tries, batch, iters, lr, seed, device, embed_dim, width, blocks, skip, trunk_model, trunk_layers,
            pairing, p_roundtrip, p_motion, p_sharpen, perceptual, lpips_weights, pixel_loss, w_perceptual, ckpt_every, threads, workers, time_limit_s, resume, overwrite, log_path,
            quiet) -> None:
    """Train E's head and R on synthetic degradations of clean photos (DegAE recipe)."""
    from lway_rt.degae.degrade import SynthConfig
    from lway_rt.degae.train import TrainConfig, train
    from lway_rt.errors import InputError

    for flag, value in (("--roundtrip", p_roundtrip), ("--motion", p_motion), ("--sharpen", p_sharpen)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{flag} must be a fraction in [0, 1], got {value}")
    if log_path is not None:  # checked before any work: the file is appended to at every logged step
        _check_log_file(Path(log_path), Path(out).expanduser())
    if resume and overwrite:  # as lwayrt adapt: neither may silently win
        raise click.UsageError("--resume continues the run in --out, --overwrite starts it again: pass one of them")
    if lpips_weights and perceptual != "lpips":
        raise InputError(f"--lpips-weights is used only with --perceptual lpips (this run's perceptual term is "
                         f"{perceptual}): add --perceptual lpips, or drop --lpips-weights")
    from lway_rt.io.store import SOURCES, store_path

    bare = "/" not in trunk_model and "\\" not in trunk_model
    if not (bare and (trunk_model in SOURCES or store_path(trunk_model).exists())) and Path(trunk_model).expanduser().exists():
        trunk_model = str(Path(trunk_model).expanduser().absolute())  # a file: recorded so adapt finds it from anywhere
    synth = SynthConfig(p_roundtrip=p_roundtrip, p_motion=p_motion, p_sharpen=p_sharpen)
    data = Path(data).expanduser().absolute() if data else None  # recorded so --resume finds it from anywhere
    cfg = TrainConfig(out=str(out), data=str(data) if data else None, crop=crop, crop_tries=crop_tries, batch=batch, iters=iters, lr=lr,
                      seed=seed, device=device, embed_dim=embed_dim, width=width, blocks=blocks, skip=skip,
                      trunk_model=trunk_model, trunk_layers=trunk_layers, pairing=pairing, perceptual=perceptual,
                      lpips_weights=tuple(str(p) for p in lpips_weights), pixel_loss=pixel_loss, w_perceptual=w_perceptual,
                      synth=synth, ckpt_every=ckpt_every, threads=threads,
                      workers=workers, time_limit_s=time_limit_s)
    if resume and Path(out).is_file():
        cfg = _with_recorded_settings(cfg, Path(out), click.get_current_context())
    elif resume and not Path(out).exists() and not typed(click.get_current_context(), *(
            k for k in (*_RECORDED, *_RECORDED_SYNTH) if k != "iters")):
        # (a run stopped before its first checkpoint leaves nothing: the defaults would stand in for its settings, a
        # run on the bundled photos at the default sizes written under its name. What says which run this is counts:
        # --data, the sizes, the recipe; not --iters, --time-limit, --device, --workers or --threads, which a GPU user
        # types on every command, 54F F5)
        raise InputError(f"{out} does not exist, so there is no run to resume (a run stopped before its first "
                         f"checkpoint, one every --ckpt-every iterations, leaves none) and this command gives none of "
                         "a run's settings (--data, sizes, recipe): run the first command again, or for a new run at "
                         "the defaults drop --resume")

    # R without the skip (the default) learns slowly on a CPU: say so once training has started
    note = ["note: R without an input skip (the shipped recipe) learns slowly on a CPU; --skip trains far faster there"] \
        if (not skip and not resume and str(device).startswith("cpu")
            and not typed(click.get_current_context(), "skip")) else []

    log_failed: list[str] = []

    def to_log(line: str) -> None:
        if log_path and not log_failed:
            try:
                Path(log_path).parent.mkdir(parents=True, exist_ok=True)  # (--out's folder: the run makes it too)
                with open(log_path, "a") as f:
                    f.write(line + "\n")
            except OSError as exc:  # a full disk: the training goes on (its checkpoints say for themselves), the log
                # stops, said once naming the file (58D-3: "cannot write the output", no file named, the run stopped)
                log_failed.append(exc.strerror or str(exc))
                click.echo(f"warning: cannot append to --log {log_path} ({log_failed[0]}): nothing more is written "
                           "to it", err=True)  # (not "training goes on": the line may be the run's last, 58E-2)

    def log(msg: str) -> None:
        while note:
            click.echo(note.pop(), err=True)
        to_log(msg)  # every line, and the terminal gets what it gets without --log
        if not quiet or msg.startswith(("note:", "warning:", "--time-limit")):
            click.echo(msg, err=True)

    from lway_rt.errors import Interrupted, LwayError

    try:
        result = train(cfg, resume=resume, log=log, progress=not quiet, overwrite=overwrite)
    except LwayError as exc:  # the result, or how the run ended, goes to the log too (it ended at the last step there)
        with contextlib.suppress(OSError):  # (a log that cannot take the line must not hide the error itself)
            to_log(str(exc) if isinstance(exc, Interrupted) else f"error: {exc}")  # as the terminal shows it
        raise
    if "loss" not in result.last:  # a resume of a run already at --iters: no step ran
        line = f"kept {result.out} ({result.iterations} iterations; nothing to train)"
    else:
        line = (f"wrote {result.out} ({result.iterations} iterations, {result.seconds / 60:.1f} min, "
                f"last loss {result.last['loss']:.4f})")
    to_log(line)
    click.echo(line)


def _check_log_file(path: Path, out: Path) -> None:
    """--log appends text: refuse a folder, a missing folder (but --out's, which the run makes), and an existing file
    that is not text (a photo, weights)."""
    from lway_rt.errors import InputError

    from lway_rt.io.weights import check_file_destination

    check_file_destination(path, "--log")
    if path.is_dir():
        raise InputError(f"--log {path} is a folder: name a text file to append progress to")
    if not path.parent.is_dir() and path.parent.absolute() != out.parent.absolute():
        raise InputError(f"--log {path}: its folder {path.parent} does not exist; make it first")
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4096)
        try:
            head.decode("utf-8")
            text = b"\0" not in head
        except UnicodeDecodeError as exc:  # a multi-byte character cut at the 4 KiB edge is still text
            text = b"\0" not in head and len(head) == 4096 and exc.start >= len(head) - 3
        if not text:
            raise InputError(f"--log {path} is not a text file (progress would be appended to it): name another file")
    target = Path(os.path.realpath(path))  # (a link is written through, and stays: its file is what is made here)
    if target.parent.is_dir():  # opened to append now, not at the first line (or at the error line, which it hid)
        existed = target.exists()
        try:
            with open(target, "a"):
                pass
        except OSError as exc:
            raise InputError(f"--log {path} cannot be written ({exc.strerror}): name another file") from None
        if not existed:
            target.unlink(missing_ok=True)
