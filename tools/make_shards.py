"""Shim for `target-ssl-make-shards` run from a checkout: `python tools/make_shards.py --help` (see pretrain.make_shards)."""

from __future__ import annotations

import sys
from pathlib import Path

# Run the code of this checkout, not another one that an editable install points to.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(_REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (_REPO, _REPO / "tools")]

from pretrain.make_shards import entry  # noqa: E402

if __name__ == "__main__":
    entry()
