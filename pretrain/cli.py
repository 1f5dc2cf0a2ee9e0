"""Self-supervised pretraining of a ViT on a target dataset's own images (the `target-ssl-pretrain` command).

    target-ssl-pretrain --config splitmask_coco_vitb.py --data-root $COCO
    target-ssl-pretrain --config splitmask_ade20k_vitb.py --data-root $ADE --arch vit_small
    target-ssl-pretrain --config demo_splitmask_vit_tiny.py --epochs 2
    target-ssl-pretrain --data coco --data-root $COCO --method splitmask --arch vit_small   # no file
    target-ssl-pretrain --data folder --data-root $IMNET/train --data-fraction 0.01 --method dino
    target-ssl-pretrain --config demo_splitmask_vit_tiny.py --probe-every 5        # with the health probe
    torchrun --nproc_per_node 8 -m target_ssl.pretrain --config beit_coco_vitb.py --data-root $COCO

From a checkout, `python tools/pretrain.py` takes the same flags. `--config` names a file of
`pretrain_configs/` (the paper's recipe per method and target; looked up as given, then under
./pretrain_configs/, then in the installed package); without it the recipe is
`pretrain.config.default_config(--method, --data)`. The other flags are shortcuts that override the
file's fields when given, and `--set section.field=value` overrides any field of
`pretrain.config.PretrainConfig` (sections: data, mask, tokenizer, model, dino, probe, schedule, optim, run).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import pretrain_configs
from engine.checkpoint import LegacyPickleError
from engine.config import ConfigError, apply_overrides, load_config
from engine.distributed import is_main_process
from engine.guards import NonFiniteLossError
from engine.trainer import RunInterrupted
from ssl_backbones import ArchitectureMismatchError, CheckpointFormatError

from .config import PretrainConfig, default_config
from .data import DATASETS, BrokenImagesError, DatasetLayoutError
from .loop import EncoderMonitor, train
from .methods import METHODS
from .tokenizers import TOKENIZERS

__all__ = ["build_parser", "config_from_args", "main"]

CONFIG_DIRS = (Path("pretrain_configs"), Path(pretrain_configs.__file__).parent)
AUTO = "auto"  # --epochs auto: the paper's constant-updates rule (schedule.epochs = None)


def _epochs(text: str) -> int | str:
    if text == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"--epochs must be a positive integer or 'auto', got {text!r}"
        ) from e
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--epochs must be positive, got {value}")
    return value


MonitorFactory = Callable[[PretrainConfig], EncoderMonitor | None]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="a pretrain_configs/ file, e.g. splitmask_coco_vitb.py")
    p.add_argument("--data", choices=DATASETS, default=None, help="unlabeled image source (no --config: demo)")
    p.add_argument("--data-root", default=None, help="dataset root (default: $TARGET_SSL_<DATA>_ROOT)")
    p.add_argument("--method", choices=METHODS, default=None, help="(no --config: splitmask)")
    p.add_argument(
        "--arch", default=None, help="vit_tiny | vit_small | vit_base | vit_large | vit_huge (no --config: vit_small)"
    )
    p.add_argument(
        "--tokenizer", choices=TOKENIZERS, default=None, help="visual words (default random_projection)"
    )
    p.add_argument(
        "--epochs", type=_epochs, default=None, help="an integer, or 'auto' (paper's constant-updates rule)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="images per process and micro-batch")
    p.add_argument("--accum-iter", type=int, default=None, help="micro-batches per update")
    p.add_argument("--blr", type=float, default=None, help="base lr; lr = blr * total batch / 256")
    p.add_argument("--data-fraction", type=float, default=None,
                   help="train on a seeded random fraction of the images (e.g. 0.01 for 1%%): data.fraction")
    p.add_argument("--data-seed", type=int, default=None, help="seed of --data-fraction's draw: data.subset_seed")
    p.add_argument("--data-list", default=None,
                   help="train on the images listed in this file (one path or file name a line): data.file_list")
    p.add_argument("--probe-every", type=int, default=None,
                   help="probe the encoder every N epochs and at the end on a small labelled split of the "
                        "target, against random init (probe.every_epochs; see pretrain.config.ProbeConfig)")
    p.add_argument("--probe-data", default=None,
                   help="labels for the probe: auto (the source's own) | ade20k | coco | folder | demo_ade | demo_coco")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--precision", default=None, choices=("auto", "bf16", "fp16", "fp32"))
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--output-dir", default=None,
        help="run directory (default: the file's, or runs/pretrain_<method>_<arch>_<data> without --config)",
    )
    p.add_argument("--resume", default=None, help="'auto' (newest checkpoint in the run directory) or a path")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="delete an earlier run in the output dir and start over (says what it deletes)")
    p.add_argument("--ckpt-every", type=int, default=None, help="checkpoint every N updates")
    p.add_argument("--init", default=None, help="start the encoder from this checkpoint")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--allow-pickle", action="store_true", default=None,
        help="allow legacy pickled checkpoints (trusted files only)",
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. optim.weight_decay=0.05",
    )
    return p


def _base_config(args: argparse.Namespace) -> PretrainConfig:
    """The config file, or (without --config) today's default recipe for --method / --data / --arch."""
    if args.config is not None:
        cfg = load_config(args.config, search_dirs=list(CONFIG_DIRS))
        if not isinstance(cfg, PretrainConfig):
            raise ConfigError(f"{args.config} builds a {type(cfg).__name__}, not a PretrainConfig")
        return cfg
    method, data, arch = args.method or "splitmask", args.data or "demo", args.arch or "vit_small"
    cfg = default_config(method, data)
    run = dataclasses.replace(cfg.run, output_dir=f"runs/pretrain_{method}_{arch}_{data}")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, arch=arch), run=run)


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """The shortcut flags that were given, as ``--set`` items (so they are typed and checked once)."""
    epochs = None if args.epochs is None else ("none" if args.epochs == AUTO else str(args.epochs))
    flags = {
        "data.name": args.data, "data.root": args.data_root, "data.img_size": args.img_size,
        "data.fraction": args.data_fraction, "data.subset_seed": args.data_seed, "data.file_list": args.data_list,
        "data.num_workers": args.num_workers, "model.method": args.method, "model.arch": args.arch,
        "model.init": args.init, "tokenizer.kind": args.tokenizer, "schedule.epochs": epochs,
        "schedule.batch_size": args.batch_size, "schedule.accum_iter": args.accum_iter,
        "schedule.blr": args.blr, "run.output_dir": args.output_dir, "run.precision": args.precision,
        "run.device": args.device, "run.resume": args.resume, "run.ckpt_every_steps": args.ckpt_every,
        "run.seed": args.seed, "run.allow_pickle": args.allow_pickle, "run.overwrite": args.overwrite,
        "probe.every_epochs": args.probe_every, "probe.data": args.probe_data,
    }  # fmt: skip
    return [f"{key}={value}" for key, value in flags.items() if value is not None]


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """--config (or the default recipe), then the shortcut flags that were given, then --set."""
    cfg = apply_overrides(_base_config(args), _flag_overrides(args) + list(args.set))
    return _explicit_wins(cfg, args)


