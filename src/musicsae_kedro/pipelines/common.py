"""Helpers shared by the pipeline definitions: nodes with keywords bound at registration,
and one namespaced copy of a pipeline per model or per site (and sweep point)."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kedro.pipeline import Node, Pipeline, node, pipeline

from musicsae_kedro.sae.sweep import SweepPoint
from musicsae_kedro.sites import ModelSites


def bind(func: Callable[..., Any], **bound_kwargs: Any) -> Callable[..., Any]:
    """``func`` with keyword arguments fixed at registration (e.g. the model key).

    Unlike ``functools.partial`` the result is a plain function that keeps what Kedro
    inspects: the name (node names, kedro-viz), the source (kedro-viz, via ``__wrapped__``),
    generator-ness (streaming saves), the signature without the bound keywords, and the
    type hints Kedro resolves in ``func``'s module (it validates ``params:`` inputs
    against them). Node modules import heavy library classes for type checking only
    (registering pipelines must not import torch), so hints that do not resolve in the
    module are left out of the wrapper's.
    """
    if inspect.isgeneratorfunction(func):

        def bound(*args: Any) -> Any:
            yield from func(*args, **bound_kwargs)
    else:

        def bound(*args: Any) -> Any:
            return func(*args, **bound_kwargs)

    # Rebuild with func's globals so string annotations resolve where they were written.
    wrapper = types.FunctionType(
        bound.__code__, func.__globals__, func.__name__, None, bound.__closure__
    )
    wrapper.__qualname__ = func.__qualname__
    wrapper.__module__ = func.__module__
    wrapper.__doc__ = func.__doc__
    wrapper.__wrapped__ = func  # kedro-viz shows the node's own source
    wrapper.__annotations__ = {
        k: v
        for k, v in func.__annotations__.items()
        if k not in bound_kwargs and _resolves(v, func.__globals__)
    }
    signature = inspect.signature(func)
    wrapper.__signature__ = signature.replace(
        parameters=[p for name, p in signature.parameters.items() if name not in bound_kwargs]
    )
    return wrapper


def _resolves(annotation: Any, namespace: dict[str, Any]) -> bool:
    if not isinstance(annotation, str):
        return True
    try:
        eval(annotation, namespace)  # what typing.get_type_hints does with it
    except Exception:
        return False
    return True


def task(
    func: Callable[..., Any],
    inputs: str | list[str] | None,
    outputs: str | list[str] | None,
    *,
    name: str,
    **bound_kwargs: Any,
) -> Node:
    """A Kedro node of ``bind(func, **bound_kwargs)``."""
    return node(bind(func, **bound_kwargs), inputs, outputs, name=name)


@dataclass(frozen=True)
class Scope:
    """One namespaced copy of a pipeline: a model, or one site of it (and a sweep point).

    Namespaces: ``<model>`` for a model, ``<model>.l<layer>`` for a site and
    ``<model>.l<layer>.<point>`` for a sweep point of it.
    """

    model: ModelSites
    layer: int | None = None
    point: SweepPoint = field(default_factory=lambda: SweepPoint(""))

    @property
    def key(self) -> str:
        return self.model.key

    @property
    def site(self) -> str:
        if self.layer is None:
            raise ValueError(f"scope {self.key} is a model, not a site")
        return self.model.site(self.layer)

    @property
    def namespace(self) -> str:
        if self.layer is None:
            return self.key
        return f"{self.site}.{self.point.name}" if self.point.name else self.site

    @property
    def params(self) -> str:
        """The model's parameter block."""
        return f"params:models.{self.key}"

    def links(self) -> dict[str, str]:
        """Inputs a site's pipeline reads from other namespaces: the site's activations
        (shared by its sweep points) and the model's codec tokens."""
        if self.layer is None:
            return {}
        return {"activations": f"{self.site}.activations", "codes": f"{self.key}.codes"}


def per_model(models: Iterable[ModelSites]) -> list[Scope]:
    return [Scope(m) for m in models]


def per_site(
    models: Iterable[ModelSites], points: Iterable[SweepPoint] | None = None
) -> list[Scope]:
    """Every configured site, times every sweep point (one unnamed point without a sweep)."""
    points = list(points or [SweepPoint("")])
    return [Scope(m, layer, point) for m in models for layer in m.layers for point in points]


def namespaced(
    scopes: Iterable[Scope],
    build: Callable[[Scope], Pipeline | list[Node]],
    shared: Iterable[str] = (),
) -> Pipeline:
    """``build(scope)`` once per scope, in the scope's namespace.

    Parameters and the ``shared`` datasets (e.g. ``tracks``) keep their global names;
    a site's ``activations`` and ``codes`` are linked to the site's and the model's
    (``Scope.links``); every other dataset is namespaced.
    """
    parts = []
    for scope in scopes:
        part = Pipeline(build(scope))
        free = part.inputs()
        outside = {name: name for name in shared if name in free}
        outside |= {name: target for name, target in scope.links().items() if name in free}
        parameters = {name for name in free if name.startswith("params:")}
        parts.append(
            pipeline(part, namespace=scope.namespace, inputs=outside, parameters=parameters)
        )
    return sum(parts, Pipeline([]))
