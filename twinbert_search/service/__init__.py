"""The HTTP sidecar (`twinbert-search serve`): FastAPI over the Searcher, torch-free.

`create_app(ServiceConfig(...))` builds the app (`app`); `routes` holds the routes on their
routers, `schemas` the bodies, `errors` the one error-to-status mapping. Names are imported
lazily so that the CLI, which imports the config, does not pay for FastAPI on every command.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServiceConfig", "create_app", "load_searcher"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "load_searcher"):
        from twinbert_search.service import app

        return getattr(app, name)
    if name == "ServiceConfig":
        from twinbert_search.service.config import ServiceConfig

        return ServiceConfig
    raise AttributeError(name)