def _explicit_wins(cfg: PretrainConfig, args: argparse.Namespace) -> PretrainConfig:
    """An explicit `--set optim.lr` / `optim.warmup_steps` wins over the derived value (the blr
    scaling rule, the warmup-epochs rule); the resolved values are logged when the run starts."""
    given = {item.split("=", 1)[0].strip() for item in args.set}
    r = dataclasses.replace
    if "optim.lr" in given and args.blr is None and "schedule.blr" not in given:
        cfg = r(cfg, schedule=r(cfg.schedule, blr=None))
    if "optim.warmup_steps" in given and "schedule.warmup_epochs" not in given:
        # warmup_steps > 0 is used as given; an explicit 0 means no warmup.
        cfg = r(cfg, schedule=r(cfg.schedule, warmup_epochs=None if cfg.optim.warmup_steps else 0.0))
    return cfg


def main(argv: list[str] | None = None, monitor_factory: MonitorFactory | None = None) -> dict:
    """Parse, pretrain, print where the encoder went. `monitor_factory(cfg)` builds the encoder
    monitor that `--probe-every` runs (`target_ssl.pretrain` passes the probe; None: no probe)."""
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        monitor = monitor_factory(cfg) if monitor_factory is not None and cfg.probe.every_epochs else None
    except ConfigError as e:
        sys.exit(f"error: {e}")
    try:
        result = train(cfg, monitor)
    except (ConfigError, DatasetLayoutError, BrokenImagesError, NonFiniteLossError, CheckpointFormatError,
            ArchitectureMismatchError, LegacyPickleError) as e:  # fmt: skip
        # Problems with the inputs: the message says what and how to fix it; no traceback needed.
        sys.exit(f"error: {e}")
    except RunInterrupted as e:
        print(e, file=sys.stderr)
        raise  # exit code REQUEUE_EXIT_CODE: a scheduler may requeue the job
    if result["encoder"] is not None and is_main_process():
        print(f"encoder: {result['encoder']}\ncheckpoint: {result['checkpoint']}")
    return result


def entry() -> None:
    """The console script: :func:`main` on ``sys.argv``, exit status 0 (a returned dict would be
    printed and turned into status 1 by the script wrapper's ``sys.exit(main())``)."""
    main()


if __name__ == "__main__":
    main()
