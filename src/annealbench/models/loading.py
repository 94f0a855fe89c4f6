"""Users' models by import path: ``package.module:factory`` to the factory, and back.

:func:`load_factory` imports the module and walks the attribute path (``mod:Class.build``
works), raising :class:`~annealbench.errors.ConfigError` with a message that names the path
and the fix for each way it can go wrong. :func:`reference` is its inverse: the import path
that gives back the same callable, or None. Importing this module does not import torch.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from annealbench.errors import ConfigError

__all__ = [
    "SHAPE_RULE",
    "a_type",
    "describe_error",
    "is_import_path",
    "load_factory",
    "reference",
]

#: What a factory is, for the messages.
SHAPE_RULE = "factory(input_shape, num_classes) -> torch.nn.Module"
EXAMPLE = "mynets:build"
MAX_LISTED = 20


def is_import_path(name: object) -> bool:
    """Whether ``name`` is meant as an import path (it has a colon); not whether it is valid."""
    return isinstance(name, str) and ":" in name


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters), for one-line reports."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > 300:
        text = text[:299] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def a_type(obj: object) -> str:
    """``an int``, ``a dict``, ``a mypkg.Thing``: the type of ``obj`` for a message."""
    kind = type(obj)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _split(ref: str) -> tuple[str, list[str]]:
    """(module, attribute path) of ``module:attr.attr``; ConfigError for anything else."""
    module, colon, attrs = ref.partition(":")
    if not (colon and _dotted(module) and _dotted(attrs)):
        raise ConfigError(
            f"model {ref!r} is not a valid import path: write package.module:factory "
            f"(e.g. {EXAMPLE}, or mynets:Net.build), where {SHAPE_RULE}"
        )
    return module, attrs.split(".")


def _is_prefix(missing: str | None, module: str) -> bool:
    """Whether the module reported missing is ``module`` itself or one of its packages."""
    return missing is not None and (module == missing or module.startswith(missing + "."))


def _import_module(module: str) -> Any:
    """``importlib.import_module``, leaving torch's CPU RNG as it was: a module that builds
    something at import must not shift the first model built after a seed."""
    torch = sys.modules.get("torch")
    if torch is None or module in sys.modules:
        return importlib.import_module(module)
    with torch.random.fork_rng(devices=[]):
        return importlib.import_module(module)


def _import_once(ref: str, module: str) -> tuple[Any, ModuleNotFoundError | None]:
    """The module, or the ModuleNotFoundError that says it (or its package) does not exist;
    ConfigError when the module exists but raises on import."""
    try:
        return _import_module(module), None
    except ModuleNotFoundError as exc:
        if _is_prefix(exc.name, module):
            return None, exc
        error: Exception = exc
    except Exception as exc:  # the user's module raised: any exception at all
        error = exc
    raise ConfigError(
        f"model {ref!r}: importing module {module!r} raised {describe_error(error)}; "
        "fix the module so that it imports"
    ) from error


def _import(ref: str, module: str) -> Any:
    """Import ``module``; a missing top-level module is tried once more from the working
    folder (the ``annealbench`` command, unlike ``python -m``, does not put it on sys.path)."""
    found, missing = _import_once(ref, module)
    cwd = os.getcwd()
    top = module.partition(".")[0]
    if missing is not None and missing.name == top and cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
        importlib.invalidate_caches()
        found, missing = _import_once(ref, module)
        if missing is not None:
            sys.path.remove(cwd)
    if missing is None:
        return found
    if missing.name == top:
        raise ConfigError(
            f"model {ref!r}: cannot import module {module!r}: there is no module named "
            f"{top!r} on the Python path; put the folder that holds {top}.py (or the package "
            f"folder {top}/) on PYTHONPATH, or run from it"
        ) from None
    parent = sys.modules.get((missing.name or module).rpartition(".")[0])
    where = getattr(parent, "__path__", None)
    raise ConfigError(
        f"model {ref!r}: cannot import module {module!r}: there is no module {missing.name!r}"
        + (f" (its package is at {list(where)[0]})" if where else "")
        + "; check the spelling of the path"
    ) from None


def _public_callables(obj: Any) -> str:
    """The public callables of ``obj``; for a module, those it defines (else all of them)."""
    names = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
    own = [n for n in names if getattr(getattr(obj, n), "__module__", None) == obj.__name__]
    chosen = own if isinstance(obj, type(sys)) and own else names
    if not chosen:
        return "it has none"
    more = len(chosen) - MAX_LISTED
    return (
        "its public callables: "
        + ", ".join(chosen[:MAX_LISTED])
        + (f", … ({more} more)" if more > 0 else "")
    )


def load_factory(ref: str) -> Callable[..., Any]:
    """The callable an import path ``package.module:attr[.attr...]`` names.

    ConfigError for a malformed path, a module that cannot be found or raises on import, a
    missing attribute (the message lists what there is), or something that is not callable.
    """
    module_name, attrs = _split(ref)
    obj = _import(ref, module_name)
    for index, attr in enumerate(attrs):
        owner = module_name if index == 0 else f"{module_name}:{'.'.join(attrs[:index])}"
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            kind = "module" if index == 0 else "object"
            raise ConfigError(
                f"model {ref!r}: {kind} {owner!r} has no attribute {attr!r}; "
                f"{_public_callables(obj)}"
            ) from None
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        raise ConfigError(
            f"model {ref!r} is a model instance ({type(obj).__name__}), not a factory: each run "
            f"builds its own, so give a {SHAPE_RULE} (a function, or the model's class)"
        )
    if not callable(obj):
        raise ConfigError(
            f"model {ref!r} is not callable: it is {a_type(obj)}; it must name a {SHAPE_RULE}"
        )
    return obj


def reference(factory: object) -> str | None:
    """The import path ``module:qualname`` of ``factory`` if importing it gives back the same
    object; None for lambdas, local functions, partials, instances, or anything unreachable.

    A function of the main script is ``__main__:name``: multiprocessing's spawned children
    import the main script again, so the path works there (not in a Ray worker).
    """
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(qualname, str)):
        return None
    if module == "__mp_main__":  # the main script, as a spawned child imports it
        module = "__main__"
    if not (_dotted(module) and _dotted(qualname)):  # <lambda>, <locals>
        return None
    obj: Any = sys.modules.get(module)
    for attr in qualname.split("."):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
    try:
        same = obj is factory or bool(obj == factory)  # a bound classmethod is made anew
    except Exception:  # an __eq__ that does not answer a bool
        same = False
    return f"{module}:{qualname}" if same else None
