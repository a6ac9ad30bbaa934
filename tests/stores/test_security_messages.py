"""What a secured cluster's refusals become (issue 27): one line each, an exit code each.

The words the engines send are those a real secured OpenSearch 2.19.1 node sent
(tests/stores/opensearch/test_opensearch_secured.py runs against one): a 403 from the security
plugin names the action and the user; a HEAD request's 403 has no body; a wrong password is a
bare 401; a certificate from an unknown CA fails in the client's TLS handshake. Elasticsearch's
403 words are its documented ones.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from types import SimpleNamespace

import elastic_transport
import pytest
from opensearchpy import exceptions as client_errors
from opensearchpy.exceptions import SSLError

from tests.fake_opensearch import FakeCluster
from tests.opensearch_store_helpers import FP, corpus, make_store
from tests.stores.test_backends import ENV, cluster, index_cmd, invoke  # noqa: F401
from twinbert_search.errors import (
    BackendUnavailableError,
    CredentialsRejectedError,
    PermissionDeniedError,
    StoreError,
    UntrustedCertificateError,
)
from twinbert_search.stores.elasticsearch.connection import ERRORS as ES_ERRORS
from twinbert_search.stores.elasticsearch.connection import translate_errors as es_translate
from twinbert_search.stores.opensearch.connection import translate_errors

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "sample" / "corpus.jsonl"
URL = "https://search.example.com:9200"
VERIFY_FAILED = (
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer "
    "certificate (_ssl.c:1006)"
)


def test_each_refusal_has_an_exit_code_of_its_own() -> None:
    codes = [
        StoreError.exit_code,
        BackendUnavailableError.exit_code,
        CredentialsRejectedError.exit_code,
        PermissionDeniedError.exit_code,
        UntrustedCertificateError.exit_code,
    ]
    assert codes == [4, 5, 6, 7, 8]
    for kind in (CredentialsRejectedError, PermissionDeniedError, UntrustedCertificateError):
        assert issubclass(kind, StoreError) and not issubclass(kind, BackendUnavailableError)


def test_a_wrong_password_names_the_user_never_the_password() -> None:
    fake = FakeCluster()
    store = make_store(fake, url=URL, connection={"username": "reader", "password": "pw-9"})
    fake.fail_requests("indices.exists_alias", 401)
    with pytest.raises(CredentialsRejectedError) as rejected:
        store.info  # noqa: B018
    assert str(rejected.value).endswith(
        f"authentication failed: OpenSearch at {URL} rejected the credentials of user "
        "'reader' (check --username and OPENSEARCH_PASSWORD)"
    )
    assert "pw-9" not in str(rejected.value)
    anonymous = make_store(fake, url=URL)
    fake.fail_requests("indices.exists_alias", 401)
    with pytest.raises(CredentialsRejectedError, match="requires credentials"):
        anonymous.info  # noqa: B018


def test_permission_denied_names_the_user_and_the_action_their_roles_lack() -> None:
    fake = FakeCluster()
    store = make_store(fake, url=URL, connection={"username": "reader", "password": "pw"})
    docs, vectors = corpus(4)
    fake.deny("indices.put_index_template", "reader", "indices:admin/index_template/put")
    with pytest.raises(PermissionDeniedError) as denied:
        store.upsert(docs, vectors, model_fingerprint=FP)
    assert str(denied.value) == (
        f"put the index template {store.names.template}: permission denied for user 'reader' "
        "by OpenSearch: the user's roles do not grant indices:admin/index_template/put"
    )
    assert (denied.value.user, denied.value.action) == (
        "reader",
        "indices:admin/index_template/put",
    )


def test_a_bodiless_403_still_names_the_user() -> None:
    """HEAD requests (does the alias exist?) come back without a body to read."""
    fake = FakeCluster()
    store = make_store(fake, url=URL, connection={"username": "reader", "password": "pw"})
    fake.deny("indices.exists_alias", "reader", "indices:admin/aliases/exists")
    with pytest.raises(PermissionDeniedError) as denied:
        store.info  # noqa: B018
    assert str(denied.value).endswith(
        "permission denied for user 'reader' by OpenSearch: OpenSearch answered 403 Forbidden"
    )


def test_elasticsearch_403_words_are_read_too() -> None:
    said = (
        "action [indices:data/write/bulk[s]] is unauthorized for user [reader] with effective "
        "roles [viewer] on indices [docs-000001], this action is granted by the index "
        "privileges [create_doc,create,index,write,all]"
    )
    exc = SimpleNamespace(info={"error": {"type": "security_exception", "reason": said}})
    denied = ES_ERRORS.forbidden("bulk indexing into docs-000001", exc)
    assert str(denied) == (
        "bulk indexing into docs-000001: permission denied for user 'reader' by "
        "Elasticsearch: the user's roles do not grant indices:data/write/bulk[s] on docs-000001"
    )
    assert isinstance(denied, PermissionDeniedError)


def test_a_certificate_from_an_unknown_ca_is_untrusted_not_unreachable() -> None:
    cause = ssl.SSLCertVerificationError(1, VERIFY_FAILED)
    with (
        pytest.raises(UntrustedCertificateError) as untrusted,
        translate_errors(URL, "read the cluster status", "admin"),
    ):
        raise SSLError("N/A", VERIFY_FAILED, cause)  # as opensearch-py's urllib3 connection
    assert str(untrusted.value) == (
        f"read the cluster status: certificate not trusted: the TLS certificate of OpenSearch "
        f"at {URL} failed verification (unable to get local issuer certificate); pass "
        "--ca-certs (or OPENSEARCH_CA_CERTS) with the CA that signed it"
    )
    with (
        pytest.raises(UntrustedCertificateError, match="ELASTICSEARCH_CA_CERTS"),
        es_translate(URL, "count docs"),
    ):
        raise elastic_transport.TlsError(VERIFY_FAILED)  # as elastic-transport's urllib3 node
    mismatch = (
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: IP address mismatch, "
        "certificate is not valid for '127.0.0.2'. (_ssl.c:1006)"
    )
    with (
        pytest.raises(UntrustedCertificateError) as misnamed,
        translate_errors("https://127.0.0.2:9200", "count docs"),
    ):
        raise SSLError("N/A", mismatch, ssl.SSLCertVerificationError(1, mismatch))
    assert str(misnamed.value).endswith(
        "failed verification (IP address mismatch, certificate is not valid for '127.0.0.2'); "
        "connect with a host name or address the certificate names (--url)"
    )
    # other TLS failures (http spoken to a TLS port, say) are no certificate matter
    with (
        pytest.raises(BackendUnavailableError, match="cannot reach OpenSearch"),
        translate_errors(URL, "count docs"),
    ):
        raise SSLError("N/A", "[SSL: WRONG_VERSION_NUMBER] wrong version number", None)


def test_the_cli_prints_one_line_and_exits_with_the_refusal_s_code(
    cluster: FakeCluster,  # noqa: F811
    tiny_model: Path,
) -> None:
    cluster.deny("indices.put_index_template", "admin", "indices:admin/index_template/put")
    refused = invoke(index_cmd(CORPUS, tiny_model))
    assert refused.exit_code == PermissionDeniedError.exit_code, refused.output
    (line,) = refused.stderr.splitlines()
    assert line == (
        "error: put the index template sample: permission denied for user 'admin' by "
        "OpenSearch: the user's roles do not grant indices:admin/index_template/put"
    )
    cluster.fail_requests("indices.put_index_template", 401)
    rejected = invoke(index_cmd(CORPUS, tiny_model))
    assert rejected.exit_code == CredentialsRejectedError.exit_code, rejected.output
    assert rejected.stderr.count("\n") == 1 and "authentication failed" in rejected.stderr
    assert ENV["OPENSEARCH_PASSWORD"] not in refused.output + rejected.output


def test_plain_http_to_a_tls_only_cluster_says_to_use_https() -> None:
    closed = (
        "ConnectionError(('Connection aborted.', RemoteDisconnected('Remote end closed "
        "connection without response')))"
    )  # what a 2.19.1 node with the security plugin did to an http:// request
    with (
        pytest.raises(BackendUnavailableError) as refused,
        translate_errors("http://127.0.0.1:9200", "count docs"),
    ):
        raise client_errors.ConnectionError("N/A", closed, None)
    assert str(refused.value) == (
        "count docs: OpenSearch at http://127.0.0.1:9200 closed the connection without an "
        "answer, as a cluster that serves only TLS does to plain http; if it does, use an "
        "https:// URL (and --ca-certs)"
    )
