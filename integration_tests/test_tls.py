"""TLS: verification is on by default, and a private CA can be trusted explicitly.

The fault proxy terminates TLS on loopback with a certificate signed by a throwaway CA made
here with the ``openssl`` command line (its certificate names ``127.0.0.1`` only), and relays
to the session's Infinity server in plain HTTP.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infinity_rag import InfinityClient, InfinityConnectionError
from infinity_rag._pool import RetryPolicy
from integration_tests.conftest import ServerInfo
from integration_tests.fault_proxy import FaultProxy


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test CA")
    folder = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=infinity-rag test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=folder,
    )  # fmt: skip
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "subjectKeyIdentifier=hash\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
        cwd=folder,
    )  # fmt: skip
    return Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")


@pytest.fixture(scope="module")
def tls_proxy(infinity_server: ServerInfo, certificates: Certificates) -> Iterator[FaultProxy]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.cert, certificates.key)
    with FaultProxy(infinity_server.url, tls=context) as proxy:
        yield proxy


def tls_client(proxy: FaultProxy, server: ServerInfo, **kwargs: object) -> InfinityClient:
    client = InfinityClient(base_url=proxy.url, api_key=server.api_key, **kwargs)  # type: ignore[arg-type]
    client.retry = RetryPolicy(max_retries=client.retry.max_retries, initial_delay=0.01)
    return client


def test_the_url_is_https(tls_proxy: FaultProxy) -> None:
    assert tls_proxy.url.startswith("https://127.0.0.1:")


def test_verification_is_on_by_default(tls_proxy: FaultProxy, infinity_server: ServerInfo) -> None:
    client = tls_client(tls_proxy, infinity_server, max_retries=0)
    assert client.verify is True
    with client, pytest.raises(InfinityConnectionError) as caught:
        client.embed(["x"], model=infinity_server.embed_model)
    message = str(caught.value)
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert tls_proxy.url in message
    assert infinity_server.api_key is None or infinity_server.api_key not in message


async def test_verification_is_on_by_default_async(
    tls_proxy: FaultProxy, infinity_server: ServerInfo
) -> None:
    async with tls_client(tls_proxy, infinity_server, max_retries=0) as client:
        with pytest.raises(InfinityConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.aembed(["x"], model=infinity_server.embed_model)


def test_nothing_is_sent_to_an_unverified_server(
    tls_proxy: FaultProxy, infinity_server: ServerInfo
) -> None:
    tls_proxy.reset()
    with (
        tls_client(tls_proxy, infinity_server, max_retries=1) as client,
        pytest.raises(InfinityConnectionError),
    ):
        client.embed(["secret text"], model=infinity_server.embed_model)
    assert tls_proxy.requests == []  # the handshake failed before any byte of the request


def test_a_ca_bundle_path_is_trusted(
    tls_proxy: FaultProxy, infinity_server: ServerInfo, certificates: Certificates
) -> None:
    with (
        warnings.catch_warnings(),
        tls_client(tls_proxy, infinity_server, verify=str(certificates.ca)) as client,
    ):
        # httpx 0.28 deprecates verify=<str>: tolerated here, see the next test.
        warnings.simplefilter("ignore", DeprecationWarning)
        result = client.embed(["over TLS"], model=infinity_server.embed_model)
    assert len(result.embeddings[0]) == infinity_server.dim


def test_a_ca_bundle_path_works_without_deprecation_warnings_and_as_a_path(
    tls_proxy: FaultProxy, infinity_server: ServerInfo, certificates: Certificates
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for verify in (str(certificates.ca), certificates.ca):
            with tls_client(tls_proxy, infinity_server, verify=verify, max_retries=0) as client:
                client.embed(["over TLS"], model=infinity_server.embed_model)


def test_an_ssl_context_is_trusted(
    tls_proxy: FaultProxy, infinity_server: ServerInfo, certificates: Certificates
) -> None:
    context = ssl.create_default_context(cafile=str(certificates.ca))
    with tls_client(tls_proxy, infinity_server, verify=context) as client:
        assert client.embed(["x"], model=infinity_server.embed_model).embeddings


async def test_an_ssl_context_is_trusted_async(
    tls_proxy: FaultProxy, infinity_server: ServerInfo, certificates: Certificates
) -> None:
    context = ssl.create_default_context(cafile=str(certificates.ca))
    async with tls_client(tls_proxy, infinity_server, verify=context) as client:
        assert (await client.aembed(["x"], model=infinity_server.embed_model)).embeddings


def test_ssl_cert_file_is_honoured_with_the_default_verify(
    tls_proxy: FaultProxy,
    infinity_server: ServerInfo,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # httpx reads SSL_CERT_FILE / SSL_CERT_DIR when verify=True: the usual way to trust a
    # company CA without changing code.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca))
    with tls_client(tls_proxy, infinity_server) as client:
        assert client.embed(["x"], model=infinity_server.embed_model).embeddings


def test_a_certificate_for_another_host_is_refused_even_from_a_trusted_ca(
    tls_proxy: FaultProxy, infinity_server: ServerInfo, certificates: Certificates
) -> None:
    context = ssl.create_default_context(cafile=str(certificates.ca))
    assert tls_proxy.port is not None
    client = InfinityClient(
        base_url=f"https://localhost:{tls_proxy.port}",  # the certificate names 127.0.0.1 only
        api_key=infinity_server.api_key,
        verify=context,
        max_retries=0,
    )
    with (
        client,
        pytest.raises(InfinityConnectionError, match=r"[Hh]ostname mismatch|doesn.t match"),
    ):
        client.embed(["x"], model=infinity_server.embed_model)


def test_verify_false_skips_verification(
    tls_proxy: FaultProxy, infinity_server: ServerInfo
) -> None:
    with tls_client(tls_proxy, infinity_server, verify=False) as client:
        assert client.embed(["x"], model=infinity_server.embed_model).embeddings


def test_a_certificate_failure_is_not_retried(
    tls_proxy: FaultProxy, infinity_server: ServerInfo, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level("WARNING", logger="infinity_rag"),
        tls_client(tls_proxy, infinity_server, max_retries=2) as client,
        pytest.raises(InfinityConnectionError),
    ):
        client.embed(["x"], model=infinity_server.embed_model)
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


def test_health_follows_verify(
    tls_proxy: FaultProxy, infinity_server: ServerInfo, certificates: Certificates
) -> None:
    context = ssl.create_default_context(cafile=str(certificates.ca))
    with tls_client(tls_proxy, infinity_server, verify=context) as client:
        assert client.health() is True
    with (
        tls_client(tls_proxy, infinity_server) as client,
        pytest.raises(InfinityConnectionError),
    ):
        client.health()


# --- the framework classes ----------------------------------------------------------------------


def test_framework_classes_verify_by_default(
    tls_proxy: FaultProxy, infinity_server: ServerInfo
) -> None:
    from infinity_rag.langchain import InfinityEmbeddings
    from infinity_rag.llama_index import InfinityEmbedding

    connection = {"base_url": tls_proxy.url, "api_key": infinity_server.api_key, "max_retries": 0}
    with pytest.raises(InfinityConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        InfinityEmbeddings(model=infinity_server.embed_model, **connection).embed_query("x")
    with pytest.raises(InfinityConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        InfinityEmbedding(model_name=infinity_server.embed_model, **connection).get_query_embedding(
            "x"
        )


def test_framework_classes_trust_a_private_ca_through_their_http_clients(
    tls_proxy: FaultProxy, infinity_server: ServerInfo, certificates: Certificates
) -> None:
    import httpx
    from llama_index.core.schema import NodeWithScore, TextNode

    from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank
    from infinity_rag.llama_index import InfinityEmbedding
    from infinity_rag.llama_index import InfinityRerank as LlamaRerank

    context = ssl.create_default_context(cafile=str(certificates.ca))
    connection = {"base_url": tls_proxy.url, "api_key": infinity_server.api_key}
    lc = InfinityEmbeddings(
        model=infinity_server.embed_model,
        http_client=httpx.Client(verify=context),
        http_async_client=httpx.AsyncClient(verify=context),
        **connection,
    )
    assert len(lc.embed_query("x")) == infinity_server.dim
    assert len(asyncio.run(lc.aembed_query("x"))) == infinity_server.dim
    li = InfinityEmbedding(
        model_name=infinity_server.embed_model,
        http_client=httpx.Client(verify=context),
        async_http_client=httpx.AsyncClient(verify=context),
        **connection,
    )
    assert len(li.get_query_embedding("x")) == infinity_server.dim
    # Or one InfinityClient with verify=, shared by every class.
    shared = InfinityClient(base_url=tls_proxy.url, api_key=infinity_server.api_key, verify=context)
    assert InfinityRerank(model=infinity_server.rerank_model, client=shared).rerank(["a"], "q")
    assert LlamaRerank(model=infinity_server.rerank_model, client=shared).postprocess_nodes(
        [NodeWithScore(node=TextNode(text="a"))], query_str="q"
    )
