"""Every flag that more than one command takes, declared once.

A flag has one name, type and parameter name on every command, so `--model` or `--backend`
cannot drift apart between commands. Where a command reads a flag its own way (a training
`--batch-size` counts queries, `export --model` is a saved model to re-export) it passes its
own help or default to the same factory. Bundles (`backend_options`, `model_options`,
`corpus_options`, `student_options`) list their flags in the order `--help` shows them.
Counts are `COUNT` (0 or a negative is a usage error at parse time, before any model loads),
and progress bars have one flag, `--progress/--no-progress`, on by default.

The cluster connection flags carry the names of each engine's `connection.OPTION_NAMES`, so a
command hands them on as `**kwargs` to `open_store`, `open_searcher` or the service config.
They are declared once (`connection_options`): the `opensearch` commands read OPENSEARCH_*
through click; commands with --backend leave the variables to the chosen backend's store.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from twinbert_search.errors import ConfigurationError, InputError
from twinbert_search.manifest import CrossingConfig
from twinbert_search.stores.elasticsearch import ENV_API_KEY as ES_ENV_API_KEY
from twinbert_search.stores.factory import BACKENDS, EMBEDDED

ENV_PREFIX = "OPENSEARCH"  # the `opensearch` commands' variables: OPENSEARCH_URL, ...

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

DIR = click.Path(path_type=Path, file_okay=False)
"""A directory path; existence is checked by the library, which names the path in its error."""

COUNT = click.IntRange(min=1)
"""A count that must be positive: 0 or a negative is a usage error naming the flag."""

COUNT_OR_NONE = click.IntRange(min=0)
"""A count where 0 means none (pseudo-queries, validation queries); a negative is an error."""


def stack(*decorators: Callable[[Any], Any]) -> Callable[[F], F]:
    """Several option decorators as one; the first listed is the first in `--help`."""

    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


# --- where the vectors live ---------------------------------------------------------------------

BACKEND_HELP = (
    "Where the vectors live: an embedded store directory, or an OpenSearch or Elasticsearch "
    "cluster."
)
INDEX_DIR_HELP = "Embedded store directory (needed by --backend embedded)."


def backend_option(help: str = BACKEND_HELP) -> Decorator:
    return click.option(
        "--backend", type=click.Choice(BACKENDS), default=EMBEDDED, show_default=True, help=help
    )


def index_dir_option(*, required: bool = False, help: str = INDEX_DIR_HELP) -> Decorator:
    """--index-dir: optional beside --backend, required where only the embedded store goes."""
    extra: dict[str, Any] = {"required": True} if required else {"default": None}
    return click.option(
        "--index-dir", type=click.Path(file_okay=False, path_type=Path), help=help, **extra
    )


def connection_options(env_prefix: str | None) -> Decorator:
    """Connection and target flags of a cluster; `env_prefix` ("OPENSEARCH") names the
    variables click reads for a command that talks to one engine only.

    Without a prefix (commands that take --backend) click reads no variable: the chosen
    backend's store falls back to its own (OPENSEARCH_URL or ELASTICSEARCH_URL, ...), so one
    engine's credentials never reach the other. --password is never echoed or shown.
    """

    def env(key: str) -> dict[str, Any]:
        return {"envvar": f"{env_prefix}_{key}", "show_envvar": True} if env_prefix else {}

    prefix = env_prefix or "OPENSEARCH_URL or $ELASTICSEARCH"
    password = f"{env_prefix}_PASSWORD" if env_prefix else "the backend's <ENGINE>_PASSWORD"
    verify: dict[str, Any] = (
        {"default": True, "show_default": True} if env_prefix else {"default": None}
    )
    return stack(
        click.option(
            "--url",
            default=None,
            help="Cluster URL, e.g. https://localhost:9200; several nodes comma-separated"
            + ("." if env_prefix else f" (default: ${prefix}_URL, by --backend)."),
            **env("URL"),
        ),
        click.option("--index", default=None, help="Concrete index name."),
        click.option(
            "--alias",
            default=None,
            help="Alias searched and moved by blue/green rebuilds (indices <alias>-000001...).",
        ),
        click.option("--username", default=None, **env("USERNAME")),
        click.option(
            "--password",
            default=None,
            show_default=False,
            help=f"Basic-auth password; prefer {password} (flags show up in `ps`).",
            **env("PASSWORD"),
        ),
        click.option(
            "--ca-certs",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="CA bundle (PEM) to verify the cluster's TLS certificate.",
            **env("CA_CERTS"),
        ),
        click.option(
            "--verify-certs/--no-verify-certs",
            help="Verify TLS certificates (default: on; turn off only for local demo clusters).",
            **verify,
            **env("VERIFY_CERTS"),
        ),
        click.option(
            "--timeout", type=float, default=30.0, show_default=True, help="Request timeout (s)."
        ),
    )


opensearch_options = connection_options(ENV_PREFIX)
"""The connection flags of the `opensearch` commands, with OPENSEARCH_* variables."""

es_api_key_option = click.option(
    "--es-api-key",
    default=None,
    show_default=False,
    help=f"Elasticsearch API key (the encoded id:key), instead of a password; prefer "
    f"{ES_ENV_API_KEY} (flags show up in `ps`).",
)

cluster_options = stack(connection_options(None), es_api_key_option)
"""The connection flags of a command that takes --backend: either engine's, no variables read
by click (the store reads its engine's), plus Elasticsearch's --es-api-key."""

backend_options = stack(backend_option(), index_dir_option(), cluster_options)
"""--backend, the embedded store's --index-dir and the clusters' connection flags."""


def ann_option(default: str | None = None, help: str | None = None) -> Decorator:
    return click.option("--ann", default=default, show_default=default is not None, help=help)


layout_options = stack(
    click.option(
        "--shards",
        type=COUNT,
        default=None,
        help="Primary shards of the indices it creates (clusters; default 1).",
    ),
    click.option(
        "--replicas",
        type=COUNT_OR_NONE,
        default=None,
        help="Replicas per shard of the indices it creates (clusters; default 1).",
    ),
)
"""--shards and --replicas: how a cluster lays out the indices a command creates."""


def model_id_option(help: str) -> Decorator:
    """--model-id: an ML Commons model id (`opensearch register-model` prints it)."""
    return click.option("--model-id", default=None, help=help)


# --- the model ----------------------------------------------------------------------------------

MODEL_HELP = "Exported model directory (default: MiniLM-based TwinBERT, built once)."


def model_option(help: str = MODEL_HELP, *, directory: bool = False) -> Decorator:
    """--model; `directory` refuses a file at parse time (a saved model to re-export)."""
    return click.option(
        "--model",
        type=DIR if directory else click.Path(path_type=Path),
        default=None,
        help=help,
    )


def int8_option(help: str = "Use the int8 ONNX graphs.", *, negatable: bool = False) -> Decorator:
    """--int8 as a flag, or `negatable` as --int8/--no-int8 on by default (distill's export)."""
    if negatable:
        return click.option("--int8/--no-int8", default=True, show_default=True, help=help)
    return click.option("--int8", is_flag=True, help=help)


threads_option = click.option(
    "--threads", type=COUNT, default=None, help="ONNX Runtime intra-op threads."
)

model_options = stack(model_option(), int8_option(), threads_option)
"""--model, --int8 and --threads: the model the runtime loads, as every search command takes it."""


# --- output -------------------------------------------------------------------------------------

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
progress_option = click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Progress bars."
)
"""The one progress flag of every command: on by default, `--no-progress` turns it off."""


def force_option(help: str) -> Decorator:
    return click.option("--force", is_flag=True, help=help)


# --- reading a corpus ---------------------------------------------------------------------------


def _split_fields(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    return tuple(field.strip() for field in value.split(",") if field.strip())


corpus_options = stack(
    click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "tsv"]), default="auto"),
    click.option("--id-field", default="_id", show_default=True),
    click.option(
        "--text-fields",
        default="title,text",
        show_default=True,
        help="Comma-separated.",
        callback=_split_fields,
    ),
)
"""--format, --id-field and --text-fields (given to the command as a tuple of names)."""


