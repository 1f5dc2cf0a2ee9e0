"""Shim for `target-ssl-submit` run from a checkout: `python tools/submit.py --help` (see target_ssl.submit)."""

from __future__ import annotations

import sys
from pathlib import Path

# As tools/benchmark.py: this checkout's root first, so `pretrain` is the package, not tools/pretrain.py.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(_REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (_REPO, _REPO / "tools")]

from target_ssl.submit import main  # noqa: E402

if __name__ == "__main__":
    main()
