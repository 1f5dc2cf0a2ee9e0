"""Probe a pretrained encoder's frozen features against a random-init encoder of the same shape.

    target-ssl-probe --weights runs/pretrain_ade/encoder.safetensors --data demo_ade
    target-ssl-probe --weights runs/pretrain/encoder.safetensors --data ade20k --data-root $ADE
    target-ssl-probe --weights checkpoint.pth --arch vit_base --data folder --data-root my_classes/

At each tap (default: the blocks the dense adapter reads, 3 5 7 11 for 12 blocks): a linear probe
on the frozen features (per patch for ADE-layout label maps and COCO instance masks, mIoU; per
image plus k-NN for class folders `train/<class>/*`, accuracy), fitted on the train split and
scored on the val split (class folders without val/: every 4th image of a class held out), and the
effective rank of the patch features. Prints a table, writes probe.json and one picture per tap
(probe_block<t>.png) into --output-dir. Seconds on a CPU for a ViT-tiny on the demo data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from engine.config import ConfigError
from ssl_backbones import create_vit, load_encoder_weights, load_exported_encoder
from transfer.cli import COMMON_INPUT_ERRORS
from transfer.detection.datasets import AnnotationFormatError
from transfer.probe_data import build_probe_set
from transfer.probe_figure import SCORE_KEYS, save_tap_figure
from transfer.probing import probe_with_baseline
from transfer.segmentation.data import AnnotationError, UnreadableFileError

DATA_KINDS = ("ade20k", "coco", "folder", "demo_ade", "demo_coco")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True,
                   help="encoder to probe: an export (encoder.safetensors + encoder.json) or any checkpoint "
                        "load_encoder_weights reads (then give --arch)")
    p.add_argument("--data", required=True, choices=DATA_KINDS, help="label source (demo_*: the built-in demo data)")
    p.add_argument("--data-root", help="dataset folder (ADE20k layout, COCO layout, or class folders)")
    p.add_argument("--taps", type=int, nargs="+", help="block indices to probe (default: the adapter's taps)")
    p.add_argument("--arch", default="vit_tiny", help="architecture of a checkpoint that is not an export")
    p.add_argument("--img-size", type=int, default=128, help="images are resized to this square size")
    p.add_argument("--max-train", type=int, default=256, help="images that fit the probe (first N of train)")
    p.add_argument("--max-val", type=int, default=128, help="images that score it (first N of val)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init encoder")
    p.add_argument("--output-dir", default="runs/probe", help="where probe.json and the pictures go")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow legacy pickled checkpoints (can run arbitrary code: trusted files only)")
    return p


def load_encoder(args: argparse.Namespace):
    """The encoder of --weights, built from its export json or from --arch."""
    path = Path(args.weights)
    export_json = path.with_suffix("").with_name(path.with_suffix("").name + ".json")
    if path.suffix in ("", ".safetensors") and export_json.is_file():
        return load_exported_encoder(path)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path} does not exist")
    encoder = create_vit(args.arch, img_size=args.img_size)
    load_encoder_weights(encoder, path, allow_pickle=args.allow_pickle)
    return encoder


def _cell(results: dict, key: str, digits: int) -> str:
    return " / ".join(f"{results[w].metrics[key]:.{digits}f}" for w in ("pretrained", "random_init"))


def table(per_tap: dict[int, dict]) -> str:
    """Markdown table: one row per tap, each cell 'encoder / random init'."""
    first = next(iter(per_tap.values()))["pretrained"].metrics
    scores = [k for k in SCORE_KEYS if k in first]
    head = ["tap"] + scores + ["erank raw", "erank std"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tap, res in per_tap.items():
        cells = [f"block {tap}"] + [_cell(res, k, 2) for k in scores] + [_cell(res, "erank_raw", 1),
                                                                         _cell(res, "erank_std", 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\neach cell: encoder under test / random init of the same shape\n"


def run(args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    encoder = load_encoder(args).to(device)
    if args.img_size % encoder.patch_size:
        raise ConfigError(f"--img-size {args.img_size} is not a multiple of the patch size {encoder.patch_size}")
    probe_set = build_probe_set(args.data, args.data_root, args.img_size, args.max_train, args.max_val)
    ours, random = probe_with_baseline(encoder, probe_set, args.taps, device, args.seed)
    per_tap = {t: {"pretrained": ours[t], "random_init": random[t]} for t in ours}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{args.weights} on {args.data} ({int(probe_set.is_train.sum())} fit / {int((~probe_set.is_train).sum())} held-out images)"
    pictures = [str(save_tap_figure(t, res, out / f"probe_block{t}.png", title)) for t, res in per_tap.items()]
    record = {"weights": str(args.weights), "data": args.data, "data_root": args.data_root,
              "img_size": args.img_size, "seed": args.seed, "classes": probe_set.class_names,
              "fit_images": int(probe_set.is_train.sum()), "heldout_images": int((~probe_set.is_train).sum()),
              "taps": {str(t): {w: r.metrics for w, r in res.items()} for t, res in per_tap.items()},
              "pictures": pictures}
    (out / "probe.json").write_text(json.dumps(record, indent=2))
    print(table(per_tap))
    print(f"wrote {out / 'probe.json'} and {len(pictures)} pictures")
    return record


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except COMMON_INPUT_ERRORS + (AnnotationError, AnnotationFormatError, UnreadableFileError) as e:
        sys.exit(f"error: {e}")



def entry() -> None:
    """The console script (exit status from :func:`main`)."""
    result = main()
    if isinstance(result, int):
        raise SystemExit(result)

if __name__ == "__main__":
    main()
