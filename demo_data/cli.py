"""Command line: generate both demo sets (``python -m demo_data --root DIR``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from demo_data.cache import demo_root, ensure_demo_ade, ensure_demo_coco


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Generate the built-in demo datasets (COCO and ADE20k layouts)."
    )
    parser.add_argument("--root", type=Path, default=None, help=f"output folder (default: {demo_root()})")
    parser.add_argument("--num-train", type=int, default=96, help="training images per dataset")
    parser.add_argument("--num-val", type=int, default=24, help="validation images per dataset")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    coco = ensure_demo_coco(args.root, args.num_train, args.num_val, args.seed)
    ade = ensure_demo_ade(args.root, args.num_train, args.num_val, args.seed)
    print(f"demo COCO:  {coco}  (train2017/, val2017/, annotations/instances_{{train,val}}2017.json)")
    print(f"demo ADE20k: {ade}  (images/, annotations/, classes.txt)")
