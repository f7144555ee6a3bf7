"""``lwayrt export``: ONNX (fp32/fp16) and TensorRT engines with parity gates, a cache and refit."""

from __future__ import annotations

from pathlib import Path

import click

from lway_rt.cli._params import FINITE, NAME, PROFILE, PathParam, and_list, cap_word, typed
from lway_rt.errors import shell_word


def _log(msg: str) -> None:
    click.echo(msg, err=True)


@click.command("export")
@click.option("--model", "-m", "model_spec", metavar="M", type=NAME,
              help="Store name (e.g. realesr-animevideov3), a .pth/.safetensors file, or an adapt output folder. "
                   "Required but with --what encoder.")
@click.option("-o", "--out", "--output", "out_dir", type=PathParam(file_okay=False, path_type=Path), default=Path("engines"),
              show_default=True, help="Folder for the ONNX files, engines and manifests (with --refit: for the refitted "
                                      "engine, by default the original engine's folder).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "both"]),
              help="Overrides the profile (fp16 keeps fp32 I/O; both shares one torch export).")
@click.option("--engine", type=click.Choice(["none", "tensorrt"]), help="Also build a TensorRT engine (overrides the profile).")
@click.option("--what", type=click.Choice(["sr", "encoder", "both"]), default="sr", show_default=True,
              help="The SR network, the stage-1 degradation encoder, or both.")
@click.option("--profile", "profile_name", metavar="NAME|PATH", type=PROFILE,
              help="Target profile: a name of the profiles shipped in the package (cpu, desktop-fp16, jetson-orin-trt10; "
                   "LWAYRT_PROFILES names another folder of them) or a .toml path "
                   "[the built-in default: fp32 ONNX, no engine, opset 18, dynamic H/W; an engine's profile 16-1024 px, "
                   "batch 1].")
@click.option("--static", "static_tiles", multiple=True, metavar="HxW",
              help="Export at fixed tile sizes instead of dynamic H/W (repeatable).")
@click.option("--opset", type=int, help="ONNX opset (overrides the profile).")
@click.option("--keep-fp32", "keep_fp32", multiple=True, metavar="PATTERN",
              help="fp16 only: node name or torch module path (fnmatch) to keep in fp32, e.g. conv_last of an "
                   "RRDBNet (repeatable; added to the profile's keep_fp32_nodes).")
@click.option("--refittable", is_flag=True, help="Build the TensorRT engine with the REFIT flag.")
@click.option("--stage1", "stage1_path", type=PathParam(dir_okay=False, path_type=Path),
              help="Stage-1 checkpoint for --what encoder/both (default: the shipped one).")
@click.option("--refit", "refit_engine_path", type=PathParam(dir_okay=False, path_type=Path), metavar="ENGINE",
              help="Swap --model's weights into this refittable engine instead of building a new one.")
@click.option("--force", is_flag=True, help="Rebuild even when a ready artifact with the same cache key exists.")
@click.option("--detail-cap", "detail_cap", default="auto", show_default=True, metavar="auto|off|C", callback=cap_word,
              help="auto: weights adapted with --detail-cap export with that cap in the graph (the unadapted model runs "
                   "beside the adapted one and each output is blended as upscale does); off: the adapted network alone; "
                   "C: this cap.")
@click.option("--base-model", "base_model", metavar="M", type=NAME,
              help="The unadapted model the detail cap compares with [the one the weights record].")
@click.option("--max-abs-diff", type=FINITE, default=1e-4, show_default=True,
              help="Parity gate for fp32 SR files: largest allowed |exported - torch|.")
@click.option("--min-psnr", type=FINITE, default=45.0, show_default=True,
              help="Parity gate for fp16 SR files: lowest allowed PSNR (dB) against the fp32 torch output.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the files as one JSON list (what, precision, onnx, engine, cache_hit) for scripts, not lines.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines: print only the files, notes and warnings.")
