"""Shim for `target-ssl-benchmark` run from a checkout: `python tools/benchmark.py --help` (see target_ssl.benchmark)."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, tools/ is sys.path[0], where tools/pretrain.py would shadow the `pretrain`
# package: put this checkout's root there instead, so the tool runs the code it ships with (not
# another checkout that an editable install points to).
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(_REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (_REPO, _REPO / "tools")]

from target_ssl.benchmark import SUITES, main  # noqa: E402, F401

if __name__ == "__main__":
    main()
