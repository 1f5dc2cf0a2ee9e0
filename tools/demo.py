"""Shim for `target-ssl-demo` run from a checkout: `python tools/demo.py --help` (see target_ssl.demo)."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, tools/ is sys.path[0], where tools/pretrain.py would shadow the `pretrain`
# package: put this checkout's root there instead, so the tool runs the code it ships with (not
# another checkout that an editable install points to).
REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (REPO, REPO / "tools")]

from target_ssl.demo import (  # noqa: E402, F401
    DEFAULT_TRACKS,
    FULL,
    PRETRAIN_DATA,
    RANDOM,
    TINY,
    build_parser,
    main,
    pretraining_config,
    run_pretraining,
    save_pictures,
    transfer_config,
)

if __name__ == "__main__":
    main()
