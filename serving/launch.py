"""How the servers are launched: uvicorn's fastest event loop and HTTP parser when installed.

uvloop and httptools (uvicorn's ``standard`` extra) roughly halve the framework's cost per
request against asyncio and h11. ``autotune serve``, ``serve-models`` and the serving
benchmark's bare ceiling endpoint all take their options from :func:`uvicorn_options`, so that
every comparison runs on the same configuration. Light on purpose: no heavy imports.
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["uvicorn_options", "describe"]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def uvicorn_options() -> dict[str, Any]:
    """``loop`` and ``http`` for ``uvicorn.run``: uvloop and httptools when importable, else
    uvicorn's pure-Python asyncio and h11 (still correct, slower)."""
    return {
        "loop": "uvloop" if _installed("uvloop") else "asyncio",
        "http": "httptools" if _installed("httptools") else "h11",
    }


def describe() -> str:
    """One line naming the configuration (for benchmark results)."""
    o = uvicorn_options()
    return f"uvicorn, loop={o['loop']}, http={o['http']}"
