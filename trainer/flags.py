"""Command-line flags the t5x way.

    --gin_file=FILE          repeatable; looked up as given, then under configs/
    --gin.NAME=VALUE         one gin binding, e.g. --gin.TRAIN_STEPS=200,
                             --gin.train.log_period=5, --gin.ToyData.split="'validation'"
    --gin_bindings='A = B'   repeatable, raw gin syntax
    --model_dir=DIR          binds the MODEL_DIR macro (train.model_dir)

Gin files are parsed first, then bindings in order.  A binding for a
configurable or parameter that does not exist, or for a macro no gin file
defines (e.g. `--gin.TRAIN_STEP=5`), is an error that names it; so is a value
of the wrong type for the parameter's annotation (`--gin.BATCH_SIZE="'32'"`:
`train.batch_size = '32' (through %BATCH_SIZE): expected int`).
"""
from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import difflib
import logging
import os
import sys
import types
import typing

import gin

import configs

CONFIGS_DIR = os.path.dirname(os.path.abspath(configs.__file__))


class FlagError(ValueError):
    pass


@dataclasses.dataclass
class Flags:
    gin_files: list[str]
    bindings: list[str]
    model_dir: str | None
    help: bool = False
    own: dict[str, str] = dataclasses.field(default_factory=dict)   # a binary's own --NAME=VALUE flags


