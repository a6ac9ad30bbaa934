"""The service's log configuration: the project's lines at the chosen level, the cluster
clients' own records only at `--log-level debug`.

opensearch-py (loggers `opensearch`, `opensearchpy`) logs every request at INFO (twice: the
request and its curl equivalent) and every failed connection
attempt (four per request with its retries) as a WARNING with a traceback; the
Elasticsearch client (`elastic_transport`) does the same, and urllib3 warns per discarded
connection. While a cluster is down that is thousands of lines a minute that all say one
thing, so below debug these loggers pass only ERROR; the service says it once itself
(`outage.StoreHealth`: one line when the store stops answering, one when it answers again).

One urllib3 warning is a configuration problem rather than noise: "Connection pool is full,
discarding connection" means more threads talk to the cluster than the client keeps
connections for. It still shows, once per process.
"""

from __future__ import annotations

import logging

__all__ = ["CLIENT_LOGGERS", "FORMAT", "LOG_LEVELS", "configure_logging"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
FORMAT = "%(levelname)s:     %(name)s: %(message)s"  # uvicorn's layout
# opensearch-py logs to `opensearch` and `opensearchpy` (`.trace`: each request as a curl
# line at INFO; `.helpers`), the Elasticsearch client to `elastic_transport` and `elasticsearch`
CLIENT_LOGGERS = ("opensearch", "opensearchpy", "elastic_transport", "elasticsearch", "urllib3")
POOL_FULL = "Connection pool is full"


class _PoolFullOnce(logging.Filter):
    """Passes urllib3's first "connection pool is full" warning and its errors, nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.shown = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if self.shown or not str(record.msg).startswith(POOL_FULL):
            return False
        self.shown = True
        return True


def configure_logging(level: str) -> None:
    """The root logger at `level` (one of LOG_LEVELS); cluster clients quiet unless "debug".

    A stderr handler is added only when the root has none (a host application's or a test
    runner's handlers are kept); a second call sets the levels again.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level must be one of {LOG_LEVELS}, got {level!r}")
    logging.basicConfig(format=FORMAT)
    logging.getLogger().setLevel(numeric)
    debug = numeric <= logging.DEBUG
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.ERROR)
    pool = logging.getLogger("urllib3.connectionpool")
    for old in [f for f in pool.filters if isinstance(f, _PoolFullOnce)]:
        pool.removeFilter(old)
    pool.setLevel(logging.NOTSET if debug else logging.WARNING)
    if not debug:
        pool.addFilter(_PoolFullOnce())
