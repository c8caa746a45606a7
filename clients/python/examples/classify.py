"""Classify a clause with every strategy the running stack serves.

    clients/python/generate.sh && pip install -e clients/python
    python clients/python/examples/classify.py 127.0.0.1:50051
"""

import sys

from lextral_client import Lextral, LextralError

CLAUSE = (
    "This Agreement shall be governed by and construed in accordance with "
    "the laws of the State of New York."
)

with Lextral(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051") as lextral:
    print("index:", lextral.info()["index_total"], "clauses")
    for strategy in ["knn", "finetuned", "cascade", "rag"]:
        try:
            [answer] = lextral.classify(CLAUSE, strategy=strategy)
        except LextralError as err:
            print(f"{strategy:10} unavailable ({err.code}: {err.message})")
            continue
        print(f"{strategy:10} {answer.label} ({answer.confidence:.3f}, answered by {answer.answered_by})")
