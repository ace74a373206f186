"""Typed parameter configs: one pydantic base and one way to read a YAML block into it.

Every parameter block (``preprocess.clips``, ``train.sae``, ``intervene``...) is a
subclass of :class:`ParamsModel`: frozen, unknown keys refused, values typed strictly
(YAML's ``"32"`` is not an integer, ``true`` is not a number; a list is read into a
tuple field), constraints declared on the fields (``Field(ge=1)``, ``Literal[...]``) and
each field documented by the docstring under it (which becomes its ``description``).
Checks that involve several fields are ``model_validator``s that raise :class:`Invalid`.

:func:`parse_params` builds a config from a YAML mapping; a validation failure becomes
one ``MusicSAEError`` paragraph, ``parameters <where>: field 'X' = Y <what is wrong>.
Fix: <how>``. Building a config in code (``TrainConfig(steps=10)``) fails the same way.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from musicsae_kedro.errors import MusicSAEError

T = TypeVar("T")
M = TypeVar("M", bound="ParamsModel")


def _list_to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


TupleOf = Annotated[tuple[T, ...], BeforeValidator(_list_to_tuple)]
"""``TupleOf[float]``: a tuple field that YAML may write as a list (strict mode refuses
lists for tuples otherwise); the items stay strictly typed."""


class Invalid(ValueError):
    """A config's own check failed (raised inside a validator; pydantic records where).

    ``field`` and ``value`` name the offending field of the model that raised it (for
    checks over several fields); without them the problem is reported as written.
    """

    _UNSET: Any = object()

    def __init__(self, problem: str, fix: str, field: str | None = None, value: Any = _UNSET):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.field = field
        self.value = value


class ParamsModel(BaseModel):
    """Base of every parameter config (see the module docstring)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, use_attribute_docstrings=True
    )

    def __init__(self, /, *args: Any, **data: Any) -> None:
        # Positional arguments in field order, as the dataclasses these replace took them.
        if args:
            names = list(type(self).model_fields)
            if len(args) > len(names):
                raise TypeError(f"{type(self).__name__} takes at most {len(names)} arguments")
            data = {**dict(zip(names, args)), **data}
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self), exc, data, f"parameters {type(self).__name__}") from None

    # Validation behaves as pydantic's own __init__ (as RootModel marks its override):
    # nested configs and ``model_validate`` stay in pydantic's validator, so a nested
    # error keeps its location and ``parse_params`` words it once.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def _require(self, ok: bool, field: str, problem: str, fix: str) -> None:
        """Raise :class:`Invalid` for ``field`` unless ``ok`` (in ``model_validator``s)."""
        if not ok:
            raise Invalid(problem, fix, field, getattr(self, field))


def parse_params(
    cls: type[M], raw: Mapping[str, Any] | None, where: str, *, source: str = "parameters"
) -> M:
    """``cls`` from the mapping ``raw`` (``None``: every default).

    ``where`` names the block in the error (e.g. ``"preprocess.clips"``), after its
    ``source`` (``parameters``; ``catalog`` for a dataset's options).
    """
    if raw is not None and not isinstance(raw, Mapping):
        raise MusicSAEError(
            f"{source} {where}",
            f"expected a mapping of key: value pairs, got {type(raw).__name__} {raw!r}",
            f"write {where} as a block of keys ({', '.join(cls.model_fields)})",
        )
    data = dict(raw or {})
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise config_error(cls, exc, data, f"{source} {where}") from None


def config_error(cls: type[BaseModel], exc: ValidationError, raw: Any, where: str) -> MusicSAEError:
    """One ``MusicSAEError`` paragraph for every problem pydantic found in ``raw``
    (``where`` names the block: ``parameters preprocess.clips``, ``fma corpus options``)."""
    problems, fixes = explain(cls, exc, raw)
    return MusicSAEError(where, "; ".join(problems), "; ".join(fixes))


def explain(
    cls: type[BaseModel], exc: ValidationError, raw: Any, prefix: tuple[Any, ...] = ()
) -> tuple[list[str], list[str]]:
    """``(problems, fixes)`` in words for the errors of ``exc`` (``prefix``: where ``cls``
    sits inside a larger block, for messages of nested checks)."""
    problems: list[str] = []
    fixes: list[str] = []
    unknown: dict[tuple[Any, ...], list[str]] = {}
    seen: set[tuple[Any, ...]] = set()
    for error in exc.errors():
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        path, annotation, field = _resolve(cls, loc)
        if tuple(path) in seen:
            continue  # one message per field (a union reports once per member)
        seen.add(tuple(path))
        name = _path(prefix + tuple(path))
        value = _value_at(raw, path, error.get("input"))
        problem, fix = _words(error, name, value, annotation, field)
        problems.append(problem)
        fixes.append(fix)
    unknown_problems, unknown_fixes = [], []
    for parent, keys in unknown.items():
        model = _model_in(_resolve(cls, parent)[1]) or cls
        inside = f" in {_path(prefix + parent)}" if prefix + parent else ""
        unknown_problems.append(f"unknown keys {sorted(keys)}{inside}")
        unknown_fixes.append(f"remove or correct them; use only {list(model.model_fields)}")
    fixes = list(dict.fromkeys(unknown_fixes + fixes))  # the same fix once
    return unknown_problems + problems, fixes


