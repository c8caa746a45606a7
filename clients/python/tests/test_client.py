"""The typed client against a live stack: classify, ingest, labels, info,
errors, gRPC health and reflection, and the example script."""

import pathlib
import subprocess
import sys

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lextral_client import Lextral, LextralError

from conftest import ledgar


def test_knn_finds_indexed_clauses(client, stack):
    # A stored clause's nearest neighbour is itself.
    texts = [row["text"] for row in stack.train[:5]]
    answers = client.classify(texts, strategy="knn", k=1)
    assert [a.label for a in answers] == [row["label"] for row in stack.train[:5]]
    for answer in answers:
        assert answer.answered_by == "knn"
        assert 0.0 < answer.confidence <= 1.0
        assert answer.neighbors and answer.neighbors[0].similarity > 0.99


def test_unseen_clause_gets_an_index_label(client, stack):
    [clause] = ledgar("validation", 1)
    [answer] = client.classify(clause["text"])
    assert answer.label in {row["label"] for row in stack.train}
    assert len(answer.neighbors) > 0


def test_labels_and_info(client, stack):
    assert client.labels() == sorted({row["label"] for row in stack.train})
    info = client.info()
    assert info["index_total"] == 80
    assert info["defaults"]["knn"]["k"] == 20
    assert "all-MiniLM-L6-v2" in info["embedder_model"]


def test_bad_input_is_a_clear_error(client):
    with pytest.raises(LextralError) as err:
        client.classify([])
    assert err.value.code == "INVALID_ARGUMENT" and "empty" in err.value.message
    with pytest.raises(LextralError) as err:
        client.classify("x", k=0)
    assert err.value.code == "INVALID_ARGUMENT" and "k" in err.value.message
    with pytest.raises(ValueError):
        client.classify("x", strategy="telepathy")
    with pytest.raises(LextralError) as err:
        client.ingest([{"text": "x", "label": " "}])
    assert err.value.code == "INVALID_ARGUMENT"


def test_health_of_every_service(client):
    assert client.health() == "SERVING"
    for service in ["Orchestrator", "Embedder", "Retriever"]:
        assert client.health(f"lextral.v1.{service}Service") == "SERVING"
    with pytest.raises(LextralError) as err:
        client.health("no.such.Service")
    assert err.value.code == "NOT_FOUND"


def test_reflection_lists_every_service(stack):
    with grpc.insecure_channel(stack.grpc) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [reply] = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in reply.list_services_response.service}
    for service in ["Orchestrator", "Embedder", "Retriever", "FinetunedClassifier", "PromptClassifier"]:
        assert f"lextral.v1.{service}Service" in names, names


def test_unreachable_server_is_unavailable():
    with Lextral("127.0.0.1:1", timeout_s=2) as client:
        with pytest.raises(LextralError) as err:
            client.classify("x")
    assert err.value.code == "UNAVAILABLE"


def test_example_script_runs(stack):
    example = pathlib.Path(__file__).parents[1] / "examples" / "classify.py"
    result = subprocess.run([sys.executable, str(example), stack.grpc], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "index: 80 clauses" in result.stdout
    assert "knn" in result.stdout and "answered by knn" in result.stdout


def test_a_degraded_answer_says_why_on_every_result():
    # The response's `degraded` (cascade answered by kNN while the fine-tuned
    # classifier is down) reaches each Classification; a normal answer has None.
    from lextral.v1 import orchestrator_service_pb2 as pb

    response = pb.ClassifyResponse(
        results=[pb.ClassificationResult(label="Notices", confidence=0.9, answered_by=pb.STRATEGY_KNN)] * 2,
        degraded="fine-tuned classifier unavailable: answered by knn",
    )
    answers = Lextral._results(response)
    assert [a.degraded for a in answers] == ["fine-tuned classifier unavailable: answered by knn"] * 2
    assert answers[0].label == "Notices" and answers[0].answered_by == "knn"
    normal = Lextral._results(pb.ClassifyResponse(results=[pb.ClassificationResult(label="Notices")]))
    assert normal[0].degraded is None
