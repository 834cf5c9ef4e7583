"""Typed, mergeable settings of every training script: one dataclass, YAML files and ``--key value`` flags.

A settings class is a ``@dataclass`` deriving from :class:`Settings`; each field is one option, typed,
with one default and a help line (:func:`option`). :meth:`Settings.from_args` reads::

    [--config a.yaml [--config b.yaml ...]] [--key value | --key=value | --flag | --dict.key.sub value] ...

Precedence: field defaults < YAML files (in order) < flags (in order). Mappings MERGE through the layers
(:func:`deep_merge`): ``--quantizer.quantizer_kwargs.codebook_size 16384`` changes one key of the YAML's
quantizer, and so does a partial mapping (``--quantizer '{quantizer_kwargs: {codebook_size: 16384}}'``);
a mapping that names another ``name`` (another registered component) replaces the old one. ``--help``
prints every option with its type and default; an unknown option is an error naming it and the closest
valid one.

Why a small loader of our own rather than a library: ``transformers.HfArgumentParser`` (already a
dependency) rejects a ``dict`` field's value (``invalid dict value``) and dotted keys, and reads a YAML
file OR flags, not one layered on the other; omegaconf would add a dependency and its ``key=value``
syntax, and still needs argparse glue for ``--help``. What is needed here (layering, deep merge, nested
keys, suggestions) is a few dozen lines on ``dataclasses`` and PyYAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

import yaml

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", *, default_factory: Any = _MISSING) -> Any:  # noqa: A002
    """A settings field: ``model: str = option("coda", "coda | vqgan | vae")``; no default = required."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})


def default_of(function: Any, name: str) -> Any:
    """The default of parameter ``name`` of ``function`` (a class: its ``__init__``), so that a setting
    that feeds a constructor keeps that constructor's default instead of a copy of it."""
    import inspect

    target = function.__init__ if isinstance(function, type) else function
    default = inspect.signature(target).parameters[name].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{getattr(function, '__qualname__', function)} parameter {name!r} has no default")
    return default


