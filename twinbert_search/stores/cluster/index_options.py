"""What both engines' index descriptions share: space types, the common checks, the parser.

Each engine describes its vector field by one short string (`faiss:hnsw16:efc128:fp16:
innerproduct`, `elasticsearch:int8_hnsw16:efc128:innerproduct`) with its own tokens; both
carry the project's space types, shards and replicas, and parse a string the same way:
tokens in any order, each key set once, missing ones the defaults, overrides last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar

from twinbert_search.errors import ConfigurationError

SPACE_TYPES = ("innerproduct", "cosinesimil", "l2")

T = TypeVar("T")


def check_space_type(space_type: str) -> None:
    if space_type not in SPACE_TYPES:
        raise ConfigurationError(f"space type must be one of {SPACE_TYPES}, got {space_type!r}")


def check_layout(shards: int, replicas: int) -> None:
    if shards < 1 or replicas < 0:
        raise ConfigurationError("shards must be positive and replicas not negative")


def check_dimension(dim: int, maximum: int) -> None:
    if not 1 <= dim <= maximum:
        raise ConfigurationError(f"dimension must be between 1 and {maximum}, got {dim}")


def parse_description(
    cls: Callable[..., T],
    text: str,
    read_token: Callable[[str], Iterable[tuple[str, Any]]],
    overrides: dict[str, Any],
) -> T:
    """`cls` from a description: `read_token` gives each token's (key, value) pairs (none for
    a token to skip) or raises naming what it expected; `overrides` apply last."""
    values: dict[str, Any] = {}
    for raw in text.strip().lower().split(":"):
        token = raw.strip()
        if not token:
            continue
        for key, value in read_token(token):
            if key in values:
                raise ConfigurationError(f"index description {text!r} sets {key} twice")
            values[key] = value
    options = replace(cls(**values), **overrides)  # type: ignore[type-var]
    options.validate()  # type: ignore[attr-defined]
    return options