def command(model_spec, out_dir, precision, engine, what, profile_name, static_tiles, opset, keep_fp32, refittable,
            stage1_path, refit_engine_path, force, detail_cap, base_model, max_abs_diff, min_psnr, as_json, quiet):
    """Export a model to ONNX (and optionally TensorRT); every artifact must pass the parity gate.

    \b
    Examples:
      lwayrt export --model realesr-animevideov3
      lwayrt export --model realsr-df2k-x4 --precision fp16
      lwayrt export --model adapted/ --profile desktop-fp16
      lwayrt export --what encoder --stage1 stage1.safetensors
      lwayrt export --refit engines/x.engine --model adapted/
    """
    from lway_rt.errors import InputError, ModelError
    from lway_rt.export.parity import ParityGate
    from lway_rt.export.pipeline import encoder_exportable, export_artifacts, refit_engine, sr_exportable
    from lway_rt.export.profile import load_profile, parse_tile
    from lway_rt.io.store import load_model
    from lway_rt.upscale import UpscaleConfig, prepare_detail_cap

    cap_config = UpscaleConfig(detail_cap=detail_cap, base_model=base_model)  # validates --detail-cap
    progress = _log if not quiet else (lambda _msg: None)  # (notes and warnings go to _log whatever -q says)
    ctx = click.get_current_context()
    if refit_engine_path is not None:  # the engine's manifest holds every setting of the export it refits
        unused = typed(ctx, "what", "precision", "engine", "profile_name", "static_tiles", "opset", "keep_fp32",
                       "refittable", "stage1_path", "force")
        if unused:
            raise InputError(f"--refit takes its settings from the engine's manifest: leave out {and_list(unused)} "
                             "(or build a new engine without --refit)")
    elif what == "encoder" and (unused := typed(ctx, "model_spec", "detail_cap", "base_model", "max_abs_diff", "min_psnr")):
        raise InputError(f"{and_list(unused)} {'is' if len(unused) == 1 else 'are'} for the SR network, and --what "
                         "encoder exports the stage-1 encoder alone (its embeddings are gated by their relative "
                         f"difference, 1e-4 fp32, 1e-2 fp16): use --what both, or drop {'it' if len(unused) == 1 else 'them'}")
    elif what == "sr" and (unused := typed(ctx, "stage1_path")):
        raise InputError("--stage1 is for --what encoder or both, and this export is of the SR network alone: add "
                         "--what both (or encoder), or drop --stage1")

    if not model_spec and (what != "encoder" or refit_engine_path is not None):  # (a usage error, as elsewhere: 56C-2)
        raise click.UsageError("Missing option '--model' / '-m': a store name, a .pth/.safetensors file or an adapt "
                               "output folder" + ("" if refit_engine_path else " (or --what encoder for stage 1's encoder)"))
    if ctx.get_parameter_source("out_dir") is click.core.ParameterSource.COMMANDLINE and \
            out_dir.suffix.lower() in (".onnx", ".engine", ".plan") and not out_dir.is_dir():
        _log(f"note: --out names a folder, and {out_dir} will be one: the files go into it under their own names "
             "(the manifest beside each file names its model and settings)")

    def load_sr():
        if not model_spec:
            raise InputError("--model is required: a store name, a .pth/.safetensors file or an adapt output folder")
        desc = load_model(model_spec)
        label = Path(model_spec).name if Path(model_spec).is_dir() else None
        cap = prepare_detail_cap(cap_config, desc)
        if cap is None:
            if "detail_cap" in (desc.metadata or {}):
                _log(f"note: these weights were adapted with --detail-cap {float(desc.metadata['detail_cap']):g}; with "
                     "--detail-cap off the exported network is the uncapped model")
            return sr_exportable(desc, label=label, model_spec=model_spec)
        from lway_rt.export.capped import capped_sr_exportable

        progress(f"detail cap {cap.cap:g}: the graph runs the unadapted model beside the adapted one and blends each "
                 "output as lwayrt upscale does (about twice the work; --detail-cap off for the adapted network alone)")
        return capped_sr_exportable(desc, cap.base, cap.cap, label=label, model_spec=model_spec, base_spec=base_model)

    gate = ParityGate(fp32_max_abs=max_abs_diff, fp16_min_psnr=min_psnr)
    if refit_engine_path is not None:
        given = bool(typed(ctx, "out_dir"))
        ex = load_sr()
        try:
            new_engine = refit_engine(refit_engine_path, ex, out_dir=out_dir if given else None, gate=gate, log=progress)
        except ModelError as exc:
            if "detail_cap" not in ex.hparams or "cannot be refitted" not in str(exc):
                raise
            raise ModelError(f"{exc} (these weights record a detail cap, so their export holds the unadapted and the "
                             "adapted network: to refit an engine of the adapted network alone pass --detail-cap off)") from None
        click.echo(f"refitted: {new_engine}")
        return

    profile = load_profile(profile_name)
    tiles = tuple(dict.fromkeys(parse_tile(t) for t in static_tiles)) or None  # a repeated size once, not twice
    flags = tuple(dict.fromkeys((*profile.tensorrt.flags, "refit"))) if refittable else None
    precisions = ("fp32", "fp16") if precision == "both" else None
    profile = profile.replace(precision=None if precision == "both" else precision, engine=engine, opset=opset,
                              mode="static" if tiles else None, tiles=tiles, flags=flags,
                              keep_fp32_nodes=tuple(dict.fromkeys((*profile.keep_fp32_nodes, *keep_fp32))) or None)

    if refittable and profile.engine != "tensorrt":  # the flag only shapes an engine build: say so, not ignore it
        raise InputError(f"--refittable builds a refittable TensorRT engine, and this export builds none (profile "
                         f"{profile.name!r} has engine = {profile.engine!r}): add --engine tensorrt, or drop --refittable")
    if keep_fp32 and "fp16" not in (precisions or (profile.precision,)):
        raise InputError("--keep-fp32 names nodes to keep in fp32 in an fp16 export: add --precision fp16 (or both), "
                         "or drop it")
    exportables = []  # (what to export, its profile)
    if what in ("sr", "both"):
        sr, sr_profile = load_sr(), profile
        from lway_rt.export.capped import fp32_nodes

        keep = fp32_nodes(sr.module)  # a capped graph's blend outgrows fp16's range: it stays fp32 in an fp16 graph
        if keep:
            sr_profile = profile.replace(keep_fp32_nodes=tuple(dict.fromkeys((*profile.keep_fp32_nodes, *keep))))
        if "detail_cap" in sr.hparams and profile.shapes.mode == "static":  # (upscale and serve-bench refuse to tile
            # a capped file; a fixed-size one is made for tiles: 57B-7)
            sizes = ", ".join(f"{h}x{w}" for h, w in profile.shapes.tiles)
            _log(f"note: a capped graph caps each call on its own, so a fixed-size ({sizes}) file gives lwayrt "
                 "upscale's images only for whole images of that size: tiles of a larger image would each be capped "
                 "apart (--detail-cap off exports the adapted network alone, which tiles as any)")
        exportables.append((sr, sr_profile))
    if what in ("encoder", "both"):
        from lway_rt.degae import load_stage1, unfinished_note

        s1 = load_stage1(stage1_path)
        if note := unfinished_note(s1, str(stage1_path)):  # (as adapt, eval-degae and demo say it)
            click.echo(note, err=True)
        label = stage1_path.stem if stage1_path else "stage1-default"
        exportables.append((encoder_exportable(s1, label=label, path=str(stage1_path) if stage1_path else None), profile))

    runnable = None  # a dynamic SR file upscale can run
    fp16_files = []  # fp16 ONNX files written or found, for the --keep-fp32 check
    made = []  # (--json: a file name holds its cache key, and the words of a line differ between a hit and a miss)
    for ex, ex_profile in exportables:
        for res in export_artifacts(ex, ex_profile, precisions=precisions, out_dir=out_dir, gate=gate, force=force,
                                    log=progress):
            if res.precision == "fp16":
                fp16_files.append(res.onnx_path)
            made.append({"what": ex.what, "precision": res.precision, "onnx": str(res.onnx_path),
                         "engine": None if res.engine_path is None else str(res.engine_path),
                         "cache_hit": bool(res.cache_hit)})
            status = "cache hit" if res.cache_hit else "exported"
            click.echo(f"{ex.what} {res.precision}: {status} {res.onnx_path}", err=as_json)
            if res.engine_path is not None:
                click.echo(f"{ex.what} {res.precision}: {'engine cache hit' if res.engine_cache_hit else 'engine built'} "
                           f"{res.engine_path}", err=as_json)
            if ex.what == "sr" and res.tile is None and runnable is None:
                runnable = (res.onnx_path, "detail_cap" in ex.hparams, ex.in_channels)
    _warn_unmatched(profile.keep_fp32_nodes, fp16_files)
    if as_json:
        import json

        click.echo(json.dumps(made, indent=1))
    if runnable is not None and runnable[2] not in (1, 3):
        _log(f"note: this network takes {runnable[2]}-channel input; lwayrt upscale runs only RGB (3) and grey (1) "
             "models, so the file is for a runtime of your own")
    elif runnable is not None:
        progress(f"run it with ONNX Runtime: lwayrt upscale INPUT... -o OUT -m {shell_word(runnable[0])}"
                 + (" --tile 0" if runnable[1] else ""))


def _warn_unmatched(patterns, fp16_files) -> None:
    """Name the --keep-fp32 / profile patterns that kept nothing: a typo must not pass as a kept node."""
    if not patterns or not fp16_files:
        return
    import onnx

    from lway_rt.export.fp16 import matched_patterns

    matched: set[str] = set()
    tops: dict[str, None] = {}
    for path in fp16_files:
        found, names = matched_patterns(onnx.load(str(path), load_external_data=False), patterns)
        matched |= found
        tops.update(dict.fromkeys(names))
    missing = [p for p in patterns if p not in matched]
    if missing:
        hint = f"; names at the top of this graph: {', '.join(list(tops)[:8])}" if tops else ""
        _log(f"warning: --keep-fp32 {', '.join(repr(p) for p in missing)} matched no node, so nothing was kept in fp32 "
             f"for {'it' if len(missing) == 1 else 'them'} (patterns are fnmatch on node names and torch module "
             f"paths such as body.0 or body.*{hint})")
