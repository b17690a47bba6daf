"""Reading configuration strictly: every key checked, keyed lists merged, every value traced to its source.

A configuration is built from layers (defaults, a YAML file, environment variables, arguments); this module
checks each layer against the pydantic models before anything is validated, so a mistyped key is refused with
the file or variable it is in and the nearest valid name instead of being dropped. In a file, lists whose items
have a key (`MergeBy`) merge item by item with the layers below, so a file that lists one alert rule does not
delete the others; a variable or an argument gives a list whole (it is one value, and `[]` must mean none).
The origin of every value is kept for `fleetstream config show` and for error messages.
"""

from __future__ import annotations

import collections.abc
import difflib
import importlib
import json
import logging
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from fleetstream.errors import ConfigError

__all__ = [
    "DEFAULT",
    "CheckedAs",
    "ConfigError",
    "Layer",
    "MergeBy",
    "Provenance",
    "build",
    "check_keys",
    "dotted",
    "env_layers",
    "invalid",
    "mask_url",
    "masked_leaves",
    "read_yaml_mapping",
    "validate",
]

log = logging.getLogger(__name__)

DEFAULT = "default"
"""The source of a value no layer set."""

ENABLED = "enabled"
"""The one extra key a keyed list item may carry: `enabled: false` removes the item with that key."""

Path = tuple[str, ...]
"""A location in the tree; a keyed list item is one element `[label]`, so paths survive merges."""


@dataclass(frozen=True, init=False)
class MergeBy:
    """Marks a list whose items have a key: a later layer's item replaces the item with the same key, new keys
    are appended, and `enabled: false` removes one; the rest of the list below is kept."""

    fields: tuple[str, ...]

    def __init__(self, *fields: str) -> None:
        object.__setattr__(self, "fields", fields)

    def key(self, item: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(item.get(name) for name in self.fields)

    def label(self, item: Mapping[str, Any]) -> str:
        return "[" + "/".join(str(value) for value in self.key(item)) + "]"


@dataclass(frozen=True)
class CheckedAs:
    """A free-form dict (or list of dicts) whose keys are the fields of the model `target` ("module:Class").

    The model is imported only when a layer sets the field: these models belong to the parts (streams, the fleet
    poller), which the core does not import. `values=False` checks keys only (partial overrides of a model
    whose required fields are filled in later).
    """

    target: str
    values: bool = True

    def model(self) -> type[BaseModel] | None:
        module, _, name = self.target.partition(":")
        try:
            model: type[BaseModel] = getattr(importlib.import_module(module), name)
        except ImportError as exc:  # the part is not installed here, so nothing here can use the section either
            log.debug("cannot check keys against %s: %s", self.target, exc)
            return None
        return model


@dataclass(frozen=True)
class _Node:
    """What a field holds, as far as checking keys and merging is concerned."""

    kind: Literal["model", "list", "free", "scalar"]
    model: type[BaseModel] | None = None
    """The section's model ("model") or the items' model ("list")."""
    merge: MergeBy | None = None
    checked: CheckedAs | None = None


def _unwrap(annotation: Any) -> Any:
    """`X | None` and `Annotated[X, ...]` → X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _as_model(annotation: Any) -> type[BaseModel] | None:
    annotation = _unwrap(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _marker(info: FieldInfo, kind: type[Any]) -> Any:
    return next((m for m in info.metadata if isinstance(m, kind)), None)


def _node(info: FieldInfo) -> _Node:
    merge: MergeBy | None = _marker(info, MergeBy)
    checked: CheckedAs | None = _marker(info, CheckedAs)
    annotation = _unwrap(info.annotation)
    if (model := _as_model(annotation)) is not None:
        return _Node("model", model)
    origin = get_origin(annotation) or annotation
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence):
        items = [a for a in get_args(annotation) if a is not Ellipsis]
        item_model = (checked.model() if checked else None) or (_as_model(items[0]) if items else None)
        return _Node("list", item_model, merge, checked)
    if origin in (dict, collections.abc.Mapping):
        target = checked.model() if checked else None
        return _Node("model", target, checked=checked) if target else _Node("free")
    return _Node("scalar")


def _fields(model: type[BaseModel]) -> dict[str, _Node]:
    return {name: _node(info) for name, info in model.model_fields.items()}


def dotted(path: Path) -> str:
    """('validation', 'ranges', '[afr/AFR]', 'hard_min') → 'validation.ranges[afr/AFR].hard_min'."""
    out = ""
    for part in path:
        out += part if part.startswith("[") or not out else "." + part
    return out


def _unknown(path: Path, valid: collections.abc.Iterable[str], where: str) -> ConfigError:
    key = path[-1]
    near = difflib.get_close_matches(key, list(valid), n=1)
    hint = f"did you mean '{dotted((*path[:-1], near[0]))}'?" if near else f"valid keys: {', '.join(sorted(valid))}"
    return ConfigError(f"unknown key '{dotted(path)}' in {where}", hint)


def read_yaml_mapping(path: FilePath) -> dict[str, Any]:
    """A YAML file's top-level mapping (empty for an empty file); ConfigError for a missing or malformed file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} not found", "check --config or FLEETSTREAM_CONFIG") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of settings at the top level",
                          f"it holds a {type(loaded).__name__}")
    return loaded


