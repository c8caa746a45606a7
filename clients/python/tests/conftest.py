"""A live Lextral stack for the client tests: `lextral serve all` on
ephemeral ports against a fresh PostgreSQL database, with train clauses of
../shared/data/ledgar indexed through the client itself.

Environment (clients/python/run-tests.sh sets it): LEXTRAL_BIN (the
binary), LEXTRAL_EMBED_MODEL, LEXTRAL_TEST_DATABASE_URL (an admin URL of a
PostgreSQL with pgvector).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from typing import Dict, Iterator, List

import psycopg
import pytest

from lextral_client import Lextral

REPO = pathlib.Path(__file__).resolve().parents[3]
SHARED = pathlib.Path(os.environ.get("LEXTRAL_SHARED_DATA", REPO.parent / "shared" / "data"))


def documented_sh_blocks() -> List[str]:
    """Every `sh` code block of README.md and the book (docs/src), in order:
    the examples the README/docs tests run."""
    documents = [REPO / "README.md", *sorted((REPO / "docs" / "src").rglob("*.md"))]
    return [block for d in documents for block in re.findall(r"```sh\n(.*?)```", d.read_text(), re.S)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set; run clients/python/run-tests.sh")
    return value


def ledgar(split: str, limit: int) -> List[Dict[str, str]]:
    rows = []
    with open(SHARED / "ledgar" / f"{split}.jsonl") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                rows.append({"text": row["text"], "label": row["label"], "split": split})
            if len(rows) == limit:
                break
    return rows


@dataclass
class Stack:
    grpc: str
    http: str
    train: List[Dict[str, str]]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = _need("LEXTRAL_BIN")
    admin = _need("LEXTRAL_TEST_DATABASE_URL")
    name = f"lextral_test_py_{os.getpid()}_{time.time_ns() % 1_000_000}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    database = admin.rsplit("/", 1)[0] + "/" + name
    # A small lexical model, so the fine-tuned service answers as after the
    # quickstart (seconds to train).
    work = tmp_path_factory.mktemp("stack")
    data = work / "data"
    data.mkdir()
    (data / "labels.txt").write_text((SHARED / "ledgar" / "labels.txt").read_text())
    for split, limit in [("train", 300), ("validation", 60)]:
        with open(data / f"{split}.jsonl", "w") as f:
            for row in ledgar(split, limit):
                f.write(json.dumps({"text": row["text"], "label": row["label"]}) + "\n")
    model = work / "model"
    subprocess.run(
        [
            binary, "train", "--data", str(data), "--out", str(model), "--method", "lexical",
            "--candidates", "svm:1:balanced", "--cv-folds", "3", "--quiet",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    grpc_port, http_port = _free_port(), _free_port()
    env = dict(
        os.environ,
        LEXTRAL_DATABASE_URL=database,
        LEXTRAL_EMBED_MODEL=_need("LEXTRAL_EMBED_MODEL"),
        LEXTRAL_FINETUNED_MODEL=str(model),
    )
    process = subprocess.Popen(
        [binary, "serve", "all", "--grpc", f"127.0.0.1:{grpc_port}", "--http", f"127.0.0.1:{http_port}", "--metrics", ""],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 90
        while True:
            assert process.poll() is None, "lextral serve all exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "lextral serve all never became ready"
            time.sleep(0.3)
        # As after the quickstart: every service SERVING (the local LLM and
        # the fine-tuned model load in the background).
        with Lextral(f"127.0.0.1:{grpc_port}", timeout_s=5) as client:
            for service in ["Embedder", "Retriever", "FinetunedClassifier", "PromptClassifier", "Orchestrator"]:
                while client.health(f"lextral.v1.{service}Service") != "SERVING":
                    assert time.time() < deadline + 60, f"{service} never became SERVING"
                    time.sleep(0.5)
        train = ledgar("train", 80)
        with Lextral(f"127.0.0.1:{grpc_port}") as client:
            counts = client.ingest(train)
        assert counts["inserted"] == 80, counts
        yield Stack(grpc=f"127.0.0.1:{grpc_port}", http=f"127.0.0.1:{http_port}", train=train)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture()
def client(stack: Stack) -> Iterator[Lextral]:
    with Lextral(stack.grpc) as c:
        yield c
