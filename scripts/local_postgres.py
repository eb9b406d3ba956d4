"""The command line of ``infinity_rag.testing.LocalPostgres`` (PostgreSQL with pgvector):

python scripts/local_postgres.py serve        # print the URI, stop on Ctrl-C / SIGTERM
"""

from infinity_rag.testing._postgres import main

if __name__ == "__main__":
    raise SystemExit(main())
