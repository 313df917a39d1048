"""Typed settings: every config value is validated into a frozen model before any work starts.

A settings class is a pydantic model (``Settings``): its fields are the YAML keys, with types and
ranges, and an unknown key is an error. pydantic does the type conversion and range checks; this
module adds what a store key needs on top of it:

- ``setting(default, unkeyed=WHY)`` declares, next to the setting, that it does not change what a
  stage computes (``SPEED``, ``DISPLAY``, ``RUN``, ``LOCATION``), so it stays out of store keys.
  Everything else is keyed: :func:`keyed` dumps a settings object without its unkeyed fields, and a
  store key is the hash of that dump (``tests/test_keys.py`` checks every leaf of the composed config).
- ``Pluggable`` settings name their class with Hydra's ``_target_`` (``conf/loss/proxynca_pp.yaml``:
  ``_target_: eif.losses.proxynca_pp.ProxyNCAPPConfig``). :func:`parse` validates the YAML node into
  that class, so the YAML keys are its constructor arguments; the class then builds the object
  (a loss, a model, a data set). A new loss or data set is one file plus one YAML, no if/else.
  A ``_target_`` is checked by name before anything is imported: a class in the ``eif`` package, or
  one another package registers as an entry point in the group ``eif.settings``
  (``myloss = "mypkg.losses:MyLossConfig"``); any other name is one error line, nothing imported.
- :func:`parse` turns a pydantic ``ValidationError`` into one readable :class:`EifError` line that
  names the config key, e.g. ``train.epochs: expected an integer, got 'abc'``.
- ``OrAuto[T]`` fields also accept ``auto``: a value eif picks from the data when a job runs
  (:mod:`eif.data.auto`), before any stage settings are built, so store keys hold the picked value.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    WrapSerializer,
    WrapValidator,
    model_validator,
)

import eif.resolvers  # noqa: F401 - configs use its resolvers; they must exist before any resolution
from eif.utils.errors import EifError

# Why a setting is left out of store keys (the declaration ``setting(..., unkeyed=...)`` carries one).
SPEED = "speed: changes how fast or in how much memory, not what is computed"
DISPLAY = "display: changes what is printed or logged, not what is computed"
RUN = "run: which stages run, where outputs go and how the job talks to the outside"
LOCATION = "location: where inputs live; their content is fingerprinted into the keys instead"
DEVICE = "device: results are reused across devices; a training checkpoint refuses a cross-device resume"

S = TypeVar("S", bound="Settings")
T = TypeVar("T")

AUTO = "auto"


def _auto_or_validate(value: Any, handler: Any) -> Any:
    return AUTO if isinstance(value, str) and value == AUTO else handler(value)


def _auto_or_serialize(value: Any, handler: Any) -> Any:
    return AUTO if isinstance(value, str) and value == AUTO else handler(value)


# A setting that is ``auto`` or a ``T``; ``auto`` is replaced by a value picked from the data when a
# job runs (:mod:`eif.data.auto`), so no stage ever sees it.
OrAuto = Annotated[T, WrapValidator(_auto_or_validate), WrapSerializer(_auto_or_serialize)]


def accepts_auto(model: type[BaseModel], name: str) -> bool:
    """Whether field ``name`` of ``model`` is declared ``OrAuto``."""
    return any(
        isinstance(m, WrapValidator) and m.func is _auto_or_validate
        for m in model.model_fields[name].metadata
    )


def has_auto(value: Any) -> bool:
    """Whether ``value`` (settings, or a tuple or mapping of them) holds an unresolved ``auto`` setting."""
    if isinstance(value, BaseModel):
        cls = type(value)
        return any(
            (accepts_auto(cls, name) and getattr(value, name) == AUTO) or has_auto(getattr(value, name))
            for name in cls.model_fields
        )
    if isinstance(value, (list, tuple)):
        return any(has_auto(v) for v in value)
    if isinstance(value, Mapping):
        return any(has_auto(v) for v in value.values())
    return False


def setting(default: Any = ..., *, unkeyed: str | None = None, **constraints: Any) -> Any:
    """A pydantic ``Field`` with an optional declaration that the value is not part of store keys."""
    extra: dict[str, JsonValue] | None = {"unkeyed": unkeyed} if unkeyed else None
    return Field(default, json_schema_extra=extra, **constraints)


class Settings(BaseModel):
    """Base of every settings class: frozen, unknown keys rejected, YAML ``_target_`` accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Pluggable(Settings):
    """Settings whose concrete class the YAML names with ``_target_`` (a loss, a model, a data set).

    Validating a mapping with ``_target_`` against a Pluggable base validates it against the named
    subclass instead (so nested errors keep their config path, e.g. ``dataset.train_classes``)."""

    @model_validator(mode="wrap")
    @classmethod
    def _dispatch(cls, data: Any, handler: Any) -> Any:
        if isinstance(data, Mapping) and "_target_" in data:
            target = _locate(str(data["_target_"]), cls)
            rest = {k: v for k, v in data.items() if k != "_target_"}
            return handler(rest) if target is cls else target.model_validate(rest)
        if isinstance(data, Mapping) and cls.model_fields and not _concrete(cls):
            raise ValueError(f"needs a _target_ naming its settings class (a {cls.__name__})")
        return handler(data)

    def dump(self) -> dict[str, Any]:
        """Every field plus ``_target_``: what rebuilds these settings (saved with a trained model)."""
        return {"_target_": target_name(type(self)), **dump(self)}


def dump(settings: BaseModel) -> dict[str, Any]:
    """All fields as JSON-able values, nested Pluggables with their concrete fields."""
    return settings.model_dump(mode="json", serialize_as_any=True, by_alias=True)


