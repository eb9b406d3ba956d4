"""Error bodies mapped to exception classes; what is retried, how often, and what is not."""

from __future__ import annotations

import logging

import httpx
import pytest

from infinity_rag import (
    AuthenticationError,
    InfinityClient,
    InfinityConnectionError,
    InfinityError,
    InfinityTimeoutError,
    InvalidRequestError,
    ModelCapabilityError,
    ModelNotFoundError,
    NotFoundError,
    OverloadedError,
    ServerError,
)
from infinity_rag._pool import RetryPolicy
from unit_tests.conftest import FAKE_URL, make_client
from unit_tests.fake_infinity import FakeInfinity, vector_for

NO_WAIT = RetryPolicy(max_retries=3, initial_delay=0.0)


def no_wait_client(fake: FakeInfinity, retries: int = 3, **kwargs: object) -> InfinityClient:
    client = make_client(fake, **kwargs)
    client.retry = RetryPolicy(max_retries=retries, initial_delay=0.0)
    return client


# --- what the server's error bodies become ---------------------------------------------------


def test_wrong_key_is_an_authentication_error(fake: FakeInfinity) -> None:
    fake.api_key = "right"
    with (
        make_client(fake, api_key="wrong-key-1234") as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        client.embed(["a"])
    assert caught.value.status_code == 401
    assert "INFINITY_API_KEY" in str(caught.value)
    assert "wrong-key-1234" not in str(caught.value)
    assert len(fake.requests) == 1  # never retried


def test_unknown_model_lists_the_served_ones(client: InfinityClient) -> None:
    with pytest.raises(ModelNotFoundError, match="Available model names") as caught:
        client.embed(["a"], model="nope")
    assert caught.value.status_code == 400
    assert isinstance(caught.value, InvalidRequestError)


def test_model_without_the_capability(client: InfinityClient, fake: FakeInfinity) -> None:
    with pytest.raises(ModelCapabilityError, match="does not support `rerank`"):
        client.rerank("q", ["a"], model="embedder", late_interaction=False)
    assert len(fake.requests) == 1


async def test_model_without_the_capability_async(client: InfinityClient) -> None:
    with pytest.raises(ModelCapabilityError):
        await client.aembed(["a"], model="reranker")


def test_validation_error_is_short_and_does_not_echo_the_input(fake: FakeInfinity) -> None:
    fake.max_items = 2
    secretish = "x" * 5000
    with make_client(fake) as client, pytest.raises(InvalidRequestError) as caught:
        client.embed([secretish, "b", "c"], batch_size=3)
    assert caught.value.status_code == 422
    assert "input: List should have at most 2 items" in str(caught.value)
    assert secretish not in str(caught.value)
    assert len(str(caught.value)) < 500


@pytest.mark.parametrize(
    ("status", "body", "kind", "text"),
    [
        (401, {"detail": "Unauthorized"}, AuthenticationError, "Unauthorized"),
        (403, {"detail": "Forbidden"}, AuthenticationError, "Forbidden"),
        (404, {"detail": "Not Found"}, NotFoundError, "url-prefix"),
        (400, {"error": {"message": "bad thing", "code": 400}}, InvalidRequestError, "bad thing"),
        (422, {"detail": [{"loc": ["body", "top_n"], "msg": "bad"}]}, InvalidRequestError, "top_n"),
        (429, {"error": {"message": "queue full", "code": 429}}, OverloadedError, "queue full"),
        (500, {"error": {"message": "boom", "code": 500}}, ServerError, "boom"),
        (502, "<html><body><h1>502 Bad Gateway</h1></body></html>", ServerError, "502 Bad Gateway"),
        (503, "", ServerError, "(empty body)"),
        (500, "Internal Server Error", ServerError, "Internal Server Error"),
    ],
)
def test_status_and_body_map_to_a_class(
    fake: FakeInfinity, status: int, body: object, kind: type, text: str
) -> None:
    fake.failures = [(status, body)] * 10
    with no_wait_client(fake, retries=0) as client, pytest.raises(kind) as caught:
        client.embed(["a"])
    assert caught.value.status_code == status
    assert text in str(caught.value)
    assert FAKE_URL in str(caught.value)
    assert "<h1>" not in str(caught.value)


# --- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_passing_errors_are_retried_and_the_result_is_complete(
    fake: FakeInfinity, status: int
) -> None:
    fake.failures = [(status, {"error": {"message": "later", "code": status}})] * 2
    with no_wait_client(fake) as client:
        result = client.embed(["a", "b"])
    assert result.embeddings == [vector_for("a"), vector_for("b")]
    assert len(fake.requests) == 3


