"""Plot kinds by name: a registry with a duplicate check, so the REST route and the dashboard
list the kinds without an if/elif chain."""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autotune.errors import ValidationError
from autotune.models import Study, Trial

__all__ = ["PlotKind", "register", "plot_kinds", "get_kind", "make_figure", "warm_up"]


@dataclass(frozen=True)
class PlotKind:
    """A named figure: its function, a title, which studies it applies to and its options."""

    name: str
    fn: Callable[..., Any]
    title: str
    applies: Callable[[Study], bool]
    options: tuple[str, ...]


_KINDS: dict[str, PlotKind] = {}
# Modules whose import registers the kinds (imported on first lookup: plotly loads lazily).
_MODULES = (
    "autotune.plots._history",
    "autotune.plots._parcoords",
    "autotune.plots._params",
    "autotune.plots._importance",
    "autotune.plots._pareto",
    "autotune.plots._curves",
)


def _always(study: Study) -> bool:
    return True


def register(
    name: str, *, title: str, applies: Callable[[Study], bool] = _always
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a figure function ``fn(study, trials, **options)`` under ``name``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _KINDS and _KINDS[name].fn is not fn:
            raise ValueError(f"plot kind {name!r} is already registered by {_KINDS[name].fn}")
        sig = inspect.signature(fn)
        options = tuple(
            p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
        )
        _KINDS[name] = PlotKind(name=name, fn=fn, title=title, applies=applies, options=options)
        return fn

    return deco


_loaded = False


def _load() -> None:
    global _loaded
    if not _loaded:
        for m in _MODULES:
            importlib.import_module(m)
        _loaded = True


def _order(kind: PlotKind) -> tuple[int, int]:
    # The listing order is the modules' order and each module's own, whichever module some
    # other code happened to import first (and so register first).
    module = kind.fn.__module__
    rank = _MODULES.index(module) if module in _MODULES else len(_MODULES)
    return rank, kind.fn.__code__.co_firstlineno


def plot_kinds(study: Study | None = None) -> list[str]:
    """Every kind, or those that apply to ``study`` (Pareto only with several objectives...)."""
    _load()
    kinds = sorted(_KINDS.values(), key=_order)
    return [k.name for k in kinds if study is None or k.applies(study)]


def get_kind(kind: str) -> PlotKind:
    """The registered kind.

    Raises:
        ValidationError: no kind of that name (the allowed ones in ``details.allowed``).
    """
    _load()
    found = _KINDS.get(kind)
    if found is None:
        allowed = plot_kinds()
        raise ValidationError(
            f"unknown plot kind {kind!r}; choose one of {allowed}",
            field="kind",
            details={"allowed": allowed},
        )
    return found


_logger = logging.getLogger("autotune.plots")
_warming: threading.Event | None = None
_warm_lock = threading.Lock()


def _warm(modules: Sequence[str], done: threading.Event) -> None:
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as e:  # the figure that needs it reports the error when asked
                _logger.warning("could not import %s ahead of time: %s", name, e)
    finally:
        done.set()


def warm_up(modules: Sequence[str]) -> None:
    """Import ``modules`` (plotly, scikit-learn: seconds on a loaded machine) in a background
    thread, once per process; figures wait for it to finish before they are made.

    They must wait: plotly looks pandas up in ``sys.modules`` without the import lock, so a
    figure made while the thread is importing pandas (through scikit-learn) would see a
    half-initialised module.
    """
    global _warming
    with _warm_lock:
        if _warming is not None:
            return
        _warming = threading.Event()
        threading.Thread(
            target=_warm, args=(tuple(modules), _warming), name="autotune-plots-warm", daemon=True
        ).start()


def make_figure(kind: str, study: Study, trials: Sequence[Trial], **options: Any) -> Any:
    """The ``kind`` figure of ``study``; options the kind does not take are refused.

    Raises:
        ValidationError: an unknown kind, an option the kind does not take, or a bad option.
    """
    if _warming is not None:
        _warming.wait()
    k = get_kind(kind)
    extra = sorted(set(options) - set(k.options))
    if extra:
        raise ValidationError(
            f"plot {kind!r} takes no option {extra[0]!r}; its options are {list(k.options)}",
            field=extra[0],
            details={"allowed": list(k.options)},
        )
    return k.fn(study, trials, **options)
