"""Write a pretraining source's images into WebDataset tar shards (`--data wds` reads them).

    python -m pretrain.make_shards --data folder --data-root IMAGES --out shards/ --per-shard 10000
    target-ssl-make-shards --data coco --data-root $COCO --out coco_shards/

Each sample is `<key>.<ext>` (the file's bytes as they are, not re-encoded; ext lower-cased) plus
`<key>.path.txt` (its path relative to the root), keys numbered in the source's sorted order, and
`--per-shard` samples per shard (`%06d.tar`). Needs `webdataset` (pip install 'target-ssl[wds]').
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.config import ConfigError

from .data import DATASETS, list_images, resolve_root

__all__ = ["write_shards", "main"]


def write_shards(files: list[Path], root: Path, out: str | os.PathLike, per_shard: int = 10000) -> list[Path]:
    """Write `files` (read as bytes, relative names kept) into `out/000000.tar, ...`; returns the shards."""
    try:
        import webdataset as wds
    except ImportError as e:
        raise ConfigError("writing shards needs webdataset: pip install 'target-ssl[wds]'") from e
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*.tar")):
        raise ConfigError(f"{out} already holds .tar shards; choose an empty folder")
    with wds.ShardWriter(str(out / "%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i, f in enumerate(files):
            ext = f.suffix.lower().lstrip(".")
            rel = f.relative_to(root) if f.is_relative_to(root) else f
            sink.write({"__key__": f"{i:09d}", ext: f.read_bytes(), "path.txt": str(rel)})
    return sorted(out.glob("*.tar"))


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=[d for d in DATASETS if d != "wds"], default="folder")
    p.add_argument("--data-root", default=None, help="the source's root (default: $TARGET_SSL_<DATA>_ROOT)")
    p.add_argument("--out", required=True, help="folder for the shards (empty or new)")
    p.add_argument("--per-shard", type=int, default=10000, help="samples per shard")
    args = p.parse_args(argv)
    files = list_images(args.data, args.data_root)
    shards = write_shards(files, resolve_root(args.data, args.data_root), args.out, args.per_shard)
    print(f"wrote {len(files)} images into {len(shards)} shards in {args.out}: --data wds --data-root {args.out}")
    return shards


def entry() -> None:
    """The console script: input errors end with their message, not a traceback."""
    try:
        main()
    except (ConfigError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    entry()