def _concrete(cls: type) -> bool:
    """A Pluggable class is concrete when it is not one of the bases a config group names."""
    return not cls.__dict__.get("abstract", False)


def target_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def unkeyed_reason(model: type[BaseModel], name: str) -> str | None:
    """The declared reason why field ``name`` of ``model`` is not keyed, or None (keyed)."""
    extra = model.model_fields[name].json_schema_extra
    return extra.get("unkeyed") if isinstance(extra, dict) else None  # type: ignore[return-value]


def keyed(value: Any) -> Any:
    """A JSON-able dump of settings without their unkeyed fields; Pluggables carry their class name."""
    if isinstance(value, BaseModel):
        out: dict[str, Any] = {"_target_": target_name(type(value))} if isinstance(value, Pluggable) else {}
        for name in type(value).model_fields:
            if unkeyed_reason(type(value), name) is None:
                out[name] = keyed(getattr(value, name))
        return out
    if isinstance(value, (list, tuple)):
        return [keyed(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): keyed(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def plain(node: Any) -> Any:
    """A resolved plain-Python copy of a config node; interpolation errors become one line."""
    if isinstance(node, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as err:
            raise EifError(f"{err.full_key}: required but not set (e.g. {err.full_key}=<value>)") from None
        except OmegaConfBaseException as err:
            raise EifError(f"config: {_first_line(err)}") from None
    return node


def _first_line(err: BaseException) -> str:
    return " ".join(str(err).split("\n")[0].split())


ENTRY_POINTS = "eif.settings"  # the entry-point group naming settings classes of other packages


def config_dir() -> Path:
    """``conf/`` beside the package in a source checkout, else the copy installed inside it (setup.py)."""
    here = Path(__file__).resolve().parent
    source = here.parent / "conf"
    return source if (source / "config.yaml").is_file() else here / "conf"


@cache
def registered_targets() -> dict[str, str]:
    """``{dotted class name: entry-point value}`` of the settings classes other packages register."""
    return {ep.value.replace(":", "."): ep.value for ep in entry_points(group=ENTRY_POINTS)}


def _import_class(target: str) -> object:
    """The object ``target`` names in an ``eif`` module: the longest module prefix that exists, then
    attributes. Only called on names already checked to be eif's own (:func:`_locate`)."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        try:
            obj: object = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name is not None and module.startswith(err.name):
                continue  # this prefix is no module: try a shorter one
            raise
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module named {parts[0]!r}")


def _locate(target: str, base: type) -> type:
    """The settings class ``target`` names, a subclass of ``base``. The name is checked before any
    import: eif's own classes, or a class registered under the entry-point group ``eif.settings``."""
    registered = registered_targets().get(target)
    if registered is None and target.split(".")[0] != "eif":
        raise ValueError(
            f"_target_ {target!r} is not an eif settings class; a class from another package must be "
            f"registered as an entry point in the group {ENTRY_POINTS!r}"
        )
    try:
        if registered is not None:
            module, _, name = registered.partition(":")
            cls: object = getattr(importlib.import_module(module), name)
        else:
            cls = _import_class(target)
    except Exception as err:  # noqa: BLE001 - an import or attribute error of any kind is one line
        raise ValueError(f"cannot import _target_ {target!r} ({_first_line(err)})") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"_target_ {target} is not a {base.__name__} settings class")
    return cls


def parse(model: type[S], node: Any, where: str) -> S:
    """Validate a config node (DictConfig or plain) into ``model`` (a ``_target_`` picks a subclass).

    Any problem is one :class:`EifError` line naming the key, e.g. ``train.epochs: expected an integer``.
    """
    try:
        return model.model_validate(plain(node))
    except ValidationError as err:
        raise EifError(describe(err, where)) from None


def describe(err: ValidationError, where: str = "", limit: int = 3) -> str:
    """One line for a pydantic error: ``<where>.<key>: <what is wrong> (got <value>)``, up to ``limit``."""
    parts = []
    for e in err.errors()[:limit]:
        loc = ".".join(str(p) for p in e["loc"] if not _union_tag(p))
        key = ".".join(k for k in (where, loc) if k)
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling)"
        elif e["type"] not in ("missing",) and not isinstance(e.get("input"), (dict, list)):
            msg += f" (got {e['input']!r})"
        parts.append(f"{key}: {msg[0].lower() + msg[1:] if msg else msg}")
    more = len(err.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _union_tag(part: Any) -> bool:
    """pydantic puts the tried member of a union into error locations (``tuple[int, ...]``, ``ClassRange``,
    ``function-after[...]``); a config path has none of them."""
    text = str(part)
    return any(c in text for c in "[]()") or (text[:1].isupper() and "_" not in text and not text.isupper())


def unkeyed_paths(model: type[BaseModel] | BaseModel, prefix: str = "") -> dict[str, str]:
    """Every config path below ``model`` declared unkeyed, with its reason (for the every-leaf test).

    For an instance, nested Pluggables are followed through their concrete classes.
    """
    cls = model if isinstance(model, type) else type(model)
    out: dict[str, str] = {}
    for name, info in cls.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        why = unkeyed_reason(cls, name)
        if why is not None:
            out[path] = why
            continue
        value = getattr(model, name, None) if not isinstance(model, type) else None
        if isinstance(value, BaseModel):
            out.update(unkeyed_paths(value, path + "."))
        elif isinstance(value, Mapping):  # e.g. the methods by name
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    out.update(unkeyed_paths(item, f"{path}.{key}."))
    return out
