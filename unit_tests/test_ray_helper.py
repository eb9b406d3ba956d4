"""infinity_rag.ray.EmbedBatches called on batches as Ray Data hands them over (no Ray here)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import cloudpickle
import httpx
import numpy as np
import pandas as pd
import pytest

from infinity_rag import InfinityClient
from infinity_rag.ray import EmbedBatches
from unit_tests.conftest import FAKE_URL, make_client
from unit_tests.fake_infinity import DIM, FakeInfinity, vector_for

SECRET = "sk-ray-0123456789"


def expected(texts: list[str], dim: int = DIM) -> np.ndarray:
    return np.asarray([vector_for(t, dim) for t in texts], dtype=np.float32)


def numpy_batch(n: int, start: int = 0) -> dict[str, np.ndarray]:
    """What map_batches passes by default: a dict of numpy arrays (strings as objects)."""
    ids = np.arange(start, start + n)
    texts = np.array([f"passage {i} about topic {i % 7}" for i in ids], dtype=object)
    return {"id": ids, "text": texts}


@pytest.fixture
def embed(fake: FakeInfinity) -> EmbedBatches:
    return EmbedBatches(client=make_client(fake, batch_size=4), model="embedder")


def test_a_numpy_batch_gets_a_float32_column_in_row_order(
    fake: FakeInfinity, embed: EmbedBatches
) -> None:
    batch = numpy_batch(11, start=100)
    out = embed(batch)
    assert set(out) == {"id", "text", "embedding"}
    assert out["embedding"].dtype == np.float32
    assert out["embedding"].shape == (11, DIM)
    # The fake answers each request's items reversed; 11 rows went out in 3 requests.
    assert len(fake.requests) == 3
    np.testing.assert_array_equal(out["embedding"], expected(list(batch["text"])))
    assert out["id"] is batch["id"]
    assert out["text"] is batch["text"]


def test_the_input_batch_is_not_modified(embed: EmbedBatches) -> None:
    batch = numpy_batch(3)
    before = {k: v.copy() for k, v in batch.items()}
    embed(batch)
    assert set(batch) == {"id", "text"}
    for key, value in before.items():
        np.testing.assert_array_equal(batch[key], value)


def test_numpy_unicode_arrays_and_lists_are_texts_too(embed: EmbedBatches) -> None:
    texts = ["alpha", "beta", ""]
    for column in (np.array(texts), np.array(texts, dtype=object), texts):
        out = embed({"text": column})
        np.testing.assert_array_equal(out["embedding"], expected(texts))


def test_a_pandas_batch_gets_one_vector_per_row(embed: EmbedBatches) -> None:
    frame = pd.DataFrame({"id": [7, 8, 9], "text": ["x", "yy", "zzz"]})
    out = embed(frame)
    assert list(out.columns) == ["id", "text", "embedding"]
    assert list(frame.columns) == ["id", "text"]  # the caller's frame is untouched
    np.testing.assert_array_equal(
        np.stack(out["embedding"].to_list()), expected(["x", "yy", "zzz"])
    )
    assert out["id"].to_list() == [7, 8, 9]


def test_model_dimensions_and_extra_body_reach_the_request(fake: FakeInfinity) -> None:
    embed = EmbedBatches(
        "body",
        "vec",
        client=make_client(fake),
        model="embedder",
        dimensions=2,
        encoding_format="float",
        extra_body={"user": "ingest"},
    )
    out = embed({"body": np.array(["a", "b"], dtype=object)})
    assert out["vec"].shape == (2, 2)
    np.testing.assert_array_equal(out["vec"], expected(["a", "b"])[:, :2])
    [body] = fake.bodies
    assert body["model"] == "embedder"
    assert body["dimensions"] == 2
    assert body["encoding_format"] == "float"
    assert body["user"] == "ingest"


def test_an_empty_batch_sends_nothing(fake: FakeInfinity) -> None:
    embed = EmbedBatches(client=make_client(fake), dimensions=3)
    out = embed({"text": np.array([], dtype=object)})
    assert out["embedding"].shape == (0, 3)
    assert out["embedding"].dtype == np.float32
    assert fake.requests == []


def test_a_missing_column_is_named_with_the_columns_there_are(
    fake: FakeInfinity, embed: EmbedBatches
) -> None:
    with pytest.raises(ValueError, match=r"no column 'text' \(its columns: \['id', 'body'\]\)"):
        embed({"id": np.arange(2), "body": np.array(["a", "b"], dtype=object)})
    assert fake.requests == []


@pytest.mark.parametrize(
    ("value", "what"),
    [(None, "a null"), (b"raw", "a value of type bytes"), (3.5, "a value of type float")],
)
def test_a_row_that_is_not_a_string_is_named_before_any_request(
    fake: FakeInfinity, value: object, what: str
) -> None:
    embed = EmbedBatches(client=make_client(fake), id_column="id")
    batch = numpy_batch(5, start=40)
    batch["text"][3] = value
    with pytest.raises(TypeError) as info:
        embed(batch)
    message = str(info.value)
    assert f"column 'text', row 3 of this batch (id=np.int64(43)), is {what}" in message
    assert "must hold a string" in message
    assert fake.requests == []


def test_a_row_that_is_not_a_string_is_named_in_a_pandas_batch(
    fake: FakeInfinity, embed: EmbedBatches
) -> None:
    for missing in (None, float("nan"), pd.NA):
        frame = pd.DataFrame({"text": ["ok", missing, "ok"]})
        with pytest.raises(TypeError, match="column 'text', row 1 of this batch, is a null"):
            embed(frame)
    frame = pd.DataFrame({"text": ["ok", "ok", 5]})
    with pytest.raises(
        TypeError, match="column 'text', row 2 of this batch, is a value of type int"
    ):
        embed(frame)
    assert fake.requests == []


def test_a_text_over_the_server_limit_is_named(fake: FakeInfinity, embed: EmbedBatches) -> None:
    batch = {"text": np.array(["fine", "x" * 122_881], dtype=object)}
    with pytest.raises(ValueError, match=r"column 'text', row 1 of this batch, has 122,881 char"):
        embed(batch)
    assert fake.requests == []


def test_an_existing_output_column_is_not_overwritten(
    fake: FakeInfinity, embed: EmbedBatches
) -> None:
    batch = {**numpy_batch(2), "embedding": np.zeros((2, DIM), dtype=np.float32)}
    with pytest.raises(ValueError, match="already has a column 'embedding'"):
        embed(batch)
    assert fake.requests == []


def test_other_batch_formats_are_refused_with_the_ones_accepted(embed: EmbedBatches) -> None:
    with pytest.raises(TypeError, match=r"dict of numpy arrays .* or a pandas DataFrame"):
        embed([{"text": "a"}])


def test_constructor_arguments_are_checked() -> None:
    client = InfinityClient(base_url=FAKE_URL)
    with pytest.raises(ValueError, match="output_column 'text' is the text column"):
        EmbedBatches("text", "text", client=client)
    with pytest.raises(TypeError, match="column must be a non-empty string"):
        EmbedBatches("", client=client)
    with pytest.raises(TypeError, match=r"do not pass \['api_key', 'base_url'\] as well"):
        EmbedBatches(client=client, base_url=FAKE_URL, api_key=SECRET)
    with pytest.raises(TypeError, match="client must be an InfinityClient"):
        EmbedBatches(client="http://x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'base_uri'"):
        EmbedBatches(base_uri=FAKE_URL)


def test_client_settings_build_the_client(fake: FakeInfinity) -> None:
    embed = EmbedBatches(
        base_url=FAKE_URL,
        api_key=SECRET,
        batch_size=2,
        http_client=httpx.Client(transport=fake.transport()),
    )
    assert embed.client.base_urls == (FAKE_URL,)
    assert embed.client.batch_size == 2
    out = embed(numpy_batch(3))
    assert out["embedding"].shape == (3, DIM)
    assert [r.headers["authorization"] for r in fake.requests] == [f"Bearer {SECRET}"] * 2


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_it_travels_to_a_worker_with_settings_and_key(dumps: object) -> None:
    embed = EmbedBatches(
        "body", "vec", model="m", base_url=[FAKE_URL, FAKE_URL + "1"], api_key=SECRET
    )
    copy_ = pickle.loads(dumps(embed))  # type: ignore[operator]
    assert (copy_.column, copy_.output_column, copy_.model) == ("body", "vec", "m")
    assert copy_.client.base_urls == (FAKE_URL, FAKE_URL + "1")
    assert copy_.client.api_key.get_secret_value() == SECRET
    assert SECRET not in repr(copy_)
    assert SECRET not in repr(embed)


def test_importing_it_does_not_import_ray() -> None:
    code = (
        "import sys, infinity_rag; assert 'infinity_rag.ray' not in sys.modules; "
        "import infinity_rag.ray; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
