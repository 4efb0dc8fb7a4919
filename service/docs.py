"""The interactive API document (`/docs`) without the internet: Swagger UI's script, style sheet and icon are
served by the service itself from the copy the `fastapi-offline` package ships (Swagger UI 5, which reads
OpenAPI 3.1; the `swagger-ui-bundle` package's 4.15 cannot), under a Content-Security-Policy that allows
only them and the page's own initialising script (by its hash). ReDoc (a CDN script) is off."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}
ASSET_ROOT = Path(fastapi_offline.__file__).parent / "static"
PREFIX = "/docs/assets"


def docs_page(title: str) -> tuple[bytes, str]:
    """The page and its Content-Security-Policy (its one inline script allowed by hash)."""
    html = get_swagger_ui_html(openapi_url="/openapi.json", title=title,
                               swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
                               swagger_css_url=f"{PREFIX}/swagger-ui.css",
                               swagger_favicon_url=f"{PREFIX}/favicon.png").body
    hashes = [base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()
              for m in re.finditer(rb"<script>(.*?)</script>", bytes(html), re.S)]
    csp = ("default-src 'none'; script-src 'self' " + " ".join(f"'sha256-{h}'" for h in hashes) +
           "; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; "
           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return bytes(html), csp


def add_docs_routes(app: FastAPI) -> None:
    page, csp = docs_page(f"{app.title} - API")
    headers = {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @app.get(PREFIX + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:  # a fixed list: a name is never a path
            raise HTTPException(404, "no such asset")
        return FileResponse(ASSET_ROOT / name, media_type=ASSETS[name],
                            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})