async def test_passing_errors_are_retried_async(fake: FakeInfinity) -> None:
    fake.failures = [(429, {"error": {"message": "busy", "code": 429}})] * 3
    with no_wait_client(fake) as client:
        result = await client.arerank("q", ["a", "b"])
    assert len(result) == 2
    assert len(fake.requests) == 4


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"error": {"message": "Invalid model", "code": 400}}),
        (401, {"detail": "Unauthorized"}),
        (404, {"detail": "Not Found"}),
        (422, {"detail": [{"loc": ["body"], "msg": "bad"}]}),
    ],
)
def test_client_errors_are_never_retried(fake: FakeInfinity, status: int, body: object) -> None:
    fake.failures = [(status, body)] * 5
    with no_wait_client(fake) as client, pytest.raises(InfinityError):
        client.embed(["a"])
    assert len(fake.requests) == 1


def test_retries_give_up_after_max_retries(fake: FakeInfinity) -> None:
    fake.failures = [(503, "down")] * 10
    with no_wait_client(fake, retries=2) as client, pytest.raises(ServerError):
        client.embed(["a"])
    assert len(fake.requests) == 3


def test_retries_are_logged_without_the_key(
    fake: FakeInfinity, caplog: pytest.LogCaptureFixture
) -> None:
    fake.failures = [(429, {"error": {"message": "busy", "code": 429}})]
    with no_wait_client(fake, api_key="sk-hidden") as client, caplog.at_level(logging.DEBUG):
        client.embed(["a"])
    assert "retry 1 of 3" in caplog.text
    assert "sk-hidden" not in caplog.text


def flaky_transport(failures: list[Exception], fake: FakeInfinity) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop(0)
        return fake.handle(request)

    return handler  # type: ignore[return-value]


def test_connection_errors_are_retried(fake: FakeInfinity) -> None:
    errors = [httpx.ConnectError("refused"), httpx.RemoteProtocolError("truncated")]
    handler = flaky_transport(errors, fake)
    client = InfinityClient(
        base_url=FAKE_URL, http_client=httpx.Client(transport=httpx.MockTransport(handler))
    )
    client.retry = RetryPolicy(max_retries=2, initial_delay=0.0)
    assert client.embed(["a"]).embeddings == [vector_for("a")]


async def test_timeouts_are_retried_async(fake: FakeInfinity) -> None:
    errors = [httpx.ReadTimeout("slow")]
    handler = flaky_transport(errors, fake)
    client = InfinityClient(
        base_url=FAKE_URL,
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    client.retry = RetryPolicy(max_retries=1, initial_delay=0.0)
    assert (await client.aembed(["a"])).embeddings == [vector_for("a")]


def test_without_retries_a_connection_error_names_the_url(fake: FakeInfinity) -> None:
    handler = flaky_transport([httpx.ConnectError("refused")], fake)
    client = InfinityClient(
        base_url=FAKE_URL,
        max_retries=0,
        api_key="sk-not-shown",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with pytest.raises(InfinityConnectionError, match="cannot reach the Infinity server") as caught:
        client.embed(["a"])
    assert f"{FAKE_URL}/embeddings" in str(caught.value)
    assert "sk-not-shown" not in str(caught.value)


def test_a_timeout_is_its_own_class(fake: FakeInfinity) -> None:
    handler = flaky_transport([httpx.ReadTimeout("slow")], fake)
    client = InfinityClient(
        base_url=FAKE_URL,
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with pytest.raises(InfinityTimeoutError):
        client.embed(["a"])


def test_a_failed_chunk_fails_the_whole_call(fake: FakeInfinity) -> None:
    # Nothing half-returned: one chunk's permanent error is the call's error.
    fake.failures = [(200, {"data": []})]
    client = no_wait_client(fake, batch_size=1, max_concurrency=1)
    with pytest.raises(InfinityError):
        client.embed(["a", "b", "c"])


def test_backoff_grows_and_stays_capped() -> None:
    policy = RetryPolicy(max_retries=10, initial_delay=0.5, max_delay=8.0)
    error = OverloadedError("busy", status_code=429)
    delays = [policy.delay(n, error) for n in range(8)]
    assert all(d is not None for d in delays)
    assert 0.25 <= delays[0] <= 0.5  # type: ignore[operator]
    assert all(4.0 <= d <= 8.0 for d in delays[5:])  # type: ignore[operator]
    assert policy.delay(10, error) is None
    assert policy.delay(0, InvalidRequestError("no", status_code=400)) is None
