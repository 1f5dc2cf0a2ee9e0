"""Python config files that build typed dataclasses, plus typed ``key=value`` overrides.

A config file is plain Python that sets a module-level ``config`` (a dataclass instance). Files
compose by importing each other (their folder is on ``sys.path`` while they run)::

    # det_configs/mask_rcnn_splitmask_vits_6x.py
    import dataclasses
    from mask_rcnn_splitmask_vits_3x import config as base
    config = dataclasses.replace(base, schedule=dataclasses.replace(base.schedule, epochs=72))

Command-line overrides (``--set optim.lr=2e-4 data.root=/data/coco``) are parsed according to the
annotated field types (resolved with ``typing.get_type_hints``, so ``from __future__ import
annotations`` in the defining module is fine) and applied without mutating the original objects.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import json
import math
import os
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, Union, get_args, get_origin

from engine.distributed import is_main_process

__all__ = [
    "ConfigError",
    "OptimConfig",
    "RunConfig",
    "load_config",
    "apply_overrides",
    "validate_config",
    "config_to_dict",
    "save_config",
    "format_config",
]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file / key and the fix."""


# --------------------------------------------------------------------------------------------
# Shared dataclasses
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class OptimConfig:
    """AdamW + lr schedule. Steps are optimizer steps (iterations), not epochs.

    ``schedule`` selects the curve in :func:`engine.schedules.schedule_from_config`:
    ``cosine`` (to ``final_lr_ratio``), ``multistep`` (x ``gamma`` at each of ``milestones``),
    ``poly`` (power ``poly_power``), ``constant``; all after ``warmup_steps`` of linear warmup from
    ``warmup_start`` x lr.
    """

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    layer_decay: float | None = None
    clip_grad: float | None = None
    schedule: Literal["cosine", "multistep", "poly", "constant"] = "cosine"
    warmup_steps: int = 0
    warmup_start: float = 0.001
    final_lr_ratio: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    poly_power: float = 1.0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ConfigError(f"optim.layer_decay must be in (0, 1] or None, got {self.layer_decay}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclasses.dataclass
class RunConfig:
    """Where a run writes, how it checkpoints and resumes.

    ``resume``: None (fresh run), ``"auto"`` (newest checkpoint in ``output_dir`` if any) or a
    checkpoint path. ``allow_pickle`` permits legacy (non weights-only) checkpoint loading.
    ``overwrite``: an ``output_dir`` holding an earlier run is emptied of its files instead of
    refused (``engine.run_dir.prepare_run_dir``).
    """

    output_dir: str = "runs/default"
    seed: int = 0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = 20
    ckpt_every_steps: int = 1000
    keep_last: int = 2
    resume: str | None = None
    allow_pickle: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.log_every <= 0:
            raise ConfigError(f"run.log_every must be positive, got {self.log_every}")
        if self.ckpt_every_steps <= 0:
            raise ConfigError(f"run.ckpt_every_steps must be positive, got {self.ckpt_every_steps}")


# --------------------------------------------------------------------------------------------
# Loading config files
# --------------------------------------------------------------------------------------------

# Modules executed by load_config, kept (outside sys.modules) to resolve string annotations of
# dataclasses that a config file defines itself.
_CONFIG_MODULES: dict[str, types.ModuleType] = {}


def _available_configs(search_dirs: Sequence[str | os.PathLike]) -> list[str]:
    names = []
    seen = set()
    for d in search_dirs:
        d = Path(d)
        if d.is_dir() and d.resolve() not in seen:
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


def _exec_config_file(path: Path) -> types.ModuleType:
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
                _CONFIG_MODULES[name] = mod
                del sys.modules[name]
    return module


def load_config(name_or_path: str | os.PathLike, search_dirs: Sequence[str | os.PathLike] = ()) -> Any:
    """Execute a Python config file and return its module-level ``config`` dataclass.

    Args:
        name_or_path: a path, or a name looked up as given and then in each of ``search_dirs``
            (``.py`` appended when missing).
        search_dirs: folders to search, e.g. ``["det_configs"]``.

    Raises:
        ConfigError: file not found (the message lists the available configs), the file fails to
            execute, defines no ``config``, or has invalid choices (see :func:`validate_config`).
    """
    path = _find_config(name_or_path, search_dirs)
    module = _exec_config_file(path)
    if not hasattr(module, "config"):
        raise ConfigError(
            f"config file {path} defines no module-level `config`; add `config = <YourConfig>(...)`"
        )
    cfg = module.config
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise ConfigError(f"`config` in {path} must be a dataclass instance, got {type(cfg).__name__}")
    validate_config(cfg, source=str(path))
    return cfg


# --------------------------------------------------------------------------------------------
# Types and overrides
# --------------------------------------------------------------------------------------------


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except NameError:
        mod = _CONFIG_MODULES.get(cls.__module__)
        if mod is None:
            raise
        return typing.get_type_hints(cls, globalns=vars(mod))


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _unquote(text: str) -> str:
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    return text


def _literal_eval(text: str, key: str, tp: Any) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as e:
        raise ConfigError(f"{key}: cannot parse {text!r} as {_type_name(tp)} (a Python literal)") from e


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check / convert an already-parsed Python value to the annotated type."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of the choices {list(args)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)):
            return tp(value)
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    if tp in (tuple, list) or origin in (tuple, list, Sequence, typing.Sequence):
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{key}: expected a {_type_name(tp)}, got {value!r}")
        container = list if (tp is list or origin is list) else tuple
        if not args:
            items = list(value)
        elif container is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values ({_type_name(tp)}), got {value!r}")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            items = [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        return container(items)
    if tp is dict or origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a dict, got {value!r}")
        if len(args) == 2:
            return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}[{k!r}]") for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"{key} is a section ({_type_name(tp)}); set its fields as {key}.<field>=...")
    # An annotation we do not interpret (callables, custom classes): accept the literal as is.
    return value


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse_text(text: str, tp: Any, key: str) -> Any:
    """Parse an override's right-hand side according to the field's annotated type."""
    origin, args = get_origin(tp), get_args(tp)
    stripped = text.strip()
    if _is_union(tp):
        if type(None) in args and stripped.lower() in ("none", "null"):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _parse_text(text, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: cannot parse {text!r} as {_type_name(tp)}")
    if origin is Literal:
        for choice in args:
            if isinstance(choice, str) and _unquote(stripped) == choice:
                return choice
            if not isinstance(choice, str) and stripped == str(choice):
                return choice
        raise ConfigError(f"{key}: {text!r} is not one of the choices {list(args)}")
    if tp is bool:
        low = stripped.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{key}: expected true/false, got {text!r}")
    if tp is int:
        try:
            return int(stripped)
        except ValueError:
            pass
        try:
            f = float(stripped)
        except ValueError as e:
            raise ConfigError(f"{key}: expected an integer, got {text!r}") from e
        if f.is_integer():
            return int(f)  # "1e3"
        raise ConfigError(f"{key}: expected an integer, got {text!r}")
    if tp is float:
        try:
            return float(stripped)
        except ValueError as e:
            raise ConfigError(f"{key}: expected a number, got {text!r}") from e
    if tp is str:
        return _unquote(text)
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return tp(_unquote(stripped))
    if tp in (tuple, list) or origin in (tuple, list, Sequence, typing.Sequence):
        if not stripped:
            value: Any = ()
        else:
            try:
                value = ast.literal_eval(stripped)
            except (ValueError, SyntaxError):
                if args and args[0] is str:
                    value = [v.strip() for v in stripped.split(",")]  # "a,b" for tuple[str, ...]
                else:
                    raise ConfigError(
                        f"{key}: cannot parse {text!r} as {_type_name(tp)} (a Python literal)"
                    ) from None
        if not isinstance(value, (tuple, list)):
            value = (value,)  # "milestones=27" -> (27,)
        return _coerce(value, tp, key)
    if dataclasses.is_dataclass(tp):
        return _coerce(None, tp, key)  # raises: cannot set a whole section
    if tp is Any or tp is object:
        try:
            return ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            return text
    return _coerce(_literal_eval(stripped, key, tp), tp, key)


def _field_listing(obj: Any) -> list[str]:
    out = []
    for f in dataclasses.fields(obj):
        child = getattr(obj, f.name, None)
        out.append(f"{f.name}.*" if dataclasses.is_dataclass(child) else f.name)
    return out


def _set_path(obj: Any, parts: list[str], text: str, full_key: str, done: tuple[str, ...]) -> Any:
    name = parts[0]
    where = ".".join(done) if done else "the top level"
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        close = difflib.get_close_matches(name, list(fields), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr('.'.join((*done, c))) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown config key {full_key!r}: {where} ({type(obj).__name__}) has no field {name!r}.{hint} "
            f"Valid keys at {where}: {', '.join(_field_listing(obj))}"
        )
    if not fields[name].init:
        raise ConfigError(f"{full_key} is derived (init=False) and cannot be overridden")
    here = ".".join((*done, name))
    if len(parts) == 1:
        value = _parse_text(text, _type_hints(type(obj)).get(name, Any), full_key)
    else:
        child = getattr(obj, name)
        if not dataclasses.is_dataclass(child):
            raise ConfigError(
                f"cannot set {full_key!r}: {here} is a value ({type(child).__name__}), not a section"
            )
        value = _set_path(child, parts[1:], text, full_key, (*done, name))
    try:
        return dataclasses.replace(obj, **{name: value})
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"override {full_key}={text!r} is invalid: {e}") from e


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """Return a copy of ``cfg`` with dotted ``key=value`` overrides applied (``cfg`` is untouched).

    Values are parsed by the annotated type: int, float (``2e-4``), bool (true/false/1/0/yes/no),
    str (quotes optional), ``X | None`` (``none``/``null``), ``Literal`` (validated), tuples /
    lists (``ast.literal_eval``, e.g. ``"(0.9, 0.95)"`` or ``"27,33"``), dicts, paths.

    Raises:
        ConfigError: malformed item, unknown key (listing the valid keys at that level with close
            matches), or a value that does not fit the type.
    """
    if isinstance(overrides, str):
        raise ConfigError("apply_overrides expects a list of 'key=value' strings, not one string")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=2e-4)")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key part")
        cfg = _set_path(cfg, key.split("."), text, key, ())
    return cfg


def validate_config(cfg: Any, source: str = "config") -> None:
    """Check every ``Literal`` field (also inside ``X | None``) of the dataclass tree.

    Catches typos such as ``precision="bf61"`` in a config file at load time.
    """

    def visit(obj: Any, prefix: str) -> None:
        hints = _type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                visit(value, key + ".")
                continue
            tp = hints.get(f.name, Any)
            literal_args = [
                a for a in ([tp] + list(get_args(tp) if _is_union(tp) else [])) if get_origin(a) is Literal
            ]
            if literal_args:
                try:
                    _coerce(value, tp, key)
                except ConfigError as e:
                    raise ConfigError(f"{source}: {e}") from None

    visit(cfg, "")


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


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
