"""Resolve pluggable parts by name or accept a ready object (in the manner of PyG's resolver)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping


def normalize_name(name: str) -> str:
    """Lower-case a name and drop '-', '_' and spaces so that 'Grid_Pool' matches 'gridpool'."""
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def resolve(query, registry: Mapping[str, Callable], kind: str, base: type | None = None, **kwargs):
    """Return ``query`` if it is already an object of the right kind, else build it by name.

    Args:
        query: a name (looked up case- and underscore-insensitively in ``registry``), an instance
            of ``base``, or a class / callable to be called with ``**kwargs``.
        registry: name -> factory.
        kind: what is being resolved, for error messages (e.g. ``"proposal"``).
        base: optional base class; instances of it are returned unchanged.
        **kwargs: passed to the factory.
    """
    if base is not None and isinstance(query, base):
        return query
    if isinstance(query, str):
        table = {normalize_name(k): v for k, v in registry.items()}
        key = normalize_name(query)
        if key not in table:
            raise ValueError(f"unknown {kind} {query!r}; choose one of {sorted(registry)}")
        return table[key](**kwargs)
    if isinstance(query, type) or callable(query):
        return query(**kwargs)
    raise TypeError(f"`{kind}` must be a name (one of {sorted(registry)}) or a module/callable, "
                    f"got {type(query).__name__}")


class GlobalChoice:
    """A process-wide named setting (a backend): a checked setter, a getter and a ``with`` form."""

    def __init__(self, default: str, check: Callable[[str], object]):
        self.check, self.state = check, {"value": default}

    def set(self, name: str) -> None:
        """Check ``name`` and make it the current value."""
        self.check(name)
        self.state["value"] = name

    def get(self) -> str:
        """The current value."""
        return self.state["value"]

    @contextlib.contextmanager
    def use(self, name: str):
        """Set ``name`` inside a ``with`` block; the old value comes back on exit (errors too)."""
        old = self.state["value"]
        self.set(name)
        try:
            yield
        finally:
            self.state["value"] = old
