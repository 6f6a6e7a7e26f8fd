"""The dashboard: a static page (``web/``) served by the same process as the API, which it
calls from the browser with the token the user typed (see ``tickets`` for the stream).

Its one library, uPlot (charts), comes from the npm registry: ``make install`` runs
``npm ci --prefix autopilot/service/web``, and the page loads it from
``/dashboard/vendor/``, never from a CDN, so the page works offline. Without the built
assets ``/`` answers 503 with the command to run.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

WEB = Path(__file__).parent / "web"
_UPLOT = WEB / "node_modules" / "uplot" / "dist"
VENDOR = {
    "uPlot.iife.min.js": _UPLOT / "uPlot.iife.min.js",
    "uPlot.min.css": _UPLOT / "uPlot.min.css",
}
PAGE = {"app.js": WEB / "app.js", "app.css": WEB / "app.css"}
MISSING = """<!doctype html><meta charset="utf-8">
<title>train-autopilot: dashboard not built</title>
<h1>The dashboard's assets are not built</h1>
<p>{missing} is missing. Run <code>make install</code> (it runs
<code>npm ci --prefix autopilot/service/web</code>, which needs npm) and reload.
The HTTP API under <a href="/docs">/api/v1</a> works without them.</p>"""

router = APIRouter(include_in_schema=False)


def missing_assets() -> list[Path]:
    """The vendored files the page needs that are not there (``npm ci`` not run)."""
    return [path for path in VENDOR.values() if not path.is_file()]


@router.get("/")
def index() -> RedirectResponse:
    return RedirectResponse("/dashboard/")


@router.get("/dashboard/", response_model=None)
def page() -> FileResponse | HTMLResponse:
    """The page, or a 503 that says which command builds its assets."""
    missing = missing_assets()
    if missing:
        return HTMLResponse(MISSING.format(missing=missing[0]), status_code=503)
    return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-store"})


@router.get("/dashboard/{name}")
def asset(name: str) -> FileResponse:
    if name not in PAGE:
        raise HTTPException(status_code=404, detail=f"no dashboard file {name!r}")
    return FileResponse(PAGE[name], headers={"Cache-Control": "no-store"})


@router.get("/dashboard/vendor/{name}")
def vendor(name: str) -> FileResponse:
    path = VENDOR.get(name)
    if path is None or not path.is_file():
        raise HTTPException(
            status_code=404, detail=f"no vendored file {name!r}; run make install (npm ci)"
        )
    return FileResponse(path)