def _words(error: Any, name: str, value: Any, annotation: Any, field: Any) -> tuple[str, str]:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    default = getattr(field, "default", None)
    hint = f" (default {_yaml(default)})" if isinstance(default, int | float | str) else ""
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        problem, fix = (
            (cause.problem, cause.fix)
            if isinstance(cause, Invalid)
            else (str(cause or error["msg"]), "correct the value")
        )
        if isinstance(cause, Invalid) and cause.field is not None:
            inner = f"{name}.{cause.field}" if name else cause.field
            return f"field {inner!r} = {cause.value!r} {problem}", fix
        if _model_in(annotation) is not None:  # a (nested) model's own check
            return (f"{name}: {problem}" if name else problem), fix
        return f"field {name!r} = {value!r} {problem}", fix
    if kind == "missing":
        return f"field {name!r} is missing", f"add {name} ({_describe(annotation)})"
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        op, key = bounds[kind]
        bound = _yaml(ctx[key])
        return f"field {name!r} = {value!r} must be {op} {bound}", f"use a value {op} {bound}{hint}"
    if kind in ("too_short", "string_too_short"):
        minimum = ctx.get("min_length")
        what = "must not be empty" if minimum == 1 else f"must have at least {minimum} items"
        return f"field {name!r} = {value!r} {what}", f"give {name} a value{hint}"
    if kind in ("too_long", "string_too_long"):
        return (
            f"field {name!r} = {value!r} must have at most {ctx.get('max_length')} items",
            f"shorten {name}",
        )
    if kind == "finite_number":
        return f"field {name!r} = {value!r} must be a finite number", f"use a number{hint}"
    described = _describe(annotation)
    if typing.get_origin(_unwrap(annotation)) is Literal:
        fix = f"use one of {list(typing.get_args(_unwrap(annotation)))}"
    else:
        fix = f"write {name} as {described}{hint}"
    return f"field {name!r} = {value!r} must be {described}", fix


def _yaml(value: Any) -> str:
    """A default or a bound as YAML writes it (``true``, ``0``, ``'cpu'``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if value != "" else "''"


# --------------------------------------------------------------------------- types


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> tuple[Any, ...]:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(_unwrap(a) for a in typing.get_args(annotation))
    return (annotation,)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _item_type(annotation: Any) -> Any:
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if origin in (tuple, list) or (
            isinstance(origin, type) and issubclass(origin, Sequence) and origin is not str
        ):
            args = typing.get_args(member)
            return args[0] if args else Any
    return None


def _resolve(cls: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[Any], Any, Any]:
    """The part of ``loc`` that names fields and items, the annotation there and its
    ``FieldInfo`` (the rest of ``loc`` is a union member or a mapping key)."""
    annotation: Any = cls
    field = None
    path: list[Any] = []
    for part in loc:
        model = _model_in(annotation)
        if isinstance(part, str) and model is not None and part in model.model_fields:
            field = model.model_fields[part]
            annotation = field.annotation
        elif isinstance(part, int) and _item_type(annotation) is not None:
            annotation = _item_type(annotation)
        else:
            break
        path.append(part)
    return path, annotation, field


def _path(loc: tuple[Any, ...] | list[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _value_at(raw: Any, path: list[Any], fallback: Any) -> Any:
    value = raw
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return fallback
    return value


_NAMES = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "true/false values"),
    str: ("a string", "strings"),
    type(None): ("null", "nulls"),
}


def _describe(annotation: Any, plural: bool = False) -> str:
    members = _members(annotation)
    if len(members) > 1:
        return " or ".join(_describe(m, plural) for m in members)
    member = members[0]
    if member in _NAMES:
        return _NAMES[member][plural]
    if typing.get_origin(member) is Literal:
        return f"one of {list(typing.get_args(member))}"
    item = _item_type(member)
    if item is not None:
        return "lists" if plural else f"a list of {_describe(item, plural=True)}"
    origin = typing.get_origin(member) or member
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return "mappings" if plural else "a mapping of key: value pairs"
    if isinstance(member, type) and issubclass(member, BaseModel):
        keys = ", ".join(member.model_fields)
        return "mappings" if plural else f"a mapping with keys among {keys}"
    if member is Any:
        return "values" if plural else "a value"
    return getattr(member, "__name__", str(member))