# --- checking keys -----------------------------------------------------------------------------------------


def check_keys(model: type[BaseModel], data: Any, where: str, path: Path = (), merging: bool = True) -> None:
    """Raise ConfigError for the first key of `data` that `model` has no field for (recursively); `merging`
    allows `enabled` in keyed list items."""
    if not isinstance(data, Mapping):
        return  # not a section: pydantic reports the wrong type, with the value
    fields = _fields(model)
    for key, value in data.items():
        name = str(key)
        if name not in fields:
            raise _unknown((*path, name), fields, where)
        _check_node(fields[name], value, where, (*path, name), merging)


def _check_node(node: _Node, value: Any, where: str, path: Path, merging: bool) -> None:
    if node.kind == "model" and node.model is not None:
        check_keys(node.model, value, where, path, merging)
    elif node.kind == "list" and node.model is not None and isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                continue
            label = node.merge.label(item) if node.merge and None not in node.merge.key(item) else f"[{index}]"
            fields = {k: v for k, v in item.items() if k != ENABLED} if node.merge and merging else item
            check_keys(node.model, fields, where, (*path, label), merging)


# --- layers and merging ------------------------------------------------------------------------------------


@dataclass
class Layer:
    """One source of values: its name as a user knows it (a file path, a variable name, "default") and data."""

    source: str
    data: Mapping[str, Any]
    merge_lists: bool = True
    """Keyed lists merge with the layers below (a file); False: every list is given whole (a variable)."""


@dataclass
class Provenance:
    """Which layer set which path; a path not set by any layer comes from the defaults."""

    origins: dict[Path, str] = field(default_factory=dict)

    def set(self, path: Path, source: str) -> None:
        self.forget(path)
        self.origins[path] = source

    def forget(self, path: Path) -> None:
        for known in [p for p in self.origins if p[: len(path)] == path]:
            del self.origins[known]

    def source_of(self, path: Path) -> str:
        for end in range(len(path), 0, -1):
            if (source := self.origins.get(path[:end])) is not None:
                return source
        return DEFAULT

    def sources_within(self, path: Path) -> str:
        """Where a section's values came from (for an error about the section as a whole)."""
        if (source := self.source_of(path)) != DEFAULT:
            return source
        below = dict.fromkeys(s for p, s in self.origins.items() if p[: len(path)] == path)
        return " and ".join(below) or DEFAULT


def build(model: type[BaseModel], layers: list[Layer]) -> tuple[dict[str, Any], Provenance]:
    """The input for `model`: the layers (lowest priority first) checked and merged, and where each value is from."""
    merged: dict[str, Any] = {}
    provenance = Provenance()
    for layer in layers:
        check_keys(model, layer.data, layer.source, merging=layer.merge_lists)
        merged = _merge_section(model, merged, layer, layer.data, provenance, ())
    _validate_checked(model, merged, provenance, ())
    return merged, provenance


def _merge_section(model: type[BaseModel] | None, base: Mapping[str, Any], layer: Layer, data: Mapping[str, Any],
                   provenance: Provenance, path: Path) -> dict[str, Any]:
    out = dict(base)
    fields = _fields(model) if model is not None else {}
    for key, value in data.items():
        node, here = fields.get(key, _Node("free")), (*path, key)
        if isinstance(value, Mapping) and node.kind in ("model", "free") and isinstance(out.get(key, {}), Mapping):
            out[key] = _merge_section(node.model, out.get(key, {}), layer, value, provenance, here)
        elif node.merge is not None and isinstance(value, list) and model is not None and layer.merge_lists:
            current = out[key] if isinstance(out.get(key), list) else _default_items(model.model_fields[key])
            out[key] = _merge_list(node.merge, current, value, layer.source, provenance, here)
        else:
            out[key] = value
            provenance.set(here, layer.source)
    return out


def _default_items(info: FieldInfo) -> list[Any]:
    default = info.get_default(call_default_factory=True) or []
    return [item.model_dump() if isinstance(item, BaseModel) else item for item in default]


