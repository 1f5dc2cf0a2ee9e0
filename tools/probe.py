"""Shim for `target-ssl-probe` run from a checkout: `python tools/probe.py --help` (see target_ssl.probe)."""

from __future__ import annotations

import sys
from pathlib import Path

# Run the code of this checkout, not another one that an editable install points to.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(_REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (_REPO, _REPO / "tools")]

from target_ssl.probe import build_parser, main  # noqa: E402, F401

if __name__ == "__main__":
    main()
