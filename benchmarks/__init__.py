"""The twinbert-search benchmark suite (outside the package): `python benchmarks/run.py`."""
