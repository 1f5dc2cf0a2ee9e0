"""Throughput and memory of training steps with synthetic data.

    python tools/benchmark.py pretrain --methods splitmask beit mae --archs vit_small vit_base
    python tools/benchmark.py det --archs vit_small vit_base --size 1024
    python tools/benchmark.py seg --archs vit_base --size 512

Each prints a markdown table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a script, tools/ is sys.path[0], where tools/pretrain.py would shadow the `pretrain`
# package: put this checkout's root there instead, so the tool runs the code it ships with (not
# another checkout that an editable install points to).
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(_REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (_REPO, _REPO / "tools")]

from pretrain import benchmark as pretrain_benchmark  # noqa: E402
from transfer.detection import benchmark as det_benchmark  # noqa: E402
from transfer.segmentation import benchmark as seg_benchmark  # noqa: E402

SUITES = {"pretrain": pretrain_benchmark, "det": det_benchmark, "seg": seg_benchmark}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="suite", required=True)
    for name, module in SUITES.items():
        p = sub.add_parser(name, help=module.__doc__.strip().splitlines()[0])
        p.add_argument("--device", default="auto", help="auto | cpu | cuda")
        p.add_argument("--precision", default="auto", help="auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32")
        p.add_argument("--warmup", type=int, default=2)
        p.add_argument("--iters", type=int, default=5)
        p.add_argument("--out", default=f"benchmarks/{name}.json")
        module.add_arguments(p)
    args = parser.parse_args(argv)
    SUITES[args.suite].run(args)


if __name__ == "__main__":
    main()