def _merge_list(merge: MergeBy, base: list[Any], items: list[Any], source: str, provenance: Provenance,
                path: Path) -> list[Any]:
    """`items` merged into `base` by key (see MergeBy); a malformed item is refused with its position."""
    merged = {merge.key(item): item for item in base if isinstance(item, Mapping)}
    if not items and merged:
        raise ConfigError(f"{dotted(path)}: [] in {source} changes nothing: the list merges with the "
                          f"{len(merged)} items below it", "remove items one by one with enabled: false")
    seen: set[tuple[Any, ...]] = set()
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ConfigError(f"{dotted(path)}[{index}] in {source} is not a mapping",
                              f"each item is a mapping with {', '.join(merge.fields)}")
        key, label = merge.key(item), merge.label(item)
        if None in key:
            missing = [name for name, value in zip(merge.fields, key, strict=True) if value is None]
            raise ConfigError(f"{dotted(path)}[{index}] in {source} has no {' and '.join(missing)}",
                              f"items of {dotted(path)} are matched by {', '.join(merge.fields)}")
        if key in seen:
            raise ConfigError(f"{dotted((*path, label))} is listed twice in {source}", "keep one of them")
        seen.add(key)
        enabled = item.get(ENABLED, True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{dotted((*path, label, ENABLED))} in {source} is {enabled!r}", "use true or false")
        if not enabled:
            if key not in merged:
                labels = ", ".join(merge.label(i) for i in merged.values()) or "none"
                raise ConfigError(f"{dotted((*path, label))} in {source} removes an item that is not there",
                                  f"items: {labels}")
            del merged[key]
            provenance.forget((*path, label))
            continue
        merged[key] = {k: v for k, v in item.items() if k != ENABLED}
        provenance.set((*path, label), source)
    return list(merged.values())


def _validate_checked(model: type[BaseModel], data: Mapping[str, Any], provenance: Provenance, path: Path) -> None:
    """Validate the values of `CheckedAs` sections a layer set, so a bad alert rule stops the load, not a worker."""
    for key, value in data.items():
        info = model.model_fields.get(key)
        if info is None:
            continue
        node, here = _node(info), (*path, key)
        if node.checked is not None and node.checked.values and node.model is not None:
            if node.kind == "model" and isinstance(value, Mapping) and provenance_under(provenance, here):
                validate(node.model, value, provenance, here)
            elif node.kind == "list" and isinstance(value, list):
                for index, item in enumerate(value):
                    label = node.merge.label(item) if node.merge else f"[{index}]"
                    if isinstance(item, Mapping) and provenance_under(provenance, (*here, label)):
                        validate(node.model, item, provenance, (*here, label))
        elif node.kind == "model" and node.model is not None and isinstance(value, Mapping):
            _validate_checked(node.model, value, provenance, here)


def provenance_under(provenance: Provenance, path: Path) -> bool:
    """Whether any layer set `path` or something under it."""
    return any(p[: len(path)] == path or path[: len(p)] == p for p in provenance.origins)


# --- environment variables ---------------------------------------------------------------------------------


def env_layers(model: type[BaseModel], environ: Mapping[str, str], prefix: str, delimiter: str,
               ignore: collections.abc.Collection[str]) -> list[Layer]:
    """One layer per `<prefix><FIELD>[<delimiter><FIELD>...]` variable; a variable naming no field is refused.

    Sections, lists and dicts take JSON (`FLEETSTREAM_KAFKA__CLIENT_CONFIG='{"security.protocol": "SSL"}'`);
    below a free-form dict any name is a key. More specific variables win over a whole section's JSON.
    """
    layers = []
    for name in sorted(environ, key=lambda n: (n.count(delimiter), n)):
        if not name.upper().startswith(prefix) or name.upper() in ignore:
            continue
        parts = name[len(prefix):].lower().split(delimiter)
        node, depth = _env_target(model, parts, name, prefix, delimiter)
        value: Any = environ[name]
        if node.kind != "scalar" and depth == len(parts):  # the variable names a section, list or dict: JSON
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{name} is not valid JSON: {exc.msg} at column {exc.colno}",
                                  f"{dotted(tuple(parts))} takes a JSON value") from None
        data: Any = value
        for part in reversed(parts):
            data = {part: data}
        layers.append(Layer(name, data, merge_lists=False))
    return layers