def parse_argv(argv: list[str], own: tuple[str, ...] = (), switches: tuple[str, ...] = ()) -> Flags:
    """The t5x flags, plus the binary's `own` ones (`--NAME=VALUE` for each NAME; `Flags.own`) and
    its `switches` (`--NAME` alone; `Flags.own[NAME] = 'true'`)."""
    files, bindings, model_dir, want_help, mine = [], [], None, False, {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg in ("-h", "--help"):
            want_help = True
        elif name in ("--gin_file", "--gin_bindings", "--model_dir"):
            if not eq:
                if i + 1 >= len(argv):
                    raise FlagError(f"{name} needs a value")
                i += 1
                value = argv[i]
            if name == "--gin_file":
                files.append(value)
            elif name == "--gin_bindings":
                bindings.append(value)
            else:
                model_dir = value
        elif name.startswith("--gin."):
            if not eq:
                raise FlagError(f"{arg}: expected --gin.NAME=VALUE")
            bindings.append(f"{name[len('--gin.'):]} = {value}")
        elif name[2:] in switches and name.startswith("--") and not eq:
            mine[name[2:]] = "true"
        elif name[2:] in own and name.startswith("--"):
            if not eq:
                raise FlagError(f"{arg}: expected {name}=VALUE")
            mine[name[2:]] = value
        else:
            known = ", ".join(["--gin_file", "--gin.NAME=VALUE", "--gin_bindings", "--model_dir",
                               *(f"--{n}" for n in own), *(f"--{n}" for n in switches)])
            raise FlagError(f"unknown flag {arg!r} (flags: {known})")
        i += 1
    return Flags(files, bindings, model_dir, want_help, mine)


def resolve_gin_file(path: str) -> str:
    for candidate in (path, os.path.join(CONFIGS_DIR, path)):
        if os.path.isfile(candidate):
            return candidate
    raise FlagError(f"--gin_file={path}: not found here or under {CONFIGS_DIR}")


def _known_macros() -> list[str]:
    return sorted(scope for (scope, selector) in gin.config._CONFIG  # noqa: SLF001 -- no public API.
                  if selector.endswith("macro") and scope)


def _check_macro(binding: str) -> None:
    name = binding.split("=", 1)[0].strip()
    if "." in name or "/" in name:
        return  # A parameter binding: gin itself checks the configurable and parameter.
    try:
        gin.query_parameter(f"%{name}")
    except ValueError:
        known = _known_macros()
        near = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise FlagError(f"--gin.{name}: no gin file defines the macro {name!r}.{hint} "
                        f"Known macros: {', '.join(known)}") from None


class _GinProbeFilter(logging.Filter):
    """Drops gin's 'Path not found' ERROR, logged when it probes an include such as
    'datasets/corpus.gin' as a Python package path before finding it on the search path."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.pathname.endswith("resource_reader.py") and record.msg == "Path not found: %s")


@contextlib.contextmanager
def _quiet_include_probes():
    f = _GinProbeFilter()
    logging.getLogger().addFilter(f)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(f)


def apply(flags: Flags) -> None:
    """Parses gin files and bindings into the global gin config."""
    gin.add_config_file_search_path(CONFIGS_DIR)
    for f in flags.gin_files:
        path = resolve_gin_file(f)
        try:
            with _quiet_include_probes():
                gin.parse_config_file(path)
        except Exception as e:  # noqa: BLE001 -- re-raised with the file named.
            raise FlagError(f"--gin_file={f} ({path}): {type(e).__name__}: {e}") from e
    bindings = list(flags.bindings)
    if flags.model_dir is not None:
        bindings.append(f"MODEL_DIR = {flags.model_dir!r}")
    for b in bindings:
        _check_macro(b)
        try:
            gin.parse_config(b)
        except Exception as e:  # noqa: BLE001
            raise FlagError(f"gin binding {b!r}: {type(e).__name__}: {e}") from e
    check_binding_types()


def _hints(fn) -> dict:
    """A configurable's parameter annotations (a class's `__init__`'s, or its dataclass fields');
    {} where they cannot be evaluated."""
    for target in ((fn.__init__, fn) if isinstance(fn, type) else (fn,)):
        try:
            hints = typing.get_type_hints(target)
        except Exception:  # noqa: BLE001 -- annotations naming what is not importable: unchecked.
            continue
        if hints:
            return hints
    return {}


def _fits(value, hint) -> bool:
    """Whether a literal `value` fits annotation `hint`; True for annotations this cannot judge
    (classes, callables, Any): a reference (`@Foo()`) is never judged here."""
    if hint is typing.Any or isinstance(hint, typing.TypeVar):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list, collections.abc.Sequence) or hint in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(_fits(v, a) for v, a in zip(value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        return isinstance(value, dict)
    return True


def _describe(hint) -> str:
    return getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint).replace("typing.", "")


def check_binding_types() -> None:
    """Every literal bound to a configurable's parameter, directly or through macros, against
    the parameter's annotation (int, float, bool, str, None, unions, Literal, tuples, lists,
    sequences, dicts).  FlagError naming the binding and the macro it came through."""
    config = gin.config._CONFIG  # noqa: SLF001 -- gin has no public API for the parsed bindings.
    for (scope, selector), params in config.items():
        configurable = gin.config._REGISTRY.get_match(selector)  # noqa: SLF001
        if configurable is None or selector.endswith("macro"):
            continue
        hints = _hints(configurable.wrapped)
        for param, value in params.items():
            via = []
            while isinstance(value, gin.config.ConfigurableReference) and value.configurable.name == "macro":
                name = value.scoped_selector.rsplit("/", 1)[0]
                via.append(f"%{name}")
                value = config.get((name, value.configurable.selector), {}).get("value", value)
                if len(via) > 20:
                    break
            if param not in hints or isinstance(value, gin.config.ConfigurableReference) or _fits(value, hints[param]):
                continue
            through = f" (through {' -> '.join(via)})" if via else ""
            raise FlagError(f"{scope + '/' if scope else ''}{configurable.name}.{param} = {value!r}{through}: "
                            f"expected {_describe(hints[param])}, got {type(value).__name__}")


def parse_and_apply(argv: list[str] | None = None, usage: str = "") -> Flags:
    flags = parse_argv(sys.argv[1:] if argv is None else argv)
    if flags.help:
        print(usage or __doc__)
        sys.exit(0)
    apply(flags)
    return flags


_REQUIRED = object()


def bound(name: str, default=_REQUIRED):
    """The value of gin binding `name` (e.g. 'train.model', '%CORPUS_DIR'), a configurable
    reference evaluated (`@Foo()` -> the object); `default` when nothing binds it."""
    try:
        value = gin.query_parameter(name)
    except ValueError:
        if default is _REQUIRED:
            raise
        return default
    if isinstance(value, gin.config.ConfigurableReference):
        return value.scoped_configurable_fn() if value.evaluate else value.scoped_configurable_fn
    return value
