"""`target-ssl-pretrain`: `pretrain.cli` with the health probe wired in (`--probe-every N`).

    target-ssl-pretrain --config demo_splitmask_vit_tiny.py --probe-every 5
    torchrun --nproc_per_node 8 -m target_ssl.pretrain --config splitmask_coco_vitb.py --data-root $COCO

Every flag is `pretrain.cli`'s; see `target-ssl-pretrain --help`.
"""

from __future__ import annotations

from pretrain import cli
from target_ssl.probe_monitor import build_monitor


def main(argv: list[str] | None = None) -> dict:
    return cli.main(argv, monitor_factory=build_monitor)


def entry() -> None:
    """The console script (exit status 0; see :func:`pretrain.cli.entry`)."""
    main()


if __name__ == "__main__":
    main()