def _env_target(model: type[BaseModel], parts: list[str], name: str, prefix: str,
                delimiter: str) -> tuple[_Node, int]:
    """The field a variable names and how many of its parts are fields (the rest are keys of a free dict)."""
    node = _Node("model", model)
    for index, part in enumerate(parts):
        if node.kind == "free":
            return node, index
        if node.kind != "model" or node.model is None:
            raise ConfigError(f"unknown variable {name}: {dotted(tuple(parts[:index]))} has no sub-keys",
                              f"use {prefix}{delimiter.join(parts[:index]).upper()}")
        fields = _fields(node.model)
        if part not in fields:
            near = difflib.get_close_matches(part, list(fields), n=1)
            guess = prefix + delimiter.join([*parts[:index], *near, *parts[index + 1:]]).upper()
            hint = f"did you mean {guess}?" if near else f"valid names here: {', '.join(sorted(fields))}"
            raise ConfigError(f"unknown variable {name} (no setting '{dotted(tuple(parts))}')", hint)
        node = fields[part]
    return node, len(parts)


# --- errors from pydantic and the effective values ---------------------------------------------------------


def validate(model: type[BaseModel], data: Mapping[str, Any], provenance: Provenance, path: Path = ()) -> Any:
    """`model.model_validate(data)`, a failure reported as one ConfigError naming the key and where it came from."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, model, data, provenance, path) from None


def invalid(exc: ValidationError, model: type[BaseModel], data: Mapping[str, Any], provenance: Provenance,
            path: Path = ()) -> ConfigError:
    """The first error of `exc` as a ConfigError: key, source, pydantic's reason, the value (masked)."""
    error = exc.errors()[0]
    where = (*path, *_labelled(model, data, error["loc"]))
    reason = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error["type"] == "extra_forbidden":
        parent = _parent_fields(model, where[len(path):])
        return _unknown(where, parent, provenance.source_of(where))
    more = len(exc.errors()) - 1
    source = provenance.sources_within(where)
    origin = "the defaults" if source == DEFAULT else source
    message = f"invalid {dotted(where) or 'configuration'} in {origin}: {reason}"
    if more:
        message += f" (and {more} more)"
    value = error.get("input")
    hint = f"got {_masked(where, value)!r}" if not isinstance(value, Mapping | list) else ""
    return ConfigError(message, hint)


def _labelled(model: type[BaseModel] | None, data: Any, loc: tuple[int | str, ...]) -> Path:
    """A pydantic error location with keyed list indices replaced by their items' labels."""
    out: list[str] = []
    node = _Node("model", model)
    for part in loc:
        if isinstance(part, int) and isinstance(data, list) and 0 <= part < len(data):
            item = data[part]
            ok = node.merge is not None and isinstance(item, Mapping) and None not in node.merge.key(item)
            out.append(node.merge.label(item) if ok and node.merge else f"[{part}]")
            data, node = item, _Node("model", node.model)
            continue
        out.append(str(part))
        fields = _fields(node.model) if node.model is not None else {}
        node = fields.get(str(part), _Node("free"))
        data = data.get(part) if isinstance(data, Mapping) else None
    return tuple(out)


def _parent_fields(model: type[BaseModel], path: Path) -> list[str]:
    node = _Node("model", model)
    for part in path[:-1]:
        if part.startswith("["):
            node = _Node("model", node.model)
            continue
        node = _fields(node.model).get(part, _Node("free")) if node.model else _Node("free")
    return list(node.model.model_fields) if node.model is not None else []


_SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "credential")


def _is_secret(path: Path) -> bool:
    return bool(path) and any(word in path[-1].lower() for word in _SECRET_WORDS)


def mask_url(value: str) -> str:
    """`http://user:pw@host` → `http://user:***@host`; anything else unchanged."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if not parts.password:
        return value
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _masked(path: Path, value: Any) -> Any:
    if isinstance(value, SecretStr) or (_is_secret(path) and value not in (None, "")):
        return "***"
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {k: _masked((*path, str(k)), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(path, v) for v in value]
    return value


def masked_leaves(settings: BaseModel) -> Iterator[tuple[Path, Any]]:
    """Every effective value as (path, value) with secrets masked: sections and free dicts are opened, keyed list
    items are one value each, other lists are one value."""
    yield from _leaves(type(settings), settings.model_dump(mode="python"), ())


def _leaves(model: type[BaseModel] | None, data: Mapping[str, Any], path: Path) -> Iterator[tuple[Path, Any]]:
    fields = _fields(model) if model is not None else {}
    for key, value in data.items():
        node, here = fields.get(key, _Node("free")), (*path, str(key))
        if isinstance(value, Mapping) and value and node.kind in ("model", "free"):
            yield from _leaves(node.model, value, here)
        elif node.merge is not None and isinstance(value, list):
            for item in value:
                yield (*here, node.merge.label(item)), _jsonable(_masked(here, item))
        else:
            yield here, _jsonable(_masked(here, value))


def _jsonable(value: Any) -> Any:
    """Paths, tuples and other plain objects as JSON has them (model_dump(mode='python') keeps them as is)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
