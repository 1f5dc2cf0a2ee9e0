"""Self-supervised pretraining of a ViT on a target dataset's own images.

    python tools/pretrain.py --data coco --data-root $COCO --method splitmask --arch vit_small
    python tools/pretrain.py --data ade20k --data-root $ADE --method splitmask --arch vit_base
    python tools/pretrain.py --data demo --method splitmask --arch vit_tiny --epochs 2
    python tools/pretrain.py --data folder --data-root $IMNET/train --data-fraction 0.01 --method dino
    torchrun --nproc_per_node 8 tools/pretrain.py --data coco --data-root $COCO --method beit --arch vit_base

Flags set the common fields; `--set section.field=value` overrides any field of
`pretrain.config.PretrainConfig` (sections: data, mask, tokenizer, model, schedule, optim, run).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

# Any script in tools/ runs with this folder as sys.path[0], where this file would shadow the
# `pretrain` package. Put this checkout's root there instead, so the tool runs the code it ships
# with (not another checkout that an editable install points to); and if another tool's
# `import pretrain...` landed here, hand the importer the real package (the import system returns
# sys.modules[name]).
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(_REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (_REPO, _REPO / "tools")]
if __name__ == "pretrain":
    import importlib

    del sys.modules["pretrain"]
    sys.modules["pretrain"] = importlib.import_module("pretrain")

from engine.checkpoint import LegacyPickleError  # noqa: E402
from engine.config import ConfigError, apply_overrides  # noqa: E402
from engine.distributed import is_main_process  # noqa: E402
from engine.guards import NonFiniteLossError  # noqa: E402
from engine.trainer import RunInterrupted  # noqa: E402
from pretrain.config import PretrainConfig, default_config  # noqa: E402
from pretrain.data import DATASETS, BrokenImagesError, DatasetLayoutError  # noqa: E402
from pretrain.loop import train  # noqa: E402
from pretrain.methods import METHODS  # noqa: E402
from pretrain.tokenizers import TOKENIZERS  # noqa: E402
from ssl_backbones.checkpoint import ArchitectureMismatchError, CheckpointFormatError  # noqa: E402


def _epochs(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"--epochs must be a positive integer or 'auto', got {text!r}"
        ) from e
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--epochs must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=DATASETS, default="demo", help="unlabeled image source")
    p.add_argument("--data-root", default=None, help="dataset root (default: $TARGET_SSL_<DATA>_ROOT)")
    p.add_argument("--data-fraction", type=float, default=None,
                   help="train on a seeded random fraction of the images (e.g. 0.01 for 1%%)")
    p.add_argument("--data-seed", type=int, default=None, help="seed of --data-fraction's draw (default 0)")
    p.add_argument("--data-list", default=None,
                   help="train on the images this text file lists (paths or unique file names, one a line)")
    p.add_argument("--method", choices=METHODS, default="splitmask")
    p.add_argument(
        "--arch", default="vit_small", help="vit_tiny | vit_small | vit_base | vit_large | vit_huge"
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
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--precision", default=None, choices=("auto", "bf16", "fp16", "fp32"))
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--output-dir", default=None, help="run directory (default runs/pretrain_<method>_<arch>_<data>)"
    )
    p.add_argument("--resume", default=None, help="'auto' (newest checkpoint in the run directory) or a path")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run in the output dir and start over (says what it deletes)")
    p.add_argument("--ckpt-every", type=int, default=None, help="checkpoint every N updates")
    p.add_argument("--init", default=None, help="start the encoder from this checkpoint")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--allow-pickle", action="store_true", help="allow legacy pickled checkpoints (trusted files only)"
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. optim.weight_decay=0.05",
    )
    return p


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    cfg = default_config(args.method, args.data)
    r = dataclasses.replace
    cfg = r(
        cfg,
        data=r(
            cfg.data,
            root=args.data_root if args.data_root is not None else cfg.data.root,
            img_size=args.img_size or cfg.data.img_size,
            num_workers=args.num_workers if args.num_workers is not None else cfg.data.num_workers,
            fraction=args.data_fraction if args.data_fraction is not None else cfg.data.fraction,
            subset_seed=args.data_seed if args.data_seed is not None else cfg.data.subset_seed,
            file_list=args.data_list if args.data_list is not None else cfg.data.file_list,
        ),
        model=r(cfg.model, arch=args.arch, init=args.init),
        tokenizer=r(cfg.tokenizer, kind=args.tokenizer or cfg.tokenizer.kind),
        schedule=r(
            cfg.schedule,
            epochs=args.epochs,
            batch_size=args.batch_size or cfg.schedule.batch_size,
            accum_iter=args.accum_iter or cfg.schedule.accum_iter,
            blr=args.blr if args.blr is not None else cfg.schedule.blr,
        ),
        run=r(
            cfg.run,
            output_dir=args.output_dir or f"runs/pretrain_{args.method}_{args.arch}_{args.data}",
            precision=args.precision or cfg.run.precision,
            device=args.device or cfg.run.device,
            resume=args.resume,
            overwrite=args.overwrite,
            ckpt_every_steps=args.ckpt_every or cfg.run.ckpt_every_steps,
            seed=args.seed if args.seed is not None else cfg.run.seed,
            allow_pickle=args.allow_pickle,
        ),
    )
    cfg = apply_overrides(cfg, args.set)
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


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    try:
        result = train(cfg)
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


if __name__ == "__main__":
    main()
