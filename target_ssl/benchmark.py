"""Throughput and memory of training steps with synthetic data.

    target-ssl-benchmark pretrain --methods splitmask beit mae --archs vit_small vit_base
    target-ssl-benchmark det --archs vit_small vit_base --size 1024
    target-ssl-benchmark seg --archs vit_base --size 512
    target-ssl-benchmark data [--end-to-end]     # loader images/s per process vs the reference pipeline
    target-ssl-benchmark eval --images 5000 --per-image 100
    target-ssl-benchmark all --device cuda          # the GPU check (< 5 min); --device cpu --quick on CPU

Each prints a markdown table and writes JSON (`--out`). From a checkout: `python tools/benchmark.py ...`.
"""

from __future__ import annotations

import argparse

from pretrain import benchmark as pretrain_benchmark
from target_ssl import gpu_check
from transfer.detection import benchmark as det_benchmark
from transfer.detection import eval_benchmark
from transfer.segmentation import benchmark as seg_benchmark

from . import data_benchmark

SUITES = {"pretrain": pretrain_benchmark, "det": det_benchmark, "seg": seg_benchmark, "data": data_benchmark}
SUITES["eval"] = eval_benchmark
SUITES["all"] = gpu_check  # every suite above + a short real run, one JSON (last: it calls the others)


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


def entry() -> None:
    """The console script (exit status 0; see :func:`pretrain.cli.entry`)."""
    main()


if __name__ == "__main__":
    main()
