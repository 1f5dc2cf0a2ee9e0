"""The command line that `tools/train_det.py` and `tools/train_seg.py` share.

Both tools take the same flags (`--config`, `--set`, `--weights`, `--data-root`, `--output-dir`,
`--resume`, `--eval-only`, `--allow-pickle`, `--device`), build a typed config the same way (file,
then `--set`, then the flags) and end an input problem with its message instead of a traceback.
A tool describes what differs in a `TransferCLI` and uses its `parse_args` / `build_config` / `main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.checkpoint import LegacyPickleError
from engine.config import ConfigError, apply_overrides, load_config
from engine.distributed import cleanup_distributed, is_main_process
from engine.guards import NonFiniteLossError
from ssl_backbones.checkpoint import ArchitectureMismatchError, CheckpointFormatError

# Input problems every transfer run can meet; their messages name the file and the fix.
COMMON_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, FileNotFoundError, NonFiniteLossError, CheckpointFormatError, ArchitectureMismatchError,
    LegacyPickleError,
)


@dataclass(frozen=True)
class TransferCLI:
    """What one transfer tool adds to the shared command line."""

    description: str  # the tool's module docstring
    config_type: type  # DetConfig / SegConfig: a config file must build one
    config_dirs: Sequence[Path]  # where a bare --config name is looked up
    model_name: str  # "Mask R-CNN" / "UperNet", for the help text
    data_root_help: str
    set_example: str
    train: Callable[[Any], dict]
    evaluate: Callable[[Any], dict]
    summarize: Callable[[dict], dict]  # the headline metrics printed at the end
    input_errors: tuple[type[BaseException], ...] = ()  # task-specific ones, beside COMMON_INPUT_ERRORS

    def parse_args(self, argv: list[str] | None = None) -> argparse.Namespace:
        p = argparse.ArgumentParser(description=self.description, formatter_class=argparse.RawDescriptionHelpFormatter)
        folder = Path(self.config_dirs[0]).name
        p.add_argument("--config", required=True, help=f"config file (a path or a name under {folder}/)")
        p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                       help=f"override config fields, e.g. {self.set_example}")
        p.add_argument("--weights", help="encoder checkpoint to start from (model.weights); with --eval-only, the "
                                         f"{self.model_name} checkpoint to evaluate (eval.checkpoint)")
        p.add_argument("--data-root", help=self.data_root_help)
        p.add_argument("--output-dir", help="run directory (run.output_dir)")
        p.add_argument("--resume", nargs="?", const="auto", default=None,
                       help="continue a run: 'auto' (default when given without a value) = newest checkpoint in "
                            "the output dir, or a checkpoint path")
        p.add_argument("--overwrite", action="store_true",
                       help="start over in an output dir that holds an earlier run (deletes its files; run.overwrite)")
        p.add_argument("--eval-only", action="store_true", help="only evaluate --weights / eval.checkpoint")
        p.add_argument("--allow-pickle", action="store_true",
                       help="allow legacy pickled checkpoints (can run arbitrary code: trusted files only)")
        p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="run.device")
        return p.parse_args(argv)

    def build_config(self, args: argparse.Namespace):
        """The config file, then the `--set` overrides, then the flags (which win)."""
        cfg = load_config(args.config, search_dirs=list(self.config_dirs))
        if not isinstance(cfg, self.config_type):
            name, folder = self.config_type.__name__, Path(self.config_dirs[0]).name
            raise ConfigError(f"{args.config} builds a {type(cfg).__name__}, not a {name}; use a file from {folder}/")
        cfg = apply_overrides(cfg, args.overrides)
        flags = []
        if args.weights:
            flags.append(f"{'eval.checkpoint' if args.eval_only else 'model.weights'}={args.weights}")
        for flag, key in (("data_root", "data.root"), ("output_dir", "run.output_dir"), ("resume", "run.resume"),
                          ("device", "run.device")):
            if getattr(args, flag):
                flags.append(f"{key}={getattr(args, flag)}")
        cfg = apply_overrides(cfg, flags)
        if args.allow_pickle:
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, allow_pickle=True))
        if args.overwrite:
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, overwrite=True))
        return cfg

    def main(self, argv: list[str] | None = None) -> dict:
        """Train (or only evaluate), print the headline metrics as JSON on the main process."""
        args = self.parse_args(argv)
        try:
            cfg = self.build_config(args)
        except ConfigError as e:
            sys.exit(f"error: {e}")
        main_process = True
        try:
            result = self.evaluate(cfg) if args.eval_only else self.train(cfg)
            main_process = is_main_process()
        except COMMON_INPUT_ERRORS + self.input_errors as e:
            sys.exit(f"error: {e}")
        finally:
            cleanup_distributed()
        if main_process:
            print(json.dumps({**self.summarize(result), "output_dir": cfg.run.output_dir}, indent=2))
        return result
