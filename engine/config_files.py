"""Loading Python config files: a file sets a module-level ``config`` (a dataclass instance).

Config folders are packages (``det_configs``, ``seg_configs``, ``pretrain_configs``); their files
compose by ordinary imports and are loaded by importing them under their dotted name, with no
``sys.path`` or ``sys.modules`` changes::

    # det_configs/mask_rcnn_splitmask_vits_6x.py
    import dataclasses
    from det_configs.mask_rcnn_splitmask_vits_3x import config as base
    config = dataclasses.replace(base, schedule=dataclasses.replace(base.schedule, epochs=72))

A loose file outside any package (your own config, or a run's saved ``config.py``) is executed by
path with its folder on ``sys.path`` while it runs, so it may import siblings by bare name; those
siblings are forgotten afterwards so that another folder's files of the same name load afresh.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.config_overrides import CONFIG_MODULES, validate_config
from engine.errors import ConfigError

__all__ = ["load_config"]


def _available_configs(search_dirs: Sequence[str | os.PathLike]) -> list[str]:
    names = []
    seen = set()
    for d in search_dirs:
        d = Path(d)
        if d.is_dir() and d.resolve() not in seen:  # a folder given twice is listed once
            seen.add(d.resolve())
            names += [f"{d}/{p.name}" for p in sorted(d.glob("*.py")) if not p.name.startswith("_")]
    return names


def _find_config(name_or_path: str | os.PathLike, search_dirs: Sequence[str | os.PathLike]) -> Path:
    raw = str(name_or_path)
    names = [raw] if raw.endswith(".py") else [raw, raw + ".py"]
    candidates = [Path(n) for n in names]
    for d in search_dirs:
        candidates += [Path(d) / n for n in names]
    # One entry per file: a search dir given twice (relative and absolute) is looked in once.
    unique: dict[str, Path] = {}
    for c in candidates:
        unique.setdefault(os.path.abspath(c), c)
    candidates = list(unique.values())
    for c in candidates:
        if c.is_file():
            return c
    available = _available_configs(search_dirs)
    listing = "\n  ".join(available) if available else "(none)"
    raise ConfigError(
        f"config {raw!r} not found; looked for: {', '.join(str(c) for c in candidates)}.\n"
        f"Available configs:\n  {listing}"
    )


def _package_module_name(path: Path) -> str | None:
    """``pkg.stem`` when ``path`` is a module of an importable top-level package (e.g. det_configs)."""
    folder = path.resolve().parent
    if not (folder / "__init__.py").is_file() or not folder.name.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(folder.name)
    except (ImportError, ValueError):
        return None
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations or folder not in {Path(p).resolve() for p in locations}:
        return None  # a package of that name is importable, but from another folder
    return f"{folder.name}.{path.stem}"


def _import_config(name: str, path: Path) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"error while executing config file {path}: {type(e).__name__}: {e}") from e


def _exec_config_file(path: Path) -> types.ModuleType:
    """Run a loose config file by path (its folder on sys.path meanwhile) and return its module."""
    path = path.resolve()
    folder = path.parent
    mod_name = "_target_ssl_config_" + "".join(ch if ch.isalnum() else "_" for ch in str(path))
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load config file {path}")
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    sys.modules[mod_name] = module  # dataclasses defined in the file look their module up here
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"error while executing config file {path}: {type(e).__name__}: {e}") from e
    finally:
        if str(folder) in sys.path:
            sys.path.remove(str(folder))
        # Forget the file and the sibling configs it imported, so the next load executes them
        # afresh (another config folder may have files with the same names).
        for name in set(sys.modules) - before:
            mod = sys.modules[name]
            file = getattr(mod, "__file__", None)
            if name == mod_name or (file is not None and Path(file).resolve().parent == folder):
                CONFIG_MODULES[name] = mod
                del sys.modules[name]
    return module


def load_config(name_or_path: str | os.PathLike, search_dirs: Sequence[str | os.PathLike] = ()) -> Any:
    """Execute a Python config file and return its module-level ``config`` dataclass.

    Args:
        name_or_path: a path, or a name looked up as given and then in each of ``search_dirs``
            (``.py`` appended when missing).
        search_dirs: folders to search, e.g. ``["det_configs"]``.

    A file of a config package is a module: like any import it runs once per process (values it
    reads from the environment are read then), and every load returns that module's ``config``;
    overrides never mutate it (:func:`engine.config_overrides.apply_overrides` copies).

    Raises:
        ConfigError: file not found (the message lists the available configs), the file fails to
            execute, defines no ``config``, or has invalid choices (see :func:`validate_config`).
    """
    path = _find_config(name_or_path, search_dirs)
    package_name = _package_module_name(path)
    module = _import_config(package_name, path) if package_name else _exec_config_file(path)
    if not hasattr(module, "config"):
        raise ConfigError(
            f"config file {path} defines no module-level `config`; add `config = <YourConfig>(...)`"
        )
    cfg = module.config
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise ConfigError(f"`config` in {path} must be a dataclass instance, got {type(cfg).__name__}")
    validate_config(cfg, source=str(path))
    return cfg


