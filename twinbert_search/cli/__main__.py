"""`python -m twinbert_search.cli`: the same as the `twinbert-search` command."""

from twinbert_search.cli import main

main()
