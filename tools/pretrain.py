"""Shim for `target-ssl-pretrain` run from a checkout: `python tools/pretrain.py --help` (see pretrain.cli and target_ssl.pretrain)."""

from __future__ import annotations

import sys
from pathlib import Path

# Any script in tools/ runs with this folder as sys.path[0], where this file would shadow the
# `pretrain` package. Put this checkout's root there instead, so the tool runs the code it ships
# with (not another checkout that an editable install points to); and if another tool's
# `import pretrain...` landed here, hand the importer the real package (the import system returns
# sys.modules[name]).
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(_REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (_REPO, _REPO / "tools")]
if __name__ == "pretrain":
    import importlib

    del sys.modules["pretrain"]
    sys.modules["pretrain"] = importlib.import_module("pretrain")

from pretrain.cli import build_parser, config_from_args  # noqa: E402, F401
from target_ssl.pretrain import main  # noqa: E402

if __name__ == "__main__":
    main()
