"""Writing a config: a json-able dict of the dataclass tree, and Python source that rebuilds it."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path, PurePath
from typing import Any

from engine.distributed import is_main_process

__all__ = ["config_to_dict", "format_config", "save_config"]


def config_to_dict(cfg: Any) -> Any:
    """Plain json-able dict of a dataclass tree (tuples -> lists, paths -> str)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, PurePath):
        return str(cfg)
    if cfg is None or isinstance(cfg, (bool, int, float, str)):
        return cfg
    return repr(cfg)


def _format_value(value: Any, indent: int, imports: dict[str, set[str]]) -> str:
    pad = " " * (indent + 4)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        imports.setdefault(cls.__module__, set()).add(cls.__qualname__.split(".")[0])
        items = [
            f"{pad}{f.name}={_format_value(getattr(value, f.name), indent + 4, imports)},"
            for f in dataclasses.fields(value)
            if f.init
        ]
        if not items:
            return f"{cls.__qualname__}()"
        return f"{cls.__qualname__}(\n" + "\n".join(items) + f"\n{' ' * indent})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, tuple):
        inner = ", ".join(_format_value(v, indent, imports) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_format_value(v, indent, imports) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_format_value(v, indent, imports)}" for k, v in value.items()) + "}"
    if isinstance(value, PurePath):
        imports.setdefault("pathlib", set()).add(type(value).__name__)
        return repr(value)
    return repr(value)


def format_config(cfg: Any) -> str:
    """Python source that rebuilds ``cfg`` (``config = ...`` with the needed imports)."""
    imports: dict[str, set[str]] = {}
    body = _format_value(cfg, 0, imports)
    lines = ["# Resolved config written by engine.config.save_config; reload it with --config <this file>."]
    for module in sorted(imports):
        note = "  # defined in a config file" if module.startswith("_target_ssl_config_") else ""
        lines.append(f"from {module} import {', '.join(sorted(imports[module]))}{note}")
    lines += ["", f"config = {body}", ""]
    return "\n".join(lines)


def save_config(cfg: Any, run_dir: str | os.PathLike) -> Path | None:
    """Write ``run_dir/config.json`` and the re-loadable ``run_dir/config.py`` (rank 0 only).

    Returns the json path (None on other ranks).
    """
    if not is_main_process():
        return None
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    json_path = run_dir / "config.json"
    json_path.write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n", encoding="utf-8")
    (run_dir / "config.py").write_text(format_config(cfg), encoding="utf-8")
    return json_path
