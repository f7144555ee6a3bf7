"""``lwayrt adapt``: fine-tune a pretrained SR model on your own LR images (LWay stage 2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from lway_rt.cli._params import DEVICE, FINITE, FINITE_OR_OFF, NAME, PathParam
from lway_rt.errors import shell_word

# flag name -> AdaptConfig field; flags left unset fall back to --config TOML, then the defaults.
_FIELDS = ("iterations", "lr", "lr_schedule", "patch_size", "augment", "batch_size", "mode", "groups", "sample", "target", "loss", "hf_mode", "hf_source", "hf_norm", "anchor_weight",
           "anchor_pool", "anchor_trust", "anchor_trust_scope",
           "sup_weight", "sup_data", "sup_batch", "sup_degradation", "strength", "detail_cap", "detail_guard", "detail_guard_ratio", "detail_guard_gate",
           "ema", "perceptual", "perceptual_weight", "guard_factor", "eval_every", "patience", "snapshot_every", "checkpoint_every",
           "device", "seed", "encoder_backend", "tile")


def _name_the_flags(message: str, given: set[str]) -> str:
    """The config check names fields (``adapt config: patch_size must be ...``); where a field came from a flag, name
    the flag instead (``--patch-size must be ...``), as the user typed it: the field a message starts with, and any
    field of two or more words elsewhere in it (``needs sup_weight > 0``; a one-word field such as loss or mode is
    left alone there, being also a plain word). A message that then names a flag drops the ``adapt config:``
    prefix."""
    import re

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    found = re.match(r"adapt config: ([a-z][a-z_]*)\b", message)
    if found and found.group(1) in given:
        message = flag(found.group(1)) + message[found.end():]
    named = re.sub(r"(?<![-\w/.])([a-z]+(?:_[a-z0-9]+)+)(?![-\w/])",
                   lambda m: flag(m.group(1)) if m.group(1) in given else m.group(1), message)
    return named.removeprefix("adapt config: ") if named != message else named


def _setting(name: str, value, given: set[str], from_file: set[str]) -> str:
    """How a run came by a setting, for a message: ``--sup-weight 0``, ``sup_weight = 0 in --config`` or
    ``--sup-weight 0 (the default)``."""
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    if name in given:
        return f"--{name.replace('_', '-')} {shown}"
    if name in from_file:
        return f"{name} = {shown} in --config"
    return f"--{name.replace('_', '-')} {shown} (the default)"


def _unused_flags(config, given: set[str], from_file: set[str], *, gt: bool, hf_off_flag: bool) -> str | None:
    """The message refusing a flag typed for a part of the run that its settings turn off (it would be ignored,
    unread), or None. Only typed flags are refused: values from --config or the defaults are left as they were."""
    from lway_rt.cli._params import and_list

    def named(*names: str) -> list[str]:
        return ["--" + n.replace("_", "-") for n in names if n in given]

    def say(flags: list[str], what: str, why: str, fix: str) -> str:
        one = len(flags) == 1
        return (f"{and_list(flags)} {'is' if one else 'are'} for {what}, which {why}: drop {'it' if one else 'them'}, "
                f"or {fix}")

    def setting(name: str) -> str:
        return _setting(name, getattr(config, name), given, from_file)

    if config.sup_weight == 0 and (flags := named("sup_data", "sup_batch", "sup_degradation")):
        return say(flags, "the supervised term", f"{setting('sup_weight')} turns off", "give --sup-weight above 0")
    if config.anchor_weight == 0 and (flags := named("anchor_pool", "anchor_trust", "anchor_trust_scope")):
        return say(flags, "the anchor", f"{setting('anchor_weight')} turns off", "give --anchor-weight above 0")
    if config.anchor_weight > 0 and config.loss != "lway" and (flags := named("anchor_trust", "anchor_trust_scope")):
        return say(flags, "the anchor's backbone trust", f"stage 1 judges, and only the lway loss loads it (this run: "
                   f"{setting('loss')})", "use --loss lway")
    if config.anchor_weight > 0 and config.anchor_trust == 0 and (flags := named("anchor_trust_scope")):
        return say(flags, "the anchor's backbone trust", f"{setting('anchor_trust')} turns off",
                   "give --anchor-trust above 0")
    if config.detail_guard == 0 and (flags := named("detail_guard_ratio", "detail_guard_gate")):
        return say(flags, "the detail guard", f"{setting('detail_guard')} turns off", "give --detail-guard above 0")
    if not config.hf_weight and (flags := named("hf_mode", "hf_source", "hf_norm")):
        off, fix = ("--no-hf-weight", "drop --no-hf-weight") if hf_off_flag else \
            ("hf_weight = false in --config", "set hf_weight = true there")
        return say(flags, "the wavelet weight map", f"{off} turns off", fix)
    if config.loss == "supervised" and (flags := named("hf_mode", "hf_source", "hf_norm") +
                                        (["--no-hf-weight"] if hf_off_flag else [])):
        return say(flags, "the wavelet weight map of the self-supervised term", f"{setting('loss')} leaves out",
                   "use --loss lway")
    if config.loss != "lway" and config.mode != "per-group" and (flags := named("target")):
        return say(flags, "the size stage 1 reads and re-degrades at", f"only the lway loss and --mode per-group use "
                   f"(this run: {setting('loss')}, {setting('mode')})", "use --loss lway")
    if config.loss != "lway" and config.mode != "per-group" and (flags := named("encoder_backend")):
        return say(flags, "stage 1's encoder E", f"only the lway loss and --mode per-group run (this run: "
                   f"{setting('loss')}, {setting('mode')})", "use --loss lway")
    if not gt and (flags := named("eval_every", "patience")):
        return say(flags, "the ground-truth evaluations", "run only with --gt", "add --gt HR_FOLDER")
    return None


class _GroupsType(click.ParamType):
    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        if str(value).lower() == "auto":  # AUTO / Auto as the help shows it
            return "auto"
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number of groups nor auto", param, ctx)


_GROUPS = _GroupsType()


def _note(line: str) -> None:
    """A line to read even with -q, as every command prints its notes: on standard error, in yellow."""
    click.secho(line if line.startswith("note:") else f"note: {line}", fg="yellow", err=True)


def _restore(ctx, param, value) -> None:
    """``--restore OUT``: put back what a stopped --overwrite into OUT replaced, and exit (no inputs or model needed)."""
    if value is None or ctx.resilient_parsing:
        return
    from lway_rt.adapt.runfolder import restore_replaced

    click.echo(restore_replaced(Path(value)))
    ctx.exit(0)


@click.command("adapt")
@click.argument("inputs", nargs=-1, required=True, type=PathParam())
@click.option("-m", "--model", required=True, type=NAME, help="Store name (see 'lwayrt models list') or a .pth/.safetensors file.")
@click.option("-o", "--out", "--output", "out_dir", required=True, type=PathParam(file_okay=False), help="Output folder.")
@click.option("--stage1", type=PathParam(dir_okay=False), default=None,
              help="Stage-1 checkpoint (default: the shipped one); used by --loss lway and --mode per-group only.")
@click.option("--config", "config_file", type=PathParam(dir_okay=False), default=None,
              help="TOML file with defaults (an [adapt] table, or keys at its top level), or the config.json a run wrote (its "
                   "recipe again); flags override it.")
@click.option("--iterations", "--iters", "iterations", type=int, default=None, help="Adaptation steps [200].")
@click.option("--lr", type=FINITE, default=None, help="Adam learning rate [5e-5].")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default=None,
              help="constant, or cosine annealing from --lr towards 0 over the iterations [constant].")
@click.option("--patch-size", type=int, default=None, help="LR patch side in pixels; every input must be at least this large [48].")
@click.option("--augment", type=click.Choice(["none", "dihedral"]), default=None,
              help="dihedral: S sees each patch flipped/turned (one of 8, drawn per patch) and its output turned back "
                   "before the loss [none].")
@click.option("--batch-size", "--batch", "batch_size", type=int, default=None, help="Patches per step [4].")
@click.option("--trainable", default=None, help="all | body | comma-separated module or parameter names, each with what lies under it (body.1: "
                   "body.1.*, not body.10) [all].")
@click.option("--sample", type=click.IntRange(min=1), default=None, metavar="N",
              help="Adapt on N of the inputs spread evenly in frame order (frames of a long clip); only those are "
                   "written to sr/: 'lwayrt upscale' the rest with the adapted weights [all]. Of a video: N frames "
                   "spread over it, and 'lwayrt upscale-video' takes the whole clip [32].")
@click.option("--deinterlace", is_flag=True,
              help="With a video input: make each interlaced frame one picture before adapting on it (bwdif), as "
                   "'lwayrt upscale-video --deinterlace' does.")
@click.option("--mode", type=click.Choice(["folder", "per-image", "per-group"]), default=None,
              help="One model for all inputs, one per image, or one per group of inputs stage 1 finds degraded "
                   "alike [folder].")
@click.option("--groups", type=_GROUPS, default=None,
              help="per-group mode: how many groups, or auto (chosen from the inputs; one group when they "
                   "show no clear groups) [auto].")
@click.option("--target", type=click.Choice(["sr", "lr", "lr-recon"]), default=None,
              help="sr: R at SR size, compared with the upsampled LR; lr: the same, downsampled and compared with the LR; "
                   "lr-recon: S's output downsampled, then E and R at the LR's own scale, compared with the LR [sr].")
@click.option("--loss", type=click.Choice(["lway", "naive", "identity", "supervised"]), default=None,
              help="lway; naive = downsampled SR vs LR; identity = the R-replaced-by-identity control; supervised = only the --sup-weight term (the control for it) [lway].")
@click.option("--hf-mode", type=click.Choice(["luma", "channel"]), default=None, help="Wavelet weight map [luma].")
@click.option("--hf-source", type=click.Choice(["pred", "target"]), default=None,
              help="Wavelet map of the prediction x̂ (LWay) or of the target [pred].")
@click.option("--hf-norm", type=click.Choice(["patch", "batch"]), default=None,
              help="Normalise the wavelet map per patch (LWay) or over a step's batch, so flat patches weigh less [patch].")
@click.option("--no-hf-weight", is_flag=True, default=False, help="Plain L1 instead of the wavelet-weighted one.")
@click.option("--anchor-weight", type=FINITE, default=None, help="L1 tying S's output to the unadapted model's (drift guard) [0.2; 0: off].")
@click.option("--anchor-pool", type=int, default=None,
              help="Anchor only the coarse picture: compare after a KxK average pool (HR pixels) [1: every pixel].")
@click.option("--anchor-trust", type=FINITE, default=None,
              help="Loosen the anchor on images whose unadapted output stage 1 judges worse than bicubic: "
                   "factor min(1, L_bicubic/L_unadapted)^T [2; 0: off].")
@click.option("--anchor-trust-scope", type=click.Choice(["image", "run"]), default=None,
              help="Judge each image alone, or pool all inputs into one factor [run].")
@click.option("--sup-weight", type=FINITE, default=None,
              help="weight of a supervised L1 on synthetic LR/HR pairs made from clean photos (keeps S a restorer) [3; 0: off]")
@click.option("--sup-data", type=PathParam(), default=None,
              help="Folder of clean photos for the --sup-weight pairs [the bundled stage-1 training photos].")
@click.option("--sup-batch", type=int, default=None,
              help="Synthetic pairs a step for the --sup-weight term [--batch-size].")
@click.option("--sup-degradation", type=click.Choice(["classic", "lr", "stage1"]), default=None,
              help="How the --sup-weight pairs' LR is made: classic = blur, x4 down, noise, JPEG; lr = all at LR size; "
                   "stage1 = stage 1's R with your images' embeddings (lway loss only) [classic].")
@click.option("--strength", type=FINITE, default=None,
              help="Write base + STRENGTH x (adapted - base): less than 1 keeps part of the gain with a smaller worst case [1].")
@click.option("--detail-cap", type=FINITE_OR_OFF, default=None,
              help="Hold the fine detail adaptation adds at this many times the unadapted image's, per image, by "
                   "blending the written image towards the unadapted one (>= 1, or off; upscale repeats it) [off].")
@click.option("--detail-guard", type=FINITE, default=None,
              help="While training, penalise patches whose fine detail exceeds --detail-guard-ratio times the unadapted "
                   "output's, with this weight [0: off].")
@click.option("--detail-guard-ratio", type=FINITE, default=None,
              help="The detail ratio the detail guard allows (>= 1) [1.2].")
@click.option("--detail-guard-gate", type=click.Choice(["none", "trust"]), default=None,
              help="Scale the detail guard per image: trust = by how much worse than bicubic stage 1 finds the unadapted "
                   "output explains the input (0 where it explains it as well; lway loss only) [none].")
@click.option("--ema", type=FINITE, default=None,
              help="Write the moving average of the weights over the steps, with this decay (e.g. 0.98) [0: off].")
@click.option("--perceptual", type=click.Choice(["none", "trunk-l1", "lpips"]), default=None,
              help="Wavelet-weighted perceptual term beside the L1: trunk-l1 = L1 on a frozen pretrained SR trunk's "
                   "features (offline); lpips = LPIPS-AlexNet from --lpips-weights [none].")
@click.option("--perceptual-weight", type=FINITE, default=None, help="Weight of the --perceptual term [trunk-l1: 0.07, lpips: 1].")
@click.option("--lpips-weights", type=PathParam(dir_okay=False), multiple=True,
              help="LPIPS-AlexNet weight file(s) for --perceptual lpips (backbone and linear layers; one or two files).")
@click.option("--guard-factor", type=FINITE, default=None,
              help="Roll back when the fixed-patch loss exceeds this x its best [2; 0: off].")
@click.option("--gt", "gt_dir", type=PathParam(file_okay=False), default=None,
              help="HR ground truth named like the inputs: evaluate, keep the best, stop on patience.")
@click.option("--eval-every", type=int, default=None, help="Steps between ground-truth evaluations [20].")
@click.option("--patience", type=int, default=None, help="Evaluations without gain before stopping [3].")
@click.option("--snapshot-every", type=int, default=None, help="Steps between contact-sheet snapshots [20].")
@click.option("--checkpoint-every", "--ckpt-every", "checkpoint_every", type=int, default=None, help="Steps between resumable checkpoints [20].")
@click.option("--device", type=DEVICE, default=None, help="torch device: cpu, cuda or cuda:N [cpu].")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Random seed [0].")
@click.option("--encoder-backend", type=click.Choice(["torch", "onnxruntime", "tensorrt"]), default=None,
              help="Backend computing E's embeddings: eager torch, or E exported to ONNX Runtime / TensorRT [torch].")
@click.option("--tile", type=int, default=None, help="Tile size for writing SR images, as lwayrt upscale --tile (0: one pass; above 64) [512].")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out (a finished one made with these "
                                              "inputs and settings is kept as it is).")
@click.option("--overwrite", is_flag=True, help="Replace the run (finished or not) already in --out (a finished one is kept in "
              "--out/.lwayrt-replaced until the new run finishes).")
@click.option("--restore", type=PathParam(file_okay=False), is_eager=True, expose_value=False, callback=_restore,
              metavar="OUT", help="Put back the finished run that a stopped --overwrite into OUT replaced (the stopped "
                                  "run's files go), and exit; no inputs or model are needed.")
@click.option("-q", "--quiet", is_flag=True,
              help="Print only the summary and the notes (inputs not read, the images to check first).")
def command(inputs, model, out_dir, stage1, config_file, trainable, no_hf_weight, lpips_weights, gt_dir, resume, overwrite, quiet,
            deinterlace, **flags):
    """Adapt MODEL to the low-resolution images INPUT... (files or folders; a folder's own images, not its
    sub-folders', which a note names; or one video, whose --sample frames spread over it [32] are the
    images) without ground truth.

    Writes adapted weights (same architecture as MODEL), the SR image of every input, report.json,
    curves.png, contact_sheet.png and config.json into --out (with --mode per-image / per-group, one
    such folder per image / group inside --out, and groups.json naming each group's images).
    """
    from lway_rt.adapt.config import AdaptConfig, load_toml_defaults
    from lway_rt.adapt.loop import adapt
    from lway_rt.errors import InputError, Interrupted

    values = load_toml_defaults(config_file) if config_file else {}
    from_file = set(values)
    given = {k for k, v in flags.items() if k in _FIELDS and v is not None}  # typed on the command line
    given |= {k for k, v in (("trainable", trainable is not None), ("lpips_weights", bool(lpips_weights))) if v}
    values.update({k: v for k, v in flags.items() if k in _FIELDS and v is not None})
    if trainable is not None:
        parts = [p.strip() for p in trainable.split(",") if p.strip()]
        values["trainable"] = parts[0] if len(parts) == 1 and parts[0] in ("all", "body") else tuple(parts)
    if values.get("detail_cap") == "off":  # typed off: over a --config file's cap too
        values["detail_cap"] = None
    if no_hf_weight:
        values["hf_weight"] = False
    if lpips_weights:
        values["lpips_weights"] = tuple(lpips_weights)
    try:
        config = AdaptConfig.from_dict(values)
    except InputError as exc:
        raise InputError(_name_the_flags(str(exc), given)) from None
    if "device" in from_file and "device" not in given:  # (the file's word, said as the file's: 56D-6)
        from lway_rt.runtime.device import check_device_spelling

        check_device_spelling(config.device, flag=f"device in --config {config_file}")
    unused = _unused_flags(config, given, from_file, gt=gt_dir is not None, hf_off_flag=no_hf_weight)
    if unused:
        raise InputError(unused)
    # progress on standard error, as every command prints it: standard output keeps the result lines for a script
    log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    if resume and overwrite:
        raise click.UsageError("--resume keeps the run in --out, --overwrite replaces it: pass one of them")
    if stage1 is not None and config.loss != "lway" and config.mode != "per-group":  # it would be ignored, unread
        raise InputError(f"--stage1 is used by the lway loss and by --mode per-group only (this run: --loss "
                         f"{config.loss}, --mode {config.mode}): drop --stage1, or use --loss lway")
    video = _one_video(inputs)
    if deinterlace and video is None:
        raise InputError("--deinterlace is for a video given as the input (its frames are made whole pictures before "
                         "adapting on them): drop it")
    from lway_rt.adapt.visual import can_plot

    if not can_plot():  # said before the work, not only in report.json's events after it (review 56A-1)
        _note("matplotlib is not installed: this run writes no curves.png (its loss curves are in report.json); "
              "pip install 'lway_rt[plot]' draws it in later runs")
    if video is not None:  # frames spread over the clip, read as upscale-video reads them, adapted on in memory
        inputs, config = _video_frames(video, config, deinterlace, note=_note, log=log)
    try:
        results = adapt(list(inputs), model, out_dir, config, stage1=stage1, gt_dir=gt_dir, resume=resume, log=log,
                        overwrite=overwrite, note=_note)
    except KeyboardInterrupt:  # the loop turns a stop after a checkpoint into its own message: this one came before
        from lway_rt.adapt.runfolder import stop_words  # the first step, between runs, or after the last one

        if words := stop_words(Path(out_dir), overwrite):
            raise Interrupted(words) from None
        if resume:  # while the inputs or the model loaded (what --out holds is as it was), or after a run without a
            # checkpoint began writing its sr/ images again (which its list names): not "as it was"
            raise Interrupted(f"adaptation interrupted; run the same command (with --resume) again to take up the run "
                              f"in {out_dir}") from None
        raise Interrupted("adaptation interrupted before its first checkpoint: there is nothing to resume; run the "
                          "same command again (it starts from the beginning)") from None
    for r in results:
        rep = r.report
        line = f"{r.weights}: {rep['iterations_run']} iteration{'' if rep['iterations_run'] == 1 else 's'}, {rep['stopped']}"
        final = rep.get("final_iteration")
        if isinstance(final, int) and final != rep["iterations_run"]:  # the best evaluated, or the last good weights
            line += f"; weights of iteration {final} kept" if final else "; the unadapted weights kept"
        if rep.get("mean"):
            m = rep["mean"]
            line += f"; Y-PSNR {m['psnr_before']:.3f} -> {m['psnr_after']:.3f} dB"
            if "psnr_after_uncapped" in m:  # (the written images, capped; the network alone beside them)
                line += f" with the detail cap ({m['psnr_after_uncapped']:.3f} dB without)"
        click.echo(line)
    if video is not None:
        click.echo(f"the whole clip with the adapted weights: lwayrt upscale-video {shell_word(str(video))} -m "
                   f"{shell_word(out_dir)} -o OUT" + (" --deinterlace" if deinterlace else ""))
    if config.mode == "per-group" and len(results) > 1:
        click.echo(f"new images go each to its group's model with: lwayrt upscale NEW... -m {shell_word(out_dir)} "
                   "-o OUT")


def _video_frames(video: Path, config, deinterlace: bool, *, note, log):
    """The frames ``adapt VIDEO`` adapts on, and the config that records how many (config.json repeats the run, a
    resume checks it): ``--sample`` of them (32) spread over the clip, read as upscale-video reads them."""
    from lway_rt.errors import InputError, listing
    from lway_rt.io.video import Decoding, damage_words, probe, size_changes
    from lway_rt.video import ADAPT_FRAMES, sample_frames

    if config.mode != "folder":
        raise InputError(f"{video} is adapted as one model for the whole clip, which 'lwayrt upscale-video' takes; "
                         f"--mode {config.mode} makes models it cannot use: drop --mode")
    info = probe(video)
    if min(info.width, info.height) < config.patch_size:
        raise InputError(f"the frames of {video} are {info.width}x{info.height}, smaller than the {config.patch_size}-px "
                         f"patch: use --patch-size {min(info.width, info.height)} or less")
    decoding = Decoding()
    frames = sample_frames(video, config.sample, deinterlace, info, decoding)
    if decoding.errors:  # (a truncated clip is read as far as it goes, its frames counted again: said, not later)
        said, truncated = damage_words(video, decoding.errors)
        note(said + (": the file is cut short (truncated)" if truncated else "") + "; the frames adapted on are those "
             "it decoded, and 'lwayrt upscale-video' will say the same of it")
    if other := size_changes(info, decoding):  # (58D-8: squeezed frames adapted on, unsaid)
        note(f"{video} changes its frame size part-way (to {listing(other, 3)} from {info.width}x{info.height}): those "
             f"frames were scaled to {info.width}x{info.height} first, and adapted on so; 'lwayrt upscale-video' will "
             "say the same of it; cut the video where its size changes and adapt on each part")
    if info.interlaced and not deinterlace:
        note(f"{video} is interlaced: its frames were adapted on as they are, combs and all; --deinterlace adapts on "
             "whole pictures (then give 'lwayrt upscale-video' --deinterlace too)")
    wanted = config.sample or ADAPT_FRAMES
    if len(frames) < wanted:
        note(f"{video} has {len(frames)} frame(s), fewer than the {wanted} asked for: all of them adapted on")
    log(f"adapting on {len(frames)} frame(s) spread over {video} (--sample N takes N)")
    return frames, dataclasses.replace(config, sample=len(frames))


def _one_video(inputs) -> Path | None:
    """The video among ``inputs``, which must then be the only input (its frames are the images); None without."""
    from lway_rt.errors import InputError
    from lway_rt.io.images import VIDEO_SUFFIXES

    videos = [Path(i) for i in inputs if Path(i).suffix.lower() in VIDEO_SUFFIXES and Path(i).is_file()]
    if not videos:
        return None
    if len(inputs) > 1:
        raise InputError(f"{videos[0]} is a video, and adapt takes one video alone (frames spread over it are the "
                         "images): give it by itself, or folders of frames")
    return videos[0]
