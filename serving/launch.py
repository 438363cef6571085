"""How the servers are launched: uvicorn's fastest event loop and HTTP parser when installed.

uvloop and httptools (uvicorn's ``standard`` extra) roughly halve the framework's cost per
request against asyncio and h11; sending each response in one write saves a further 20-40% on
small requests, and a model server's predictions skip the ASGI cycle altogether
(:mod:`serving.httpproto`). ``autotune serve``, ``serve-models`` and the serving benchmark's bare
ceiling endpoint all take their options from :func:`uvicorn_options`, so that every comparison
runs on the same configuration. Light on purpose: no heavy imports.
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["uvicorn_options", "describe"]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def uvicorn_options() -> dict[str, Any]:
    """``loop`` and ``http`` for ``uvicorn.run``: uvloop, and httptools through
    :class:`serving.httpproto.PredictHttpToolsProtocol`, when importable; else uvicorn's
    pure-Python asyncio and h11 (still correct, slower)."""
    http: Any = "h11"
    if _installed("httptools"):
        from serving.httpproto import CoalescingHttpToolsProtocol, PredictHttpToolsProtocol

        # The prediction protocol overrides uvicorn's hook that starts a request's ASGI task
        # (uvicorn 0.3x and later); without it, the coalescing protocol alone.
        http = (
            PredictHttpToolsProtocol
            if PredictHttpToolsProtocol.fits_uvicorn()
            else CoalescingHttpToolsProtocol
        )
    return {"loop": "uvloop" if _installed("uvloop") else "asyncio", "http": http}


def describe() -> str:
    """One line naming the configuration (for benchmark results)."""
    o = uvicorn_options()
    http = o["http"] if isinstance(o["http"], str) else f"httptools ({o['http'].__name__})"
    return f"uvicorn, loop={o['loop']}, http={http}"
