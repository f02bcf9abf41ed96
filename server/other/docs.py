"""API docs served without any CDN: Swagger UI at ``/docs``, ReDoc at ``/redoc``, ``/`` redirects.

The Swagger UI and ReDoc assets come from the ``fastapi-offline`` package (it bundles them)
or from ``server/static/`` when placed there; without either, ``/docs`` still works as a
plain page that lists the operations from ``/openapi.json`` with inline script only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/static-offline-docs"
LOCAL_STATIC = Path(__file__).resolve().parent.parent / "static"
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")

_FALLBACK_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}} code{{background:#eee;padding:2px 4px}}</style></head>
<body><h1>{title}</h1><p>OpenAPI schema: <a href="{openapi_url}">{openapi_url}</a></p><ul id="ops"></ul>
<script>
fetch("{openapi_url}").then(r => r.json()).then(spec => {{
  const list = document.getElementById("ops");
  for (const [path, ops] of Object.entries(spec.paths)) {{
    for (const [method, op] of Object.entries(ops)) {{
      const item = document.createElement("li");
      item.innerHTML = "<code>" + method.toUpperCase() + " " + path + "</code> " + (op.summary || "");
      list.appendChild(item);
    }}
  }}
}});
</script></body></html>"""


def asset_folder() -> Path | None:
    """The first folder holding the Swagger UI files: server/static/, then the fastapi-offline package."""
    candidates = [LOCAL_STATIC]
    spec = importlib.util.find_spec("fastapi_offline")
    if spec and spec.origin:
        candidates.append(Path(spec.origin).parent / "static")
    for folder in candidates:
        if all((folder / name).is_file() for name in SWAGGER_FILES):
            return folder
    return None


def install_offline_docs(app: FastAPI) -> None:
    """Register /, /docs, /docs/oauth2-redirect and /redoc; create the app with docs_url=None, redoc_url=None."""
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title
    folder = asset_folder()
    if folder is not None:
        app.mount(STATIC_URL, StaticFiles(directory=folder), name="static-offline-docs")
    favicon = f"{STATIC_URL}/favicon.png" if folder and (folder / "favicon.png").is_file() else ""

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(url="/docs")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        if folder is None:
            return HTMLResponse(_FALLBACK_PAGE.format(title=title, openapi_url=openapi_url))
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=favicon,
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        if folder is None or not (folder / "redoc.standalone.js").is_file():
            return HTMLResponse(_FALLBACK_PAGE.format(title=title, openapi_url=openapi_url))
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )
