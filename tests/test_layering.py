"""The package layout keeps its one-way dependencies: engine <- nothing of ours, no cv2/pycocotools."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUR_PACKAGES = {"engine", "ssl_backbones", "pretrain", "transfer", "demo_data", "tools", "target_ssl"}


def _modules(package: str) -> list[str]:
    root = REPO / package
    return sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for p in root.rglob("*.py")
        if p.name != "__main__.py"
    )


def test_importing_every_engine_module_loads_neither_cv2_nor_pycocotools():
    modules = _modules("engine")
    assert "engine.checkpoint" in modules and "engine.config" in modules  # the walk found them
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('cv2', 'pycocotools', 'demo_data'))\n"
        "print(repr(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _first_party_imports(package: str) -> set[str]:
    found = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found & OUR_PACKAGES


def test_engine_and_demo_data_import_nothing_of_ours_but_themselves():
    assert _first_party_imports("engine") == {"engine"}
    assert _first_party_imports("demo_data") == {"demo_data"}


def test_pretraining_and_transfer_do_not_import_each_other_nor_the_tools():
    for package, other in (("pretrain", "transfer"), ("transfer", "pretrain")):
        imported = _first_party_imports(package)
        assert other not in imported and not imported & {"tools", "target_ssl"}, package


def test_one_module_is_named_checkpoint_and_one_atomic_writer_exists():
    ours = [p for pkg in OUR_PACKAGES for p in (REPO / pkg).rglob("*.py")]
    assert [p.relative_to(REPO).as_posix() for p in ours if p.stem == "checkpoint"] == ["engine/checkpoint.py"]
    # os.replace (the atomic rename) appears only in the engine's checkpoint module.
    renamers = [p.relative_to(REPO).as_posix() for p in ours if "os.replace(" in p.read_text(encoding="utf-8")]
    assert renamers == ["engine/checkpoint.py"]
