"""Checked by mypy in test_typing.py: each line marked `# E` must be refused."""

from __future__ import annotations

from infinity_rag import InfinityClient


def check(client: InfinityClient) -> None:
    client.embed(["a"], as_numpy=True).embeddings.append([1.0])  # E
    shape = client.embed(["a"]).embeddings.shape  # E
    del shape
    client.embed(["a"], modle="m")  # E
    client.embed_stream(["a"], on_progress=print)  # E
    client.embed_packed(["a"], encoding_format="base64")  # E
    client.embed_packed(["a"], dimensions=8)  # E
    client.embed_multi_vector(["a"], dimensions=8)  # E
    client.embed_multi_vector(["a"], modality="audio")  # E
