"""The web dashboard served at ``/`` of ``autotune serve``.

Static HTML, JavaScript and CSS from this package (plain JS, no build step) with a plotly.js
bundle of only the traces the figures use vendored next to them (``static/README.md``, built by
``scripts/build_plotly_bundle.sh``) and the full plotly.js served from the installed plotly
package for the few figures that need more (3-D), so it works offline: no CDN. The page names
its assets with their content's hash (``?v=``), so browsers keep them for a year without asking
again and fetch them anew when they change. Pages: studies; a study
(figures, a trial table filtered, sorted and paged on the server, a trial's details; redrawn
while the study runs); models (from the registry's ``/v1/models`` when the app mounts it);
serving metrics; feature groups.

``mount_dashboard(app)`` adds it to an app (``autotune.api.app.create_app`` does). The figures
come from ``GET /v1/studies/{study}/plots/{kind}`` (:mod:`autotune.api.routes.plots`), which
the app mounts as one of its routers.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException

from autotune.dashboard._api import router as api_router
from autotune.plots._registry import warm_up

__all__ = ["mount_dashboard", "router", "STATIC_DIR", "PLOTLY_BUNDLE", "plotly_js_path"]

STATIC_DIR = Path(__file__).parent / "static"
# Assets change only with the package: browsers may keep them for a day (an hour for our own,
# which change more often during development). Asked for with their current hash (the page's
# own URLs), they never change: a year, and no revalidation.
_PLOTLY_CACHE = "public, max-age=86400"
_ASSET_CACHE = "public, max-age=3600"
_IMMUTABLE = "public, max-age=31536000, immutable"
PLOTLY_BUNDLE = "plotly-dashboard.min.js"
_ASSETS = {
    "app.js": ("text/javascript", _ASSET_CACHE),
    "style.css": ("text/css", _ASSET_CACHE),
    PLOTLY_BUNDLE: ("text/javascript", _PLOTLY_CACHE),
}
_ASSET_URL = re.compile(r'"/dashboard/static/([\w.-]+)"')

router = APIRouter(include_in_schema=False)
# Imported in the background when the dashboard is mounted: plotly and scikit-learn take seconds
# to import on a loaded machine, which the first study page would otherwise wait for.
_WARM_MODULES = ("plotly.graph_objects", "plotly.subplots", "sklearn.ensemble")


def plotly_js_path() -> Path:
    """plotly.min.js as shipped inside the installed plotly package."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(
            f"plotly.min.js is not at {path}; reinstall plotly (pip install --force-reinstall "
            "plotly)"
        )
    return path


class _Hashes:
    """Each asset's content hash and the page naming them, read again when a file changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[tuple[int, int], ...] | None = None
        self._hashes: dict[str, str] = {}
        self._index = ""

    def current(self) -> tuple[dict[str, str], str]:
        files = [STATIC_DIR / n for n in (*_ASSETS, "index.html")]
        key = tuple((st.st_mtime_ns, st.st_size) for st in (f.stat() for f in files))
        with self._lock:
            if key != self._key:
                self._hashes = {
                    n: hashlib.sha256((STATIC_DIR / n).read_bytes()).hexdigest()[:16]
                    for n in _ASSETS
                }
                page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
                self._index = _ASSET_URL.sub(self._versioned, page)
                self._key = key
            return self._hashes, self._index

    def _versioned(self, m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in self._hashes:
            return m.group(0)
        return f'"/dashboard/static/{name}?v={self._hashes[name]}"'


_hashes = _Hashes()


@router.get("/")
def index() -> HTMLResponse:
    _, page = _hashes.current()
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


@router.get("/dashboard")
def dashboard_redirect() -> RedirectResponse:
    return RedirectResponse("/")


@router.get("/dashboard/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(
        plotly_js_path(), media_type="text/javascript", headers={"Cache-Control": _PLOTLY_CACHE}
    )


@router.get("/dashboard/static/{name}")
def asset(name: str, request: Request) -> FileResponse:
    found = _ASSETS.get(name)
    if found is None:  # only the files listed: no path ever reaches the file system
        raise HTTPException(404)
    media, cache = found
    hashes, _ = _hashes.current()
    if request.query_params.get("v") == hashes[name]:
        cache = _IMMUTABLE
    return FileResponse(STATIC_DIR / name, media_type=media, headers={"Cache-Control": cache})


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/`` of ``app`` and its JSON under ``/dashboard/api``.

    The app must also mount :mod:`autotune.api.routes.plots` under ``/v1`` (``create_app``
    does); the models, serving and feature pages use those APIs when the app has them.
    """
    app.include_router(api_router)
    app.include_router(router)
    warm_up(_WARM_MODULES)
