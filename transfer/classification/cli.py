"""Fine-tune, linear-probe or k-NN-evaluate a ViT for image classification (ImageFolder data).

    target-ssl-train-cls --config finetune_cars_vits.py \\
        --weights runs/pretrain_cars/encoder.safetensors --data-root $DATA/stanford_cars
    target-ssl-train-cls --config demo_cls_vit_tiny.py                 # built-in demo data, a minute on a CPU
    target-ssl-train-cls --config demo_cls_vit_tiny.py --mode linear --weights ENCODER
    target-ssl-train-cls --config demo_cls_vit_tiny.py --mode knn --weights ENCODER --set probe.all_blocks=true
    target-ssl-train-cls --config finetune_cars_vits.py --eval-only --weights runs/cls/best.pth
    torchrun --nproc_per_node 8 tools/train_cls.py --config finetune_inat19_vitb.py ...

`--mode finetune` (default: the config's `mode`) trains encoder + head (Table 9's recipe) and
exports the fine-tuned encoder as encoder.safetensors / encoder.json for train_det / train_seg;
`--mode linear` (MAE's linear probe) and `--mode knn` (DINO's k-NN, k=20, T=0.07) keep the encoder
`--weights` frozen; `--set probe.all_blocks=true` probes every block and draws accuracy by block.
From a checkout, `python tools/train_cls.py` takes the same flags. `--config` is looked up as given,
then under ./cls_configs/, then in the installed `cls_configs` package. `--set key=value` overrides any field.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cls_configs
from engine.config import apply_overrides
from transfer.cli import TransferCLI

from .config import ClsConfig
from .frozen import run_probe
from .loop import evaluate
from .loop import train as finetune

MODES = ("finetune", "linear", "knn")


def train(cfg: ClsConfig) -> dict:
    """Fine-tuning or a frozen-encoder probe, by `cfg.mode`."""
    return finetune(cfg) if cfg.mode == "finetune" else run_probe(cfg)


def summarize(result: dict) -> dict:
    keys = ("mode", "top1", "top5", "mean_class_acc", "top1_by_block", "encoder")
    return {k: result[k] for k in keys if k in result}


class ClsCLI(TransferCLI):
    """The shared transfer command line plus `--mode`."""

    def parse_args(self, argv: list[str] | None = None) -> argparse.Namespace:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--mode", choices=MODES)
        known, rest = pre.parse_known_args(argv)
        args = super().parse_args(rest)
        args.mode = known.mode
        return args

    def build_config(self, args: argparse.Namespace) -> ClsConfig:
        cfg = super().build_config(args)
        return apply_overrides(cfg, [f"mode={args.mode}"]) if args.mode else cfg


CLI = ClsCLI(
    description=__doc__,
    config_type=ClsConfig,
    config_dirs=[Path("cls_configs"), Path(cls_configs.__file__).parent],
    model_name="classifier",
    data_root_help="dataset folder holding train/<class>/ and val/<class>/ (data.root)",
    set_example="optim.lr=4e-3 solver.epochs=100 probe.all_blocks=true",
    train=train,
    evaluate=evaluate,
    summarize=summarize,
)
parse_args, build_config, main, entry = CLI.parse_args, CLI.build_config, CLI.main, CLI.entry



if __name__ == "__main__":
    main()
