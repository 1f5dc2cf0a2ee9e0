"""Train (or evaluate) UperNet on a ViT for semantic segmentation (ADE20k or any dataset in its layout).

    python tools/train_seg.py --config upernet_splitmask_vitb_ade20k.py \\
        --weights runs/pretrain_ade/encoder.safetensors --data-root $ADE/ADEChallengeData2016
    python tools/train_seg.py --config demo_upernet_vit_tiny.py           # built-in demo data, minutes on a CPU
    python tools/train_seg.py --config upernet_splitmask_vitb_ade20k.py --eval-only --weights runs/seg/best.pth
    torchrun --nproc_per_node 8 tools/train_seg.py --config upernet_splitmask_vitb_ade20k.py ...

`--config` is looked up as given, then under seg_configs/. `--set key=value` overrides any config
field (e.g. `--set optim.lr=5e-4 solver.iterations=80000 eval.mode=whole`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from engine.checkpoint import LegacyPickleError
from engine.config import ConfigError, apply_overrides, load_config
from engine.distributed import cleanup_distributed, is_main_process
from engine.guards import NonFiniteLossError
from ssl_backbones.checkpoint import ArchitectureMismatchError, CheckpointFormatError
from transfer.segmentation.config import SegConfig
from transfer.segmentation.data import AnnotationError, BrokenFilesError
from transfer.segmentation.loop import evaluate_only, train

# Problems with the user's input: they end with the message (which names the file and the fix).
INPUT_ERRORS = (ConfigError, FileNotFoundError, AnnotationError, BrokenFilesError, NonFiniteLossError,
                CheckpointFormatError, ArchitectureMismatchError, LegacyPickleError)
CONFIG_DIRS = [Path("seg_configs"), Path(__file__).resolve().parents[1] / "seg_configs"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config file (a path or a name under seg_configs/)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config fields, e.g. optim.lr=5e-4 data.root=/data/ADEChallengeData2016")
    p.add_argument("--weights", help="encoder checkpoint to start from (model.weights); with --eval-only, the "
                                     "UperNet checkpoint to evaluate (eval.checkpoint)")
    p.add_argument("--data-root", help="dataset folder holding images/ and annotations/ (data.root)")
    p.add_argument("--output-dir", help="run directory (run.output_dir)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue a run: 'auto' (default when given without a value) = newest checkpoint in the "
                        "output dir, or a checkpoint path")
    p.add_argument("--eval-only", action="store_true", help="only evaluate --weights / eval.checkpoint")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow legacy pickled checkpoints (can run arbitrary code: trusted files only)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="run.device")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> SegConfig:
    cfg = load_config(args.config, search_dirs=CONFIG_DIRS)
    if not isinstance(cfg, SegConfig):
        raise ConfigError(f"{args.config} builds a {type(cfg).__name__}, not a SegConfig; use a file from seg_configs/")
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
        result = evaluate_only(cfg) if args.eval_only else train(cfg)
        main_process = is_main_process()
    except INPUT_ERRORS as e:
        sys.exit(f"error: {e}")
    finally:
        cleanup_distributed()
    if main_process:
        summary = {k: result[k] for k in ("mIoU", "mAcc", "aAcc") if k in result}
        print(json.dumps({**summary, "output_dir": cfg.run.output_dir}, indent=2))
    return result


if __name__ == "__main__":
    main()