def deep_merge(base: Any, override: Any) -> Any:
    """``override`` laid over ``base``: mappings merge key by key (recursively), anything else is replaced.

    A mapping whose ``"name"`` differs from the base's names another component (another registered
    quantizer, say): it replaces the base instead of inheriting its options. Neither input is modified.
    """
    if not isinstance(base, dict) or not isinstance(override, dict):
        return _copy(override)
    if "name" in override and "name" in base and override["name"] != base["name"]:
        return _copy(override)
    merged = _copy(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if key in merged else _copy(value)
    return merged


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value


def _unknown(kind: str, key: str, valid: typing.Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    return f"unknown {kind} {prefix}{key}{hint}"


def _base_type(tp: Any) -> tuple[Any, bool]:
    """``(inner type, optional?)`` of ``X | None``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _type_name(tp: Any) -> str:
    base, optional = _base_type(tp)
    origin = typing.get_origin(base) or base
    name = {dict: "MAPPING", list: "LIST", bool: "BOOL", int: "INT", float: "FLOAT", str: "STR"}.get(origin, str(base))
    return name + ("|none" if optional else "")


class Settings:
    """Mix-in of a settings ``@dataclass``: loading (:meth:`from_args`, :meth:`from_yaml`,
    :meth:`from_dict`), ``--help`` text and saving (:meth:`save`). Subclasses validate in ``__post_init__``."""

    # Fields never written to disk (secrets).
    private_fields: ClassVar[tuple[str, ...]] = ()

    # ---- reading ----------------------------------------------------------------------------
    @classmethod
    def field_types(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config"):
        """Build from ``{option: value}`` (values of the right type, or strings to parse)."""
        types_ = cls.field_types()
        for key in data:
            if key not in types_:
                raise ValueError(f"{source}: {_unknown('option', key, types_, '--' if source == 'command line' else '')}")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and f.default is _MISSING
                   and f.default_factory is _MISSING]  # fmt: skip
        if missing:
            raise ValueError(f"{source}: missing required option(s) {', '.join('--' + m for m in missing)}")
        return cls(**{k: _coerce(k, v, types_[k], source) for k, v in data.items()})

    @classmethod
    def from_yaml(cls, path: str | Path):
        return cls.from_dict(read_yaml(path), source=str(path))

    @classmethod
    def from_args(cls, argv: list[str] | None = None, prog: str | None = None):
        """Parse a command line (see the module docstring); ``--help`` prints :meth:`help_text` and exits 0."""
        argv = list(sys.argv[1:] if argv is None else argv)
        if "-h" in argv or "--help" in argv:
            print(cls.help_text(prog))
            raise SystemExit(0)
        return cls.from_dict(cls.parse_overrides(argv), source="command line")

    @classmethod
    def parse_overrides(cls, argv: list[str]) -> dict[str, Any]:
        """``argv`` -> one option dict: the ``--config`` files merged in order, then the flags."""
        types_ = cls.field_types()
        data: dict[str, Any] = {}
        known = [*types_, "config"]

        def is_flag(key: str) -> bool:  # a bare --key is a boolean True; unknown keys stop here
            if key.split(".", 1)[0] not in known:
                raise ValueError(f"command line: {_unknown('option', key.split('.', 1)[0], known, '--')}")
            return key in types_ and _base_type(types_[key])[0] is bool

        pairs = _split_flags(argv, is_flag)
        for key, value in pairs:
            if key == "config":
                data = deep_merge(data, read_yaml(value))
        for key, value in pairs:
            base, _, sub = key.partition(".")
            if base == "config":
                continue
            inner = _base_type(types_[base])[0]
            is_mapping = (typing.get_origin(inner) or inner) is dict
            if sub and not is_mapping:
                raise ValueError(f"command line: --{key}: option {base} is not a mapping")
            if sub:  # --a.b.c v -> {"a": {"b": {"c": v}}}
                nested: Any = yaml.safe_load(value) if isinstance(value, str) else value
                for part in reversed(sub.split(".")):
                    nested = {part: nested}
                data[base] = deep_merge(_parse_mapping(data.get(base), base), nested)
            elif is_mapping and isinstance(data.get(base), dict):
                data[base] = deep_merge(data[base], _parse_mapping(value, base))
            else:
                data[base] = value
        return data

    # ---- help -------------------------------------------------------------------------------
    @classmethod
    def help_text(cls, prog: str | None = None) -> str:
        prog = prog or Path(sys.argv[0]).name
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        lines = [f"usage: {prog} [--config FILE.yaml ...] [--OPTION VALUE ...]", "", doc, "",
                 "options (precedence: defaults < --config files < flags; MAPPING options also take --OPTION.KEY VALUE):",
                 f"  {'--config FILE.yaml':<36} YAML file of options (repeatable)", f"  {'-h, --help':<36} show this help"]  # fmt: skip
        types_ = cls.field_types()
        for f in dataclasses.fields(cls):
            if f.default is not _MISSING:
                default = f"(default: {_show(f.default)})"
            elif f.default_factory is not _MISSING:
                default = f"(default: {_show(f.default_factory())})"
            else:
                default = "(required)"
            flag = f"--{f.name} {_type_name(types_[f.name])}"
            lines.append(f"  {flag:<36} {f.metadata.get('help', '')} {default}".rstrip())
        return "\n".join(lines)

    # ---- writing ----------------------------------------------------------------------------
    def to_dict(self, include_private: bool = False) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if not include_private:
            for name in self.private_fields:
                out.pop(name, None)
        return out

    def save(self, directory: str | Path, stem: str = "training_config", yaml_too: bool = True) -> None:
        """Write ``<stem>.json`` (and ``<stem>.yaml``), secrets left out, into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        (directory / f"{stem}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        if yaml_too:
            (directory / f"{stem}.yaml").write_text(yaml.safe_dump(data, sort_keys=True))


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list, tuple)) else str(value)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: no such file {str(path)!r}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of option: value, got {type(data).__name__}")
    return data


def _split_flags(argv: list[str], is_flag) -> list[tuple[str, Any]]:
    """``[--key value | --key=value | --flag]`` -> ``[(key, value)]``; a bare boolean flag is ``True``."""
    pairs, i = [], 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or len(token) < 3:
            raise ValueError(f"command line: expected --option, got {token!r}")
        key, has_eq, inline = token[2:].partition("=")
        base, dot, sub = key.partition(".")
        key = base.replace("-", "_") + dot + sub  # --max-train-steps = --max_train_steps
        flag = is_flag(key)
        if has_eq:
            pairs.append((key, inline))
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            pairs.append((key, argv[i + 1]))
            i += 2
        elif flag:
            pairs.append((key, True))
            i += 1
        else:
            raise ValueError(f"command line: option --{key} needs a value")
    return pairs


def _parse_mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    parsed = yaml.safe_load(value) if isinstance(value, str) else value
    if not isinstance(parsed, dict):
        raise ValueError(f"option {name} expects a mapping; got {value!r}")
    return parsed


def _coerce(name: str, value: Any, tp: Any, source: str) -> Any:
    base, optional = _base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ValueError(f"{source}: option {name} may not be None")
    origin = typing.get_origin(base) or base
    if isinstance(value, str) and origin in (dict, list, bool, int, float):
        parsed = yaml.safe_load(value) if value.strip() else value
        if origin is list and isinstance(parsed, (int, float)):
            parsed = [parsed]
        elif origin is list and isinstance(parsed, str):
            parsed = [yaml.safe_load(p) for p in parsed.split(",") if p.strip()]  # "2,3"
        value = parsed
    try:
        return _convert(value, origin, base)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: option {name} expects {_type_name(tp)}; got {value!r}") from None


def _convert(value: Any, origin: Any, base: Any) -> Any:
    if origin is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if origin in (int, float):
        if isinstance(value, bool) or (origin is int and isinstance(value, float) and not value.is_integer()):
            raise TypeError
        return origin(value)
    if origin is str:
        return str(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError
        return dict(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        (item,) = typing.get_args(base) or (Any,)
        item_origin = typing.get_origin(item) or item
        return [v if item is Any else _convert(v, item_origin, item) for v in value]
    return value


__all__ = ["Settings", "deep_merge", "default_of", "option", "read_yaml"]
