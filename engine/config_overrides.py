"""Typed values for config dataclasses: the one ``--set key=value`` parser and the ``Literal`` checks.

One checker, :func:`_coerce`, decides what a value of an annotated type may be (a Python value from
a config file, or one parsed from text); :func:`_lex` only turns command-line text into the Python
literal it spells for that type (``2e-4``, ``true``, ``none``, ``27,33``, an unquoted string), so
the rules live in one place. Annotations are resolved with ``typing.get_type_hints`` (``from
__future__ import annotations`` in the defining module is fine).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any, Literal, Union, get_args, get_origin

from engine.errors import ConfigError

__all__ = ["CONFIG_MODULES", "apply_overrides", "validate_config"]

# Modules executed from loose config files (outside a package) that are no longer in sys.modules,
# by name: they resolve string annotations of dataclasses such a file defines itself.
CONFIG_MODULES: dict[str, types.ModuleType] = {}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except NameError:
        mod = CONFIG_MODULES.get(cls.__module__)
        if mod is None:
            raise
        return typing.get_type_hints(cls, globalns=vars(mod))


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _is_sequence(tp: Any) -> bool:
    return tp in (tuple, list) or get_origin(tp) in (tuple, list, Sequence, typing.Sequence)


def _unquote(text: str) -> str:
    t = text.strip()
    return t[1:-1] if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"" else text


# --------------------------------------------------------------------------------------------
# The checker: what a value of an annotated type may be
# --------------------------------------------------------------------------------------------


def _coerce_sequence(value: Any, tp: Any, key: str) -> Any:
    if not isinstance(value, (tuple, list)):
        raise ConfigError(f"{key}: expected a {_type_name(tp)}, got {value!r}")
    origin, args = get_origin(tp), get_args(tp)
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


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    """bool, int, float, str and paths; anything else is returned unchanged."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        if number and float(value).is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if number:
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
    return value  # an annotation we do not interpret (callables, custom classes): accept as is


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check / convert a Python value to the annotated type ``tp``; ConfigError names ``key``."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return _coerce(value, a, key)
                except ConfigError:
                    pass
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of the choices {list(args)}")
    if _is_sequence(tp):
        return _coerce_sequence(value, tp, key)
    if tp is dict or origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a dict, got {value!r}")
        if len(args) == 2:
            return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}[{k!r}]") for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"{key} is a section ({_type_name(tp)}); set its fields as {key}.<field>=...")
    return _coerce_scalar(value, tp, key)


# --------------------------------------------------------------------------------------------
# The lexer: command-line text -> the Python literal it spells for that type
# --------------------------------------------------------------------------------------------


def _lex_sequence(text: str, tp: Any, key: str) -> Any:
    stripped, args = text.strip(), get_args(tp)
    if not stripped:
        return ()
    try:
        value = ast.literal_eval(stripped)
    except (ValueError, SyntaxError):
        if not (args and args[0] is str):
            raise ConfigError(f"{key}: cannot parse {text!r} as {_type_name(tp)} (a Python literal)") from None
        value = [v.strip() for v in stripped.split(",")]  # "a,b" for tuple[str, ...]
    return value if isinstance(value, (tuple, list)) else (value,)  # "milestones=27" -> (27,)


def _lex(text: str, tp: Any, key: str) -> Any:
    """The Python value that ``text`` spells for a (non-union) type ``tp``; :func:`_coerce` checks it."""
    stripped = text.strip()
    if get_origin(tp) is Literal:
        for choice in get_args(tp):
            if (isinstance(choice, str) and _unquote(stripped) == choice) or stripped == str(choice):
                return choice
        raise ConfigError(f"{key}: {text!r} is not one of the choices {list(get_args(tp))}")
    if tp is bool:
        low = stripped.lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ConfigError(f"{key}: expected true/false, got {text!r}")
    if tp in (int, float):
        try:
            return int(stripped) if tp is int and stripped.lstrip("+-").isdigit() else float(stripped)
        except ValueError:
            what = "an integer" if tp is int else "a number"
            raise ConfigError(f"{key}: expected {what}, got {text!r}") from None
    if tp is str or (isinstance(tp, type) and issubclass(tp, PurePath)):
        return _unquote(text) if tp is str else _unquote(stripped)
    if _is_sequence(tp):
        return _lex_sequence(text, tp, key)
    if dataclasses.is_dataclass(tp):
        return None  # _coerce raises: a whole section cannot be set
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError):
        if tp is Any or tp is object:
            return text
        raise ConfigError(f"{key}: cannot parse {text!r} as {_type_name(tp)} (a Python literal)") from None


def _parse(text: str, tp: Any, key: str) -> Any:
    """An override's right-hand side as a value of ``tp``: lex for each union member, then check."""
    if not _is_union(tp):
        return _coerce(_lex(text, tp, key), tp, key)
    args = get_args(tp)
    if type(None) in args and text.strip().lower() in ("none", "null"):
        return None
    for a in args:
        if a is not type(None):
            try:
                return _parse(text, a, key)
            except ConfigError:
                pass
    raise ConfigError(f"{key}: cannot parse {text!r} as {_type_name(tp)}")


# --------------------------------------------------------------------------------------------
# Dotted overrides with "did you mean" checks
# --------------------------------------------------------------------------------------------


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
        value = _parse(text, _type_hints(type(obj)).get(name, Any), full_key)
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
