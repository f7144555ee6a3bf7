"""How well the fine detail adaptation adds predicts which crops it makes worse (no ground truth needed).

``lwayrt adapt`` reports, per image, the Haar detail energy of the adapted output over the unadapted one (the
``detail_change`` of ``report.json``) and names the images where it rose most. This script measures what that
flag is worth on every committed quality run that recorded per-crop detail (``hf_ratio``, relative to the truth,
for both ``lway`` and ``unadapted``: their quotient is the same ratio, the truth cancels): for ratio bands, how
many crops, their mean gain, and how many lost more than 0.1 dB.

    .venv/bin/python benchmarks/detail_flag.py --force [--threshold 1.2]   # rewrites benchmarks/results/detail_flag.json
    .venv/bin/python benchmarks/detail_flag.py --files 'heldout_*.json' --out benchmarks/results/detail_flag_heldout.json

The threshold was read off the crops of the first command; ``heldout_seeds56_*.json`` and ``heldout_seeds78_*.json``
(``quality.py`` with data seeds 5-6 and 7-8, used nowhere else, the default recipe) check it on crops it never saw.
Without ``--out`` the script refuses to replace an existing ``detail_flag.json`` unless given ``--force``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
from _args import add_out, command_line, resolve_out, write_json  # noqa: E402

BANDS = (0.0, 1.0, 1.1, 1.2, 1.35, 1.5, float("inf"))


def crops(results: Path, pattern: str = "quality*.json"):
    """(file, preset, image, seed, detail ratio lway/unadapted, gain dB) of every scored crop with both hf_ratios.
    Files merged from others (``merged_from``) are skipped: their parts are counted already."""
    for f in sorted(results.glob(pattern)):
        d = json.loads(f.read_text())
        if "merged_from" in d or not isinstance(d.get("per_image"), list):
            continue
        for r in d["per_image"]:
            u, a = r.get("unadapted", {}), r.get("lway", {})
            if u.get("hf_ratio") and "hf_ratio" in a:
                yield f.name, r["preset"], r["image"], r["seed"], a["hf_ratio"] / u["hf_ratio"], a["psnr"] - u["psnr"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threshold", type=float, default=1.2, help="the flag: detail ratio at or above this")
    ap.add_argument("--files", default="quality*.json", help="which result files under benchmarks/results")
    add_out(ap, ROOT / "benchmarks" / "results" / "detail_flag.json")
    args = ap.parse_args(argv)
    resolve_out(ap, args)
    rows = list(crops(ROOT / "benchmarks" / "results", args.files))
    if not rows:
        raise SystemExit(f"no results matching {args.files} with per-crop hf_ratio under benchmarks/results")
    bands = []
    for lo, hi in zip(BANDS, BANDS[1:]):
        sel = [r for r in rows if lo <= r[4] < hi]
        if sel:
            bands.append({"ratio_from": lo, "ratio_below": hi if hi != float("inf") else None, "crops": len(sel),
                          "mean_gain_db": round(sum(r[5] for r in sel) / len(sel), 4),
                          "lost_over_0.1dB": sum(r[5] < -0.1 for r in sel)})
    losers = [r for r in rows if r[5] < -0.1]
    flagged = [r for r in rows if r[4] >= args.threshold]
    summary = {"crops": len(rows), "files": sorted({r[0] for r in rows}), "threshold": args.threshold,
               "flagged": len(flagged), "lost_over_0.1dB": len(losers),
               "losers_flagged": sum(r[4] >= args.threshold for r in losers),
               "loss_rate_flagged": round(sum(r[5] < -0.1 for r in flagged) / max(1, len(flagged)), 4),
               "loss_rate_unflagged": round((len(losers) - sum(r[4] >= args.threshold for r in losers))
                                            / max(1, len(rows) - len(flagged)), 4),
               "bands": bands,
               "losers": [{"file": r[0], "preset": r[1], "image": r[2], "seed": r[3], "detail_ratio": round(r[4], 3),
                           "gain_db": round(r[5], 4)} for r in sorted(losers, key=lambda r: r[5])]}
    write_json(args.out, {"benchmark": "lway_rt: fine detail added by adaptation vs crops made worse "
                                       "(benchmarks/detail_flag.py)",
                          "command": command_line("detail_flag.py", argv), **summary})
    for b in bands:
        hi = f"{b['ratio_below']:.2f}" if b["ratio_below"] else "..."
        print(f"detail ratio {b['ratio_from']:.2f}-{hi}: {b['crops']:4d} crops, mean gain {b['mean_gain_db']:+.3f} dB, "
              f"{b['lost_over_0.1dB']} lost > 0.1 dB")
    print(f"flag (ratio >= {args.threshold:g}): {summary['flagged']} of {summary['crops']} crops, "
          f"{summary['losers_flagged']} of the {summary['lost_over_0.1dB']} that lost > 0.1 dB; loss rate "
          f"{summary['loss_rate_flagged']:.1%} flagged vs {summary['loss_rate_unflagged']:.1%} not")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
