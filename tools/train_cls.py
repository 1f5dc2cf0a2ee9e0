"""Shim for `target-ssl-train-cls` run from a checkout: `python tools/train_cls.py --help` (see transfer.classification.cli)."""

from __future__ import annotations

import sys
from pathlib import Path

# Run the code of this checkout, not another one that an editable install points to.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(_REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (_REPO, _REPO / "tools")]

from transfer.classification.cli import CLI, build_config, main, parse_args, summarize  # noqa: E402, F401

if __name__ == "__main__":
    main()
