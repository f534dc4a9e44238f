"""The web console: static pages served by the gateway; every piece of data they show comes from the API
with the user's key (the pages themselves hold none). No CDN: everything it loads is in this folder."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)
STATIC = resources.files("genfoundry.gateway.console") / "static"
# The pages load only their own files and talk only to this gateway.
HEADERS = {"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                      "frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


@router.get("/console")
async def console_page():
    return FileResponse(str(STATIC / "index.html"), headers=HEADERS)


@router.get("/")
async def root():
    return RedirectResponse("/console")


class _StaticWithHeaders(StaticFiles):
    """The console's scripts and styles carry the page's CSP too (no framing, nothing from elsewhere)."""

    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers.update(HEADERS)
        return response


def static_files() -> StaticFiles:
    return _StaticWithHeaders(directory=str(STATIC))