def batch_size_option(default: int, help: str | None = None) -> Decorator:
    return click.option("--batch-size", type=COUNT, default=default, show_default=True, help=help)


# --- search -------------------------------------------------------------------------------------

k_option = click.option("-k", "k", type=COUNT, default=10, show_default=True)


def candidates_option(default: int = 100, help: str | None = None) -> Decorator:
    """--candidates: how many recall candidates the crossing layer reranks (training: scores)."""
    return click.option("--candidates", type=COUNT, default=default, show_default=True, help=help)


def hybrid_option(help: str | None = None) -> Decorator:
    return click.option("--hybrid", is_flag=True, help=help)


def hybrid_fusion_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--hybrid-fusion and --hybrid-bm25-weight, given to the command as one `hybrid_fusion`
    (a `HybridFusion`, or None: the model's, or the engine's reciprocal rank where it fuses)."""
    command = click.option(
        "--hybrid-bm25-weight",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="With --hybrid-fusion: BM25's weight against kNN's 1.  [default: 1]",
    )(command)
    command = click.option(
        "--hybrid-fusion",
        type=click.Choice(["rrf", "zscore"]),
        default=None,
        help="Fuse --hybrid recall here by this method instead of the model's (or the "
        "engine's reciprocal rank): rrf, or zscore (each list's scores z-scored over the "
        "list, summed with weights).",
    )(command)

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        method = kwargs.pop("hybrid_fusion")
        weight = kwargs.pop("hybrid_bm25_weight")
        if method is None and weight is not None:
            raise ConfigurationError("--hybrid-bm25-weight needs --hybrid-fusion rrf|zscore")
        from twinbert_search.search.fusion import HybridFusion

        fusion = None if method is None else HybridFusion(method, bm25=weight or 1.0)
        return command(*args, hybrid_fusion=fusion, **kwargs)

    return wrapper


lexical_weight_option = click.option(
    "--lexical-weight",
    type=click.FloatRange(min=0),
    default=None,
    help="Fuse BM25 into the rerank with this weight (default: the model's tuned weight, "
    "if any; 0: off).",
)


def _parse_filters(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, list[str]] | None:
    """Repeated FIELD=VALUE into {field: [values]} (a field given twice matches either)."""
    filters: dict[str, list[str]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--filter expects FIELD=VALUE, got {item!r}", field="--filter")
        filters.setdefault(key, []).append(value)
    return filters or None


filter_option = click.option(
    "--filter",
    "filters",
    multiple=True,
    callback=_parse_filters,
    help="FIELD=VALUE on metadata; repeatable.",
)
"""--filter, given to the command as {field: [values]} or None."""


# --- training -----------------------------------------------------------------------------------


def data_option(help: str = "BEIR folder (qrels/train.tsv).") -> Decorator:
    return click.option("--data", type=DIR, required=True, help=help)


def out_option(help: str, *, required: bool = True) -> Decorator:
    extra: dict[str, Any] = {"required": True} if required else {"default": None}
    return click.option("--out", type=DIR, help=help, **extra)


def checkpoint_option(help: str) -> Decorator:
    return click.option("--checkpoint", type=DIR, default=None, help=help)


def steps_option(default: int = 1000) -> Decorator:
    return click.option("--steps", type=COUNT, default=default, show_default=True)


def lr_option(default: float) -> Decorator:
    return click.option("--lr", type=float, default=default, show_default=True)


def seed_option(default: int | None = 0) -> Decorator:
    return click.option("--seed", type=int, default=default, show_default=default is not None)


def pseudo_queries_option(default: int | None = 0) -> Decorator:
    return click.option(
        "--pseudo-queries", type=COUNT_OR_NONE, default=default, show_default=default is not None
    )


def validation_queries_option(default: int | None = 50) -> Decorator:
    return click.option(
        "--validation-queries",
        type=COUNT_OR_NONE,
        default=default,
        show_default=default is not None,
        help="Training queries held out for validation: at most this many, and at most 10% "
        "of them (SciFact's 809: 81).",
    )


def pooling_option(
    default: str,
    choices: tuple[str, ...] = ("mean", "weighted", "cls"),
    *,
    checkpoints_own: bool = False,
) -> Decorator:
    """--pooling; `checkpoints_own`: the command defaults to the checkpoint's recorded pooling."""
    own = "Default: the checkpoint's own where `models to-torch` recorded it, else this."
    return click.option(
        "--pooling",
        type=click.Choice(list(choices)),
        default=default,
        show_default=True,
        help=own if checkpoints_own else None,
    )


resume_option = click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Continue from OUT/checkpoint when it exists.",
)

student_options = stack(
    click.option(
        "--crossing",
        type=click.Choice(["cosine", "residual"]),
        default="cosine",
        show_default=True,
    ),
    click.option(
        "--combine",
        type=click.Choice(["max", "concat", "mul"]),
        default="max",
        show_default=True,
        help="How the residual crossing joins query and document vectors.",
    ),
    click.option(
        "--hidden",
        type=COUNT,
        default=CrossingConfig.hidden,
        show_default=True,
        help="Hidden size of the residual crossing (its rerank cost grows with it).",
    ),
    click.option(
        "--num-layers", type=COUNT, default=None, help="Keep only the first N transformer layers."
    ),
    click.option("--max-query-length", type=COUNT, default=64, show_default=True),
    click.option("--max-doc-length", type=COUNT, default=256, show_default=True),
)
"""The student's shape, shared by `distill` and `export --out` (in this order)."""
