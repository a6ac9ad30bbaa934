"""Which k-NN engines an OpenSearch cluster can run, and the `--ann` that fits it.

`lucene` is Java: every node with the k-NN plugin runs it. `faiss` is a native library that
the plugin loads the first time it builds a faiss graph; a k-NN plugin shipped without it
(the zip on Maven Central, which the test node is assembled from) accepts a faiss index and
then dies at its first refresh (UnsatisfiedLinkError). No API reports the library, and
loading it is what kills such a node, so nothing may probe by trying. The evidence is read
instead, from two requests that change nothing:

- `GET _plugins/_knn/stats`: `faiss_initialized` on a node means the library loaded there;
- `GET _nodes/plugins,jvm`: whether every node has the k-NN plugin, and whether its
  distribution bundles a JDK (`jvm.bundled_jdk`). OpenSearch's own builds (tar, Docker,
  RPM, Deb, the Windows zip) do, and ship k-NN with its native libraries; a build without
  one (the integ-test zip) gives no such assurance.

faiss counts as runnable when every node is one or the other. `--ann auto` (or none) is
then the usual `faiss:hnsw16:efc128:fp16:innerproduct`, else
`lucene:hnsw16:efc128:fp32:innerproduct`; an explicit faiss on a cluster without that
evidence, or any index on one without the k-NN plugin, is refused before anything is made.
A user without the cluster-monitor permission these requests need keeps the usual default.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.opensearch.assets import IndexOptions
from twinbert_search.stores.opensearch.connection import translate_errors

__all__ = ["LUCENE_DEFAULT", "ClusterEngines", "cluster_engines", "runnable_index_options"]

logger = logging.getLogger(__name__)

KNN_PLUGIN = "opensearch-knn"
LUCENE_DEFAULT = IndexOptions(engine="lucene", encoding="fp32")


@dataclass(frozen=True)
class ClusterEngines:
    """What a cluster's nodes can index with; `why` says how that is known, for messages."""

    knn_plugin: bool
    engines: frozenset[str]
    why: str

    @classmethod
    def read(cls, nodes: Mapping[str, Any], stats: Mapping[str, Any]) -> ClusterEngines:
        """From `GET _nodes/plugins,jvm` and `GET _plugins/_knn/stats` answers."""
        infos = nodes.get("nodes") or {}
        if not infos:
            return cls(False, frozenset(), "no node answered")
        without = [
            info.get("name", node_id)
            for node_id, info in infos.items()
            if KNN_PLUGIN not in {p.get("name") for p in info.get("plugins") or ()}
        ]
        if without:
            return cls(False, frozenset(), f"no k-NN plugin on {', '.join(sorted(without))}")
        loaded = {
            node_id
            for node_id, node_stats in (stats.get("nodes") or {}).items()
            if node_stats.get("faiss_initialized") is True
        }
        unproven = [
            info.get("name", node_id)
            for node_id, info in infos.items()
            if node_id not in loaded and (info.get("jvm") or {}).get("bundled_jdk") is not True
        ]
        if unproven:
            why = (
                f"{', '.join(sorted(unproven))}: no bundled JDK and faiss never loaded, "
                "as on a node assembled from Maven Central"
            )
            return cls(True, frozenset({"lucene"}), why)
        return cls(True, frozenset({"faiss", "lucene"}), "OpenSearch's own builds or faiss loaded")


def cluster_engines(client: Any, safe_url: str) -> ClusterEngines | None:
    """The cluster's engines; None when the user may not read node information."""
    from opensearchpy.exceptions import AuthorizationException

    with translate_errors(safe_url, "read which k-NN engines the cluster runs"):
        try:
            nodes = client.nodes.info(
                metric="plugins,jvm",
                filter_path="nodes.*.name,nodes.*.plugins.name,nodes.*.jvm.bundled_jdk",
            )
            engines = ClusterEngines.read(nodes, {})
            if not engines.knn_plugin or "faiss" in engines.engines:
                return engines  # no k-NN stats to read, or no need
            stats = client.plugins.knn.stats(
                stat="faiss_initialized", filter_path="nodes.*.faiss_initialized"
            )
        except AuthorizationException:
            logger.info("may not read %s's nodes; --ann auto keeps the usual default", safe_url)
            return None
    return ClusterEngines.read(nodes, stats)


def runnable_index_options(
    given: IndexOptions | None, engines: ClusterEngines | None, where: str
) -> IndexOptions:
    """`given` if the cluster can run it, the default that it can run when None (auto).

    Raises ConfigurationError, before anything is created, when the cluster cannot index
    vectors at all or cannot run the engine asked for.
    """
    if engines is None:  # not allowed to look: the usual default, or what was asked
        return given or IndexOptions()
    if not engines.knn_plugin:
        raise ConfigurationError(
            f"{where} cannot index vectors: {engines.why} (install opensearch-knn on every node)"
        )
    if given is None:
        chosen = IndexOptions() if "faiss" in engines.engines else LUCENE_DEFAULT
        if chosen.engine != IndexOptions().engine:
            logger.info(
                "--ann auto: %s on %s (faiss needs the k-NN native library; %s)",
                chosen.describe(),
                where,
                engines.why,
            )
        return chosen
    if given.engine not in engines.engines:
        raise ConfigurationError(
            f"--ann {given.describe()}: {where} may lack the {given.engine} native library "
            f"({engines.why}); a {given.engine} index would stop such a node at its first "
            f"refresh. Use --ann {LUCENE_DEFAULT.describe()} (or its byte encoding), "
            "or --ann auto"
        )
    return given
