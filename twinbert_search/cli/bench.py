"""`twinbert-search bench`: run the benchmark suite (benchmarks/run.py of the source repository).

The suite lives outside the package, beside the tests, so an installed package does not carry
it: this command finds it and hands over the arguments (`twinbert-search bench --quick
--sizes 10000`; `--help` of the suite lists them). It looks, in order, at `--suite PATH`, the
TWINBERT_SEARCH_BENCHMARKS environment variable, ./benchmarks/run.py, and the checkout the
package is imported from. The main CLI registers it with one `add_command(bench)`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from twinbert_search.errors import ConfigurationError

__all__ = ["ENV_SUITE", "bench", "suite_script"]

ENV_SUITE = "TWINBERT_SEARCH_BENCHMARKS"
SCRIPT = Path("benchmarks") / "run.py"
PACKAGE_CHECKOUT = Path(__file__).resolve().parents[2]
"""The folder above the package: a source checkout when the package is imported from one."""


def _as_script(path: Path) -> Path:
    """A benchmarks/run.py as given, or the run.py inside a benchmarks folder."""
    return path / "run.py" if path.is_dir() else path


def suite_script(suite: str | Path | None = None) -> Path:
    """The suite's run.py: `suite`, then $TWINBERT_SEARCH_BENCHMARKS, ./benchmarks, the checkout.

    A path given explicitly (`suite` or the environment variable) must hold the suite: it is
    not passed over for another one. Raises ConfigurationError, naming every place tried.
    """
    for explicit, source in ((suite, "--suite"), (os.environ.get(ENV_SUITE), ENV_SUITE)):
        if explicit:
            script = _as_script(Path(explicit).expanduser())
            if not script.is_file():
                raise ConfigurationError(f"{source}: no benchmark suite at {script}")
            return script.resolve()
    tried = [Path.cwd() / SCRIPT, PACKAGE_CHECKOUT / SCRIPT]
    for script in tried:
        if script.is_file():
            return script.resolve()
    raise ConfigurationError(
        f"no benchmark suite found (tried --suite, {ENV_SUITE}, "
        f"{', '.join(str(path) for path in dict.fromkeys(tried))}): it ships with the source "
        "repository; run from a checkout or point --suite at its benchmarks/run.py"
    )


@click.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.option(
    "--suite",
    type=click.Path(path_type=Path),
    default=None,
    help=f"benchmarks/run.py, or its folder (default: ${ENV_SUITE}, ./benchmarks, the checkout).",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(suite: Path | None, args: tuple[str, ...]) -> None:
    """Measure encoding, rerank, search, indexing and memory; write BENCHMARKS.md."""
    script = suite_script(suite)
    done = subprocess.run([sys.executable, str(script), *args], cwd=script.parents[1], check=False)
    if done.returncode:
        raise SystemExit(done.returncode)
