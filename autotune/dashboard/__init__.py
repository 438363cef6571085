"""The web dashboard served at ``/`` of ``autotune serve``.

Static HTML, JavaScript and CSS from this package (plain JS, no build step) with plotly.js's
cartesian bundle vendored next to them (``static/README.md``: a third of the full plotly.js,
every trace the figures use) and the full plotly.js served from the installed plotly package for
the few figures that need more (3-D), so it works offline: no CDN. Pages: studies; a study
(figures, a trial table filtered, sorted and paged on the server, a trial's details; redrawn
while the study runs); models (from the registry's ``/v1/models`` when the app mounts it);
serving metrics; feature groups.

``mount_dashboard(app)`` adds it to an app (``autotune.api.app.create_app`` does). The figures
come from ``GET /v1/studies/{study}/plots/{kind}`` (:mod:`autotune.api.routes.plots`), which
the app mounts as one of its routers.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.exceptions import HTTPException

from autotune.dashboard._api import router as api_router
from autotune.plots._registry import warm_up

__all__ = ["mount_dashboard", "router", "STATIC_DIR", "plotly_js_path"]

STATIC_DIR = Path(__file__).parent / "static"
# Assets change only with the package: browsers may keep them for a day (an hour for our own,
# which change more often during development).
_PLOTLY_CACHE = "public, max-age=86400"
_ASSET_CACHE = "public, max-age=3600"
_ASSETS = {
    "app.js": ("text/javascript", _ASSET_CACHE),
    "style.css": ("text/css", _ASSET_CACHE),
    "plotly-cartesian.min.js": ("text/javascript", _PLOTLY_CACHE),
}

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


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/dashboard")
def dashboard_redirect() -> RedirectResponse:
    return RedirectResponse("/")


@router.get("/dashboard/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(
        plotly_js_path(), media_type="text/javascript", headers={"Cache-Control": _PLOTLY_CACHE}
    )


@router.get("/dashboard/static/{name}")
def asset(name: str) -> FileResponse:
    found = _ASSETS.get(name)
    if found is None:  # only the files listed: no path ever reaches the file system
        raise HTTPException(404)
    media, cache = found
    return FileResponse(STATIC_DIR / name, media_type=media, headers={"Cache-Control": cache})


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/`` of ``app`` and its JSON under ``/dashboard/api``.

    The app must also mount :mod:`autotune.api.routes.plots` under ``/v1`` (``create_app``
    does); the models, serving and feature pages use those APIs when the app has them.
    """
    app.include_router(api_router)
    app.include_router(router)
    warm_up(_WARM_MODULES)
