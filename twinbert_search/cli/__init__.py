"""The `twinbert-search` command line: the `main` group, error handling and registration.

Each command lives in a thin module of its own (index, search, tune, serve, train, recipe,
opensearch, bench, adapt) and takes its shared flags from `options`, so a flag means the same
thing on every command. Errors are mapped to exit codes in exactly one place (`CLI.invoke`): a
`TwinBertSearchError` prints one line `error: ...` on stderr and exits with its `exit_code`
(a `BulkIndexError` first prints one `failed: ...` line per failed document).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from twinbert_search import __version__

# Modules, not their commands, so `twinbert_search.cli.serve` stays the module.
from twinbert_search.cli import (
    adapt,
    bench,
    index,
    opensearch,
    recipe,
    search,
    serve,
    train,
    tune,
)
from twinbert_search.cli import models as models_cli
from twinbert_search.errors import BulkIndexError, TwinBertSearchError

__all__ = ["CLI", "main"]


class CLI(click.Group):
    """Maps the package's errors to one-line messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TwinBertSearchError as exc:
            if isinstance(exc, BulkIndexError):
                for item in exc.errors:
                    click.echo(f"failed: {_describe_failure(item)}", err=True)
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: work committed so far is kept; re-run to resume", err=True)
            sys.exit(130)


def _describe_failure(item: dict[str, Any]) -> str:
    """One failed bulk item on one line (items never hold the document's source)."""
    reason = " ".join(str(item.get("reason") or "").split())
    attempts = item.get("attempts", 1)
    return (
        f"{item.get('id')}: {item.get('status')} {item.get('type')}: {reason} "
        f"(index {item.get('index')}, {attempts} attempt{'s' if attempts != 1 else ''})"
    )


@click.group(cls=CLI)
@click.version_option(__version__, prog_name="twinbert-search")
def main() -> None:
    """TwinBERT retrieval: index documents, search with rerank, train and export models."""


main.add_command(index.index)
main.add_command(search.search)
main.add_command(search.eval_cmd)
main.add_command(tune.tune_hybrid)
main.add_command(index.delete)
main.add_command(index.quantize)
main.add_command(index.build_default)
main.add_command(opensearch.opensearch)
main.add_command(serve.serve)
main.add_command(recipe.recipe)
main.add_command(bench.bench)
main.add_command(train.teacher)
main.add_command(train.distill)
main.add_command(train.export)
main.add_command(adapt.adapt)
main.add_command(models_cli.models)
