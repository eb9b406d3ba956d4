"""The Haystack components through ``FakeInfinity`` (httpx.MockTransport): no socket is opened.

What they send, what they return (new documents, in order, the caller's untouched), their
checks before any request, errors, and their saved form (the key only as its variable).
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from haystack import Document, Pipeline
from haystack.core.errors import DeserializationError
from haystack.utils import Secret

from infinity_rag import InfinityClient, InfinityError, ServerError, VectorKindError
from infinity_rag.haystack import (
    InfinityDocumentEmbedder,
    InfinityDocumentImageEmbedder,
    InfinityRanker,
    InfinityTextEmbedder,
)
from unit_tests.conftest import FAKE_URL, make_client
from unit_tests.fake_infinity import FakeInfinity, score_for, vector_for

KEY = "hs-secret-key-1f2e3d"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a0d7a1a70000000049454e44ae426082"
)
QUERY = "which planet is red"
TEXTS = [
    "mars is the red planet",
    "jupiter is the largest planet",
    "bread needs an oven",
    "venus is hot",
    "the red sea is salty",
]


def docs() -> list[Document]:
    return [
        Document(content=text, meta={"position": i, "title": f"T{i}", "nested": {"n": i}})
        for i, text in enumerate(TEXTS)
    ]


def inputs(fake: FakeInfinity, route: str = "embeddings") -> list[list[str]]:
    """What each request to ``route`` carried (texts or documents), in order."""
    return [
        json.loads(r.content).get("input", json.loads(r.content).get("documents"))
        for r in fake.requests
        if r.url.path.endswith(route)
    ]


# --- InfinityTextEmbedder --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_text_embedder_returns_the_servers_vector_and_usage(fake: FakeInfinity, mode: str) -> None:
    embedder = InfinityTextEmbedder(
        "embedder", prefix="query: ", suffix="!", client=make_client(fake), dimensions=3
    )
    result = (
        embedder.run("red planet")
        if mode == "sync"
        else asyncio.run(embedder.run_async(text="red planet"))
    )
    assert result["embedding"] == vector_for("query: red planet!")[:3]
    assert result["meta"] == {
        "model": "embedder",
        "usage": {"prompt_tokens": len("query: red planet!"), "total_tokens": 18},
    }
    (body,) = fake.bodies
    assert body["input"] == ["query: red planet!"]
    assert body["model"] == "embedder"
    assert body["dimensions"] == 3
    # The client's first request to a model asks for JSON floats (to learn its vectors'
    # shape); later ones use the component's encoding.
    assert embedder.run("again")["embedding"] == vector_for("query: again!")[:3]
    assert fake.bodies[-1]["encoding_format"] == "base64"


@pytest.mark.parametrize("value", [["a", "b"], [Document(content="a")], None, 3])
def test_text_embedder_refuses_what_is_not_a_string(fake: FakeInfinity, value: object) -> None:
    embedder = InfinityTextEmbedder("embedder", client=make_client(fake))
    with pytest.raises(TypeError, match="InfinityDocumentEmbedder"):
        embedder.run(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="InfinityDocumentEmbedder"):
        asyncio.run(embedder.run_async(value))  # type: ignore[arg-type]
    assert fake.requests == []


def test_a_multi_vector_model_is_refused_by_name(fake: FakeInfinity) -> None:
    fake.models["colbert"] = ["embed"]
    fake.multi_vector = {"colbert"}
    embedder = InfinityTextEmbedder("colbert", client=make_client(fake))
    with pytest.raises(VectorKindError, match="InfinityTextEmbedder gives one float vector"):
        embedder.run("a question")


# --- InfinityDocumentEmbedder ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_document_embedder_returns_new_documents_in_order(fake: FakeInfinity, mode: str) -> None:
    # The fake answers each batch in reverse order: the client must put them back.
    originals = docs()
    before = copy.deepcopy(originals)
    embedder = InfinityDocumentEmbedder(
        "embedder", client=make_client(fake), batch_size=2, progress_bar=False
    )
    result = (
        embedder.run(originals)
        if mode == "sync"
        else asyncio.run(embedder.run_async(documents=originals))
    )
    out = result["documents"]
    assert [d.embedding for d in out] == [vector_for(t) for t in TEXTS]
    assert [d.id for d in out] == [d.id for d in originals]
    assert [d.meta for d in out] == [d.meta for d in originals]
    assert originals == before  # no embedding was set on the caller's documents
    assert all(d.embedding is None for d in originals)
    out[0].meta["nested"]["n"] = 99  # the new documents share nothing mutable with them
    assert originals[0].meta["nested"] == {"n": 0}
    assert inputs(fake) == [TEXTS[0:2], TEXTS[2:4], TEXTS[4:]]
    chars = sum(len(t) for t in TEXTS)
    assert result["meta"] == {
        "model": "embedder",
        "usage": {"prompt_tokens": chars, "total_tokens": chars},
    }


def test_documents_with_the_same_id_each_get_their_vector(fake: FakeInfinity) -> None:
    twins = [Document(content="same"), Document(content="other"), Document(content="same")]
    assert twins[0].id == twins[2].id
    out = InfinityDocumentEmbedder("embedder", client=make_client(fake)).run(twins)["documents"]
    assert [d.embedding for d in out] == [
        vector_for("same"),
        vector_for("other"),
        vector_for("same"),
    ]


def test_meta_fields_prefix_suffix_and_separator_make_the_embedded_text(
    fake: FakeInfinity,
) -> None:
    documents = [
        Document(content="body", meta={"title": "Mars", "year": 1965, "empty": None}),
        Document(content=None, meta={"year": 2001}),
    ]
    embedder = InfinityDocumentEmbedder(
        "embedder",
        client=make_client(fake),
        prefix="passage: ",
        suffix=" <end>",
        meta_fields_to_embed=["title", "year", "empty", "absent"],
        embedding_separator=" | ",
    )
    out = embedder.run(documents)["documents"]
    expected = ["passage: Mars | 1965 | body <end>", "passage: 2001 |  <end>"]
    assert inputs(fake) == [expected]
    assert [d.embedding for d in out] == [vector_for(t) for t in expected]


def test_no_documents_send_no_request(fake: FakeInfinity) -> None:
    embedder = InfinityDocumentEmbedder("embedder", client=make_client(fake))
    assert embedder.run([])["documents"] == []
    assert asyncio.run(embedder.run_async([]))["documents"] == []
    assert fake.requests == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_failed_batch_raises_and_returns_no_documents(fake: FakeInfinity, mode: str) -> None:
    fake.failures = [(500, {"error": {"message": "boom"}})] * 10
    client = make_client(fake, max_retries=0)
    embedder = InfinityDocumentEmbedder("embedder", client=client, batch_size=2)

    def call() -> Any:
        if mode == "sync":
            return embedder.run(docs())
        return asyncio.run(embedder.run_async(docs()))

    with pytest.raises(ServerError) as caught:
        call()
    assert isinstance(caught.value, InfinityError)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("just a string", TypeError, "use InfinityTextEmbedder"),
        ([Document(content="a"), "b"], TypeError, r"documents\[1\] must be a haystack Document"),
        ({"content": "a"}, TypeError, "expects a list of Documents, got dict"),
        ([Document(content="x" * 122_881)], ValueError, r"texts\[0\] has 122,881 characters"),
    ],
)
def test_document_embedder_refuses_bad_input_before_any_request(
    fake: FakeInfinity, value: object, error: type[Exception], match: str
) -> None:
    embedder = InfinityDocumentEmbedder("embedder", client=make_client(fake))
    with pytest.raises(error, match=match):
        embedder.run(value)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        asyncio.run(embedder.run_async(value))  # type: ignore[arg-type]
    assert fake.requests == []


def test_the_progress_bar_counts_documents(
    fake: FakeInfinity, capsys: pytest.CaptureFixture[str]
) -> None:
    InfinityDocumentEmbedder("embedder", client=make_client(fake), batch_size=2).run(docs())
    err = capsys.readouterr().err
    assert "Calculating embeddings" in err
    assert "5/5" in err
    InfinityDocumentEmbedder("embedder", client=make_client(fake), progress_bar=False).run(docs())
    assert "Calculating embeddings" not in capsys.readouterr().err


# --- InfinityRanker --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_ranker_returns_new_documents_by_the_servers_score(fake: FakeInfinity, mode: str) -> None:
    originals = docs()
    before = copy.deepcopy(originals)
    ranker = InfinityRanker("reranker", client=make_client(fake), top_k=3)
    result = (
        ranker.run(QUERY, originals)
        if mode == "sync"
        else asyncio.run(ranker.run_async(query=QUERY, documents=originals))
    )
    ranked = result["documents"]
    expected = sorted(range(len(TEXTS)), key=lambda i: -score_for(QUERY, TEXTS[i]))[:3]
    assert [d.meta["position"] for d in ranked] == expected
    assert [d.score for d in ranked] == [score_for(QUERY, TEXTS[i]) for i in expected]
    assert [d.id for d in ranked] == [originals[i].id for i in expected]
    assert originals == before
    assert all(d.score is None for d in originals)
    (body,) = fake.bodies
    assert body["top_n"] == 3
    assert body["query"] == QUERY
    assert body["documents"] == TEXTS
    assert body.get("raw_scores") in (False, None)


def test_ranker_top_k_and_threshold_at_run_override_the_components(fake: FakeInfinity) -> None:
    ranker = InfinityRanker("reranker", client=make_client(fake), top_k=1, score_threshold=5.0)
    assert ranker.run(QUERY, docs())["documents"] == []  # nothing scores 5
    everything = ranker.run(QUERY, docs(), top_k=5, score_threshold=-1.0)["documents"]
    assert len(everything) == 5
    assert [d.score for d in everything] == sorted((d.score for d in everything), reverse=True)
    above_two = ranker.run(QUERY, docs(), top_k=5, score_threshold=2.0)["documents"]
    expected = [i for i, t in enumerate(TEXTS) if score_for(QUERY, t) >= 2.0]
    assert sorted(d.meta["position"] for d in above_two) == expected == [0, 1, 4]
    assert [b["top_n"] for b in fake.bodies] == [1, 5, 5]
    assert len(InfinityRanker("reranker", client=make_client(fake), top_k=None).run(
        QUERY, docs()
    )["documents"]) == 5  # fmt: skip


def test_ranker_meta_fields_and_raw_scores_are_sent(fake: FakeInfinity) -> None:
    ranker = InfinityRanker(
        "reranker",
        client=make_client(fake),
        meta_fields_to_embed=["title"],
        embedding_separator=": ",
        raw_scores=True,
    )
    ranker.run(QUERY, docs()[:2])
    (body,) = fake.bodies
    assert body["documents"] == [f"T{i}: {t}" for i, t in enumerate(TEXTS[:2])]
    assert body["raw_scores"] is True


def test_ranker_with_no_documents_sends_no_request(fake: FakeInfinity) -> None:
    ranker = InfinityRanker("reranker", client=make_client(fake))
    assert ranker.run(QUERY, []) == {"documents": []}
    assert asyncio.run(ranker.run_async(QUERY, [])) == {"documents": []}
    assert fake.requests == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"query": None, "documents": docs()}, TypeError, "query must be a string"),
        ({"query": QUERY, "documents": "text"}, TypeError, "list of Documents"),
        ({"query": QUERY, "documents": [Document(content="a"), 3]}, TypeError, r"documents\[1\]"),
        ({"query": QUERY, "documents": docs(), "top_k": 0}, ValueError, "top_k"),
        ({"query": QUERY, "documents": docs(), "score_threshold": "high"}, TypeError, "threshold"),
    ],
)
def test_ranker_refuses_bad_input_before_any_request(
    fake: FakeInfinity, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    ranker = InfinityRanker("reranker", client=make_client(fake))
    with pytest.raises(error, match=match):
        ranker.run(**kwargs)
    with pytest.raises(error, match=match):
        asyncio.run(ranker.run_async(**kwargs))
    assert fake.requests == []


def test_a_colbert_model_ranks_as_the_clients_rerank_does(fake: FakeInfinity) -> None:
    fake.models["colbert"] = ["embed"]
    fake.multi_vector = {"colbert"}
    client = make_client(fake)
    expected = client.rerank(QUERY, TEXTS, model="colbert", late_interaction=True)
    ranker = InfinityRanker("colbert", client=client, late_interaction=True, top_k=None)
    ranked = ranker.run(QUERY, docs())["documents"]
    assert [d.meta["position"] for d in ranked] == [item.index for item in expected]
    assert [d.score for d in ranked] == pytest.approx([i.relevance_score for i in expected])
    assert not any(r.url.path.endswith("rerank") for r in fake.requests)  # MaxSim, client side


# --- InfinityDocumentImageEmbedder ------------------------------------------------------------


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(PNG)
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.4")
    return tmp_path


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_image_embedder_embeds_the_files_documents_point_to(
    fake: FakeInfinity, images: Path, mode: str
) -> None:
    originals = [
        Document(content=f"picture {name}", meta={"path": name})
        for name in ("a.png", "b.png", "c.png")
    ]
    before = copy.deepcopy(originals)
    embedder = InfinityDocumentImageEmbedder(
        "clip",
        client=make_client(fake),
        file_path_meta_field="path",
        root_path=str(images),
        batch_size=2,
        progress_bar=False,
    )
    result = (
        embedder.run(originals) if mode == "sync" else asyncio.run(embedder.run_async(originals))
    )
    sent = inputs(fake)
    assert [len(batch) for batch in sent] == [2, 1]
    uris = [uri for batch in sent for uri in batch]
    assert all(uri.startswith("data:image/png;base64,") for uri in uris)
    out = result["documents"]
    assert [d.embedding for d in out] == [vector_for(uri) for uri in uris]
    assert [d.content for d in out] == [d.content for d in originals]
    assert all(
        d.meta["embedding_source"] == {"type": "image", "file_path_meta_field": "path"} for d in out
    )
    assert originals == before
    assert result["meta"]["model"] == "clip"


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ({}, "has no 'file_path' in its meta"),
        ({"file_path": "missing.png"}, "no image file at"),
        ({"file_path": "scan.pdf"}, "points to a PDF"),
        ({"file_path": "notes.png"}, "is not an image file"),
    ],
)
def test_image_embedder_refuses_documents_it_cannot_embed(
    fake: FakeInfinity, images: Path, meta: dict[str, str], match: str
) -> None:
    # One image a request: the good first document's request is not sent either.
    embedder = InfinityDocumentImageEmbedder(
        "clip", client=make_client(fake), root_path=str(images), batch_size=1
    )
    documents = [Document(meta={"file_path": "a.png"}), Document(content="x", meta=meta)]
    with pytest.raises(ValueError, match=match) as caught:
        embedder.run(documents)
    assert documents[1].id in str(caught.value)
    assert fake.requests == []


# --- construction, warm-up, closing ------------------------------------------------------------


ALL = [
    InfinityTextEmbedder,
    InfinityDocumentEmbedder,
    InfinityDocumentImageEmbedder,
    InfinityRanker,
]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": ""}, ValueError, "model must be"),
        ({"base_url": "localhost:7997"}, ValueError, "http"),
        ({"base_url": ["http://a:1", "http://a:1"]}, ValueError, "more than once"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"max_retries": -1}, ValueError, "max_retries"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency"),
        ({"deadline": 0}, ValueError, "deadline"),
        ({"balancer": "random"}, ValueError, "balancer"),
        ({"hedge": "yes"}, TypeError, "hedge"),
        ({"extra_body": "x"}, TypeError, "extra_body"),
        ({"client": "http://a:1"}, TypeError, "InfinityClient"),
    ],
)
def test_bad_settings_fail_at_construction(
    cls: type, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    kwargs = {"model": "m", **kwargs}
    with pytest.raises(error, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "match"),
    [
        (InfinityDocumentEmbedder, {"batch_size": 0}, ValueError, "batch_size"),
        (InfinityDocumentEmbedder, {"batch_size": 2049}, ValueError, "2048"),
        (InfinityDocumentEmbedder, {"meta_fields_to_embed": "title"}, TypeError, "meta_fields"),
        (InfinityDocumentEmbedder, {"dimensions": 0}, ValueError, "dimensions"),
        (InfinityTextEmbedder, {"encoding_format": "int8"}, ValueError, "encoding_format"),
        (InfinityTextEmbedder, {"prefix": None}, TypeError, "prefix"),
        (InfinityRanker, {"top_k": 0}, ValueError, "top_k"),
        (InfinityRanker, {"late_interaction": "yes"}, TypeError, "late_interaction"),
        (InfinityRanker, {"score_threshold": "0.5"}, TypeError, "score_threshold"),
        (InfinityDocumentImageEmbedder, {"root_path": 3}, TypeError, "root_path"),
    ],
)
def test_bad_component_settings_fail_at_construction(
    cls: type, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        cls("m", **kwargs)


@pytest.mark.parametrize("cls", ALL)
def test_a_plain_string_key_is_refused_without_being_shown(cls: type) -> None:
    with pytest.raises(TypeError, match="Secret") as caught:
        cls("m", api_key=KEY)
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value)


@pytest.mark.parametrize("cls", ALL)
def test_connection_settings_clash_with_a_shared_client(cls: type) -> None:
    client = InfinityClient(base_url=FAKE_URL)
    for kwargs in (
        {"base_url": FAKE_URL},
        {"timeout": 3},
        {"deadline": 3},
        {"hedge": False},
        {"api_key": Secret.from_token(KEY)},
    ):
        with pytest.raises(TypeError, match="cannot be combined with client=") as caught:
            cls("m", client=client, **kwargs)
        assert KEY not in str(caught.value)


def test_warm_up_builds_the_client_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_INFINITY_KEY", KEY)
    embedder = InfinityTextEmbedder(
        "m",
        base_url=["http://a.test:1", "http://b.test:2/v1"],
        api_key=Secret.from_env_var("MY_INFINITY_KEY"),
        timeout=7,
        max_retries=5,
        balancer="least-busy",
        hedge=False,
        deadline=30,
    )
    assert embedder._client is None  # nothing is built before warm_up
    embedder.warm_up()
    client = embedder._client
    assert client is not None
    assert client.base_urls == ("http://a.test:1", "http://b.test:2/v1")
    assert client.api_key is not None
    assert client.api_key.get_secret_value() == KEY
    assert client.timeout == 7.0
    assert client.retry.max_retries == 5
    assert client.deadline == 30
    assert KEY not in repr(client)
    embedder.warm_up()
    assert embedder._client is client  # warm_up twice builds one client
    embedder.close()
    assert embedder._client is None


def test_defaults_read_the_environment_when_warming_up(monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = InfinityDocumentEmbedder("m")
    monkeypatch.setenv("INFINITY_API_BASE", "http://env.test:9")
    monkeypatch.setenv("INFINITY_API_KEY", KEY)
    embedder.warm_up()
    assert embedder._client is not None
    assert embedder._client.base_urls == ("http://env.test:9",)
    assert embedder._client.api_key is not None
    assert embedder.to_dict()["init_parameters"]["base_url"] is None  # still read at load time


def test_close_leaves_a_shared_client_open(fake: FakeInfinity) -> None:
    client = make_client(fake)
    ranker = InfinityRanker("reranker", client=client)
    ranker.close()
    asyncio.run(ranker.close_async())
    assert ranker.run(QUERY, docs()[:1])["documents"][0].meta["position"] == 0


def test_a_wrong_key_fails_with_an_authentication_error_that_hides_it(fake: FakeInfinity) -> None:
    fake.api_key = "the-right-key"
    embedder = InfinityTextEmbedder("embedder", client=make_client(fake, api_key=KEY))
    with pytest.raises(InfinityError) as caught:
        embedder.run("hello")
    assert type(caught.value).__name__ == "AuthenticationError"
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value)


# --- serialization ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (InfinityTextEmbedder, {"prefix": "q: ", "dimensions": 8, "encoding_format": "float"}),
        (
            InfinityDocumentEmbedder,
            {"batch_size": 7, "meta_fields_to_embed": ["title"], "progress_bar": False},
        ),
        (InfinityDocumentImageEmbedder, {"file_path_meta_field": "path", "root_path": "/img"}),
        (InfinityRanker, {"top_k": 4, "score_threshold": 0.2, "raw_scores": True}),
    ],
)
def test_to_dict_from_dict_round_trip_with_the_key_as_its_variable(
    cls: type, kwargs: dict[str, Any]
) -> None:
    component = cls(
        "m",
        base_url=["http://a.test:1", "http://b.test:2"],
        api_key=Secret.from_env_var("MY_INFINITY_KEY"),
        timeout=9.5,
        max_retries=4,
        balancer="least-busy",
        hedge=False,
        deadline=12.0,
        extra_body={"user": "me"},
        **kwargs,
    )
    data = component.to_dict()
    assert data["type"] == f"{cls.__module__}.{cls.__name__}"
    assert data["type"].startswith("infinity_rag.haystack.")
    params = data["init_parameters"]
    assert params["api_key"] == {"type": "env_var", "env_vars": ["MY_INFINITY_KEY"], "strict": True}
    assert params["base_url"] == ["http://a.test:1", "http://b.test:2"]
    assert params["timeout"] == 9.5
    assert params["max_retries"] == 4
    assert (params["balancer"], params["hedge"], params["deadline"]) == ("least-busy", False, 12.0)
    for name, value in kwargs.items():
        assert params[name] == value
    again = cls.from_dict(data)
    assert again.to_dict() == data
    assert again.api_key == Secret.from_env_var("MY_INFINITY_KEY")


def test_the_default_key_is_saved_as_infinity_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITY_API_KEY", KEY)
    data = InfinityRanker("m").to_dict()
    assert data["init_parameters"]["api_key"] == {
        "type": "env_var",
        "env_vars": ["INFINITY_API_KEY"],
        "strict": False,
    }
    assert KEY not in json.dumps(data)


@pytest.mark.parametrize("cls", ALL)
def test_a_token_secret_refuses_to_be_saved(cls: type) -> None:
    component = cls("m", api_key=Secret.from_token(KEY))
    with pytest.raises(ValueError, match="Cannot serialize token-based secret") as caught:
        component.to_dict()
    assert KEY not in str(caught.value)
    pipeline = Pipeline()
    pipeline.add_component("c", component)
    with pytest.raises(ValueError, match="token"):
        pipeline.dumps()


def test_a_pipeline_saves_and_loads_the_components(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITY_API_KEY", KEY)
    pipeline = Pipeline()
    pipeline.add_component("embedder", InfinityTextEmbedder("m", base_url=FAKE_URL))
    pipeline.add_component("ranker", InfinityRanker("r", top_k=3))
    yaml = pipeline.dumps()
    assert KEY not in yaml
    assert "INFINITY_API_KEY" in yaml
    # Haystack loads classes only from modules on its allowlist (haystack_integrations and
    # its own): ours are named per call.
    with pytest.raises(DeserializationError, match="allowlist"):
        Pipeline.loads(yaml)
    loaded = Pipeline.loads(yaml, allowed_modules=["infinity_rag.haystack"])
    assert loaded.dumps() == yaml
    ranker = loaded.get_component("ranker")
    assert isinstance(ranker, InfinityRanker)
    assert ranker.top_k == 3


def test_a_shared_client_is_saved_as_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    client = InfinityClient(
        base_url=["http://a.test:1", "http://b.test:2"], max_retries=6, deadline=9.0
    )
    params = InfinityTextEmbedder("m", client=client).to_dict()["init_parameters"]
    assert params["base_url"] == ["http://a.test:1", "http://b.test:2"]
    assert params["max_retries"] == 6
    assert params["timeout"] == client.timeout
    assert params["deadline"] == 9.0
    keyed = InfinityTextEmbedder("m", client=InfinityClient(base_url=FAKE_URL, api_key=KEY))
    with pytest.raises(ValueError, match="cannot be saved") as caught:
        keyed.to_dict()  # INFINITY_API_KEY does not hold that key: it would be lost
    assert KEY not in str(caught.value)
    monkeypatch.setenv("INFINITY_API_KEY", KEY)
    assert KEY not in json.dumps(keyed.to_dict())
