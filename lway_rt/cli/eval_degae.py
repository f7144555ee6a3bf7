"""``lwayrt eval-degae``: evaluate a stage-1 checkpoint on held-out photos and degradations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from lway_rt.cli._params import DEVICE, PathParam


def _num(x: float, fmt: str) -> str:
    return format(x, fmt) if math.isfinite(x) else "undefined"


@click.command("eval-degae")
@click.option("--checkpoint", "--stage1", "checkpoint", type=PathParam(path_type=Path, names_a_file=True), default=None,
              help="Stage-1 checkpoint (default: the shipped one).")
@click.option("--data", type=PathParam(path_type=Path), default=None,
              help="Folder of held-out clean photos, those directly inside it (default: bundled chelsea and coffee, "
                   "which the bundled training photos leave out); photos the checkpoint was trained on are said so.")
@click.option("--json", "json_path", type=PathParam(names_a_file=True), default=None,
              help="Write the full report here ('-': to standard output, the summary lines going to standard error).")
@click.option("--crop", type=int, default=96, show_default=True, help="Side in px of the clean crops degraded and "
              "reconstructed.")
@click.option("--crops-per-image", type=int, default=4, show_default=True, help="Crops taken from each held-out "
              "photo.")
@click.option("--draws", type=int, default=24, show_default=True, help="Random degradation draws per geometry.")
@click.option("--seed", type=click.IntRange(min=0), default=20240302, show_default=True,
              help="Seed of the random degradation draws and of every noise realisation, the presets' included (the "
                   "photos and crops are fixed).")
@click.option("--device", type=DEVICE, default="cpu", show_default=True, help="torch device: cpu, cuda or cuda:N.")
def command(checkpoint, data, json_path, crop, crops_per_image, draws, seed, device) -> None:
    """Reconstruction PSNR vs identity, embedding ablation and separation ratio."""
    from lway_rt.degae import load_stage1, unfinished_note
    from lway_rt.degae.evaluate import EvalConfig, evaluate_stage1, trained_on
    from lway_rt.errors import InputError, OutputError

    # the report for a pipe (| jq), the lines going to stderr; the string as typed, so ./- still names a file '-'
    to_stdout = json_path == "-"

    def say(line: str) -> None:
        click.echo(line, err=to_stdout)

    if json_path is not None and not to_stdout:  # checked before the evaluation, which takes a while
        from lway_rt.io.weights import check_dir_can_be_written, check_file_destination

        target = Path(json_path)
        check_file_destination(target, "--json")
        if target.is_dir():
            raise InputError(f"--json {target} is a folder: name the report's file, e.g. {target / 'eval.json'}")
        if target.exists() and not target.is_file():
            raise InputError(f"--json {target} is not a regular file (a device or pipe): name a file, or pass --json - "
                             "for standard output")
        # a folder that takes no file is said now, not after minutes; a missing one is made only to write the report
        check_dir_can_be_written(target.parent, "--json")
        if target.is_file() and target.stat().st_size:
            try:
                earlier = json.loads(target.read_text())
            except (UnicodeDecodeError, ValueError):
                earlier = None
            if not (isinstance(earlier, dict) and {"settings", "geometries"} <= earlier.keys()):  # only its own reports
                raise InputError(f"--json {target} exists and is not an eval-degae report (it would be replaced): name "
                                 "another file") from None
    try:
        cfg = EvalConfig(data=str(data.absolute()) if data else None, crop=crop, crops_per_image=crops_per_image,
                         draws=draws, seed=seed)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    from lway_rt.runtime.device import check_torch_device

    s1 = load_stage1(checkpoint, check_torch_device(device))
    if note := unfinished_note(s1, str(checkpoint)):
        click.echo(note, err=True)
    # a folder it trained on, or one holding those images (the same files under other names too)
    seen, some, photos = trained_on(s1, data, crop) if data is None or data.is_dir() else (False, 0, 0)
    where = f"photos in {data}" if data is not None else "bundled evaluation photos (chelsea, coffee)"
    named = checkpoint or "the shipped stage 1"
    if seen:  # said before the evaluation, which takes a while
        click.echo(f"note: {named} was trained on the {where}: its numbers there are not held-out (give "
                   "--data photos it never saw to measure how it generalises)", err=True)
    elif some:
        click.echo(f"note: {named} was trained on {some} of the {photos} {where} (the same files, under "
                   "any name): its numbers there are not wholly held-out (leave those out to measure how it "
                   "generalises)", err=True)
    report = evaluate_stage1(s1, cfg, note=lambda m: click.echo(m, err=True))
    report["settings"]["trained_on_data"] = seen
    report["settings"]["trained_on_photos"] = some  # (of its images, by their bytes; null: the checkpoint records none)
    report["checkpoint"] = str(checkpoint) if checkpoint else "shipped default"
    report["checkpoint_meta"] = {k: s1.meta.get(k) for k in ("embed_dim", "width", "blocks", "skip", "trunk_model",
                                                              "trunk_layers", "iterations", "train_seconds")}
    for name, g in report["geometries"].items():
        say(f"[{name}] recon {_num(g['recon'], '.2f')} dB | identity {_num(g['identity'], '.2f')} dB | gain "
            f"{_num(g['gain_db'], '+.2f')} dB | "
            f"separation {_num(g['separation_ratio'], '.3f')}")
        say(f"  ablation: own {_num(g['recon'], '.2f')}  shuffled {_num(g['shuffled'], '.2f')}  zero "
            f"{_num(g['zero'], '.2f')}  cross-image {_num(g['cross_image'], '.2f')}  gap {_num(g['ablation_gap_db'], '+.2f')} dB")
        nd = g["no_degradation_draws"]
        if nd.get("n"):
            say(f"  no-degradation draws (n={nd['n']}, left out of the mean): recon {_num(nd['recon'], '.2f')} dB")
        for kind, k in g["per_kind"].items():
            ident = _num(k["identity"], ".2f") if "identity" in k else "inf"
            say(f"  {kind:18s} n={k['n']:3d} recon {_num(k['recon'], '6.2f')} identity {ident:>6s} shuffled "
                f"{_num(k['shuffled'], '6.2f')}")
        for p, k in report["presets"][name].items():
            say(f"  preset {p:18s} recon {_num(k['recon'], '6.2f')} identity {_num(k['identity'], '6.2f')} shuffled "
                f"{_num(k['shuffled'], '6.2f')} zero {_num(k['zero'], '6.2f')}")
    say(f"recon_psnr {_num(report['recon_psnr'], '.2f')} dB, identity_psnr {_num(report['identity_psnr'], '.2f')} dB, "
        f"separation_ratio {_num(report['separation_ratio'], '.3f')}, ablation gap {_num(report['ablation']['gap_db'], '+.2f')} dB "
        f"({report['geometry']})")
    say("(higher is better for recon, gain and the ablation gap; lower for separation, the spread of one degradation's "
        "embeddings over the spread between degradations: read it with the others, as an untrained encoder's embeddings "
        "can lie apart and mean nothing to R)")
    gain, gap = report["recon_psnr"] - report["identity_psnr"], report["ablation"]["gap_db"]
    few = cfg.draws < EvalConfig.draws  # (57M-3: the shipped checkpoint fell below on 4 draws of one photo)
    if math.isfinite(gain) and gain <= 0:  # (57L-2: a 1-iteration checkpoint met the separation target, unsaid)
        click.echo(f"note: R reconstructs {-gain:.2f} dB worse than the identity baseline (the degraded image itself) "
                   + (f"on these {cfg.draws} draws, fewer than the {EvalConfig.draws} the targets are read on: measure "
                      "with more --draws; a stage 1 that stays below it " if few else "here: this stage 1 ")
                   + "has not learnt to re-degrade these images (train it longer)", err=True)
    if math.isfinite(gap) and gap < 0.1:
        click.echo(f"note: an image's own embedding helps R by {gap:+.2f} dB over a shuffled one: R barely uses the "
                   "embedding, so its separation says nothing of use for adaptation", err=True)
    # (a checkpoint whose outputs are NaN/inf is refused by evaluate_stage1: an undefined number here is the data's)
    one_image = len(report["settings"]["images"]) < 2
    undefined = [k for k in ("recon_psnr", "identity_psnr", "separation_ratio")
                 if not math.isfinite(report[k]) and not (k == "separation_ratio" and one_image)]
    undefined += [f"the {name} separation" for name, g in report["geometries"].items()  # the other geometries' too
                  if name != report["geometry"] and not one_image and not math.isfinite(g["separation_ratio"])]
    if undefined:
        click.echo(f"note: {', '.join(undefined)} undefined (it compares distinct degradations, and too few draws "
                   "add one: a draw of no degradation of its own, whatever its round trip, counts as none): use more "
                   "--draws",
                   err=True)
    if one_image:
        click.echo("note: separation_ratio and the cross-image ablation undefined (they compare one draw on different "
                   "images; every crop is from one image): use more images in --data", err=True)
    if to_stdout:
        from lway_rt.io.weights import finite

        click.echo(json.dumps(finite(report), indent=1, allow_nan=False))
    elif json_path:
        from lway_rt.io.weights import atomic_write_json

        replaced = Path(json_path).is_file()  # (an earlier report only: another file was refused before the work)
        try:  # strict JSON: an undefined number is null, not NaN
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(Path(json_path), report, indent=1)
        except OSError as exc:
            raise OutputError(f"cannot write {json_path}: {exc.strerror}; choose another --json path") from exc
        click.echo(f"wrote {json_path}" + (" (the earlier report there replaced)" if replaced else ""))

