"""Train (or evaluate) Mask R-CNN on a ViT for detection and instance segmentation (COCO, LVIS, custom).

    python tools/train_det.py --config mask_rcnn_splitmask_vits_3x.py \\
        --weights runs/pretrain_coco/encoder.safetensors --data-root /data/coco
    python tools/train_det.py --config demo_mask_rcnn_vit_tiny.py          # built-in demo data, minutes on a CPU
    python tools/train_det.py --config mask_rcnn_splitmask_vits_3x.py --eval-only --weights runs/det/best.pth
    torchrun --nproc_per_node 8 tools/train_det.py --config mask_rcnn_splitmask_vitb_3x.py ...

`--config` is looked up as given, then under det_configs/. `--set key=value` overrides any config
field (e.g. `--set optim.lr=2e-4 solver.epochs=12 data.kind=lvis`). AP is reported in percent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from engine.config import ConfigError, apply_overrides, load_config
from engine.distributed import cleanup_distributed, is_main_process
from transfer.detection.config import DetConfig
from transfer.detection.loop import evaluate, train

CONFIG_DIRS = [Path("det_configs"), Path(__file__).resolve().parents[1] / "det_configs"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config file (a path or a name under det_configs/)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config fields, e.g. optim.lr=2e-4 data.root=/data/coco")
    p.add_argument("--weights", help="encoder checkpoint to start from (model.weights); with --eval-only, the "
                                     "Mask R-CNN checkpoint to evaluate (eval.checkpoint)")
    p.add_argument("--data-root", help="dataset root (data.root), e.g. the COCO folder with train2017/ val2017/ annotations/")
    p.add_argument("--output-dir", help="run directory (run.output_dir)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue a run: 'auto' (default when given without a value) = newest checkpoint in the "
                        "output dir, or a checkpoint path")
    p.add_argument("--eval-only", action="store_true", help="only evaluate --weights / eval.checkpoint")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow legacy pickled checkpoints (can run arbitrary code: trusted files only)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="run.device")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> DetConfig:
    cfg = load_config(args.config, search_dirs=CONFIG_DIRS)
    if not isinstance(cfg, DetConfig):
        raise ConfigError(f"{args.config} builds a {type(cfg).__name__}, not a DetConfig; use a file from det_configs/")
    cfg = apply_overrides(cfg, args.overrides)
    flags = []
    if args.weights:
        flags.append(f"{'eval.checkpoint' if args.eval_only else 'model.weights'}={args.weights}")
    if args.data_root:
        flags.append(f"data.root={args.data_root}")
    if args.output_dir:
        flags.append(f"run.output_dir={args.output_dir}")
    if args.resume:
        flags.append(f"run.resume={args.resume}")
    if args.device:
        flags.append(f"run.device={args.device}")
    cfg = apply_overrides(cfg, flags)
    if args.allow_pickle:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, allow_pickle=True))
    return cfg


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        cfg = build_config(args)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    main_process = True
    try:
        result = evaluate(cfg) if args.eval_only else train(cfg)
        main_process = is_main_process()
    finally:
        cleanup_distributed()
    if main_process:
        keys = [k for k in result if k.startswith(("bbox_AP", "segm_AP")) and k.count("_") == 1]
        summary = {k: (None if result[k] != result[k] else round(result[k], 2)) for k in keys}
        print(json.dumps({**summary, "output_dir": cfg.run.output_dir}, indent=2))
    return result


if __name__ == "__main__":
    main()
