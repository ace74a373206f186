"""Helpers shared by the pipeline definitions."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any


def bind(func: Callable[..., Any], **bound_kwargs: Any) -> Callable[..., Any]:
    """``func`` with keyword arguments fixed at registration (e.g. the model key).

    Unlike ``functools.partial`` the result is a plain function that keeps what Kedro
    inspects: the name (node names, kedro-viz), generator-ness (streaming saves), the
    signature without the bound keywords, and type hints resolvable in ``func``'s module.
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
    wrapper.__annotations__ = {
        k: v for k, v in func.__annotations__.items() if k not in bound_kwargs
    }
    signature = inspect.signature(func)
    wrapper.__signature__ = signature.replace(
        parameters=[p for name, p in signature.parameters.items() if name not in bound_kwargs]
    )
    return wrapper
