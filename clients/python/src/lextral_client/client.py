"""A small typed wrapper over the generated Lextral stubs.

The generated modules (``lextral.v1.*``) stay available for every RPC; this
wrapper covers what most callers need: classify, ingest, labels, info and
health, with Python types and one exception class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence

import grpc

from lextral.v1 import common_pb2
from lextral.v1 import orchestrator_service_pb2 as pb
from lextral.v1 import orchestrator_service_pb2_grpc as pb_grpc

STRATEGIES = {
    "knn": pb.STRATEGY_KNN,
    "finetuned": pb.STRATEGY_FINETUNED,
    "zero-shot": pb.STRATEGY_ZERO_SHOT,
    "rag": pb.STRATEGY_RAG,
    "cascade": pb.STRATEGY_CASCADE,
}
_STRATEGY_NAMES = {value: name for name, value in STRATEGIES.items()}
VOTES = {
    "weighted": pb.VOTE_METHOD_WEIGHTED,
    "softmax": pb.VOTE_METHOD_SOFTMAX,
    "majority": pb.VOTE_METHOD_MAJORITY,
}


class LextralError(Exception):
    """A failed call: the gRPC status code name and the server's message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True)
class Neighbor:
    label: str
    similarity: float
    text: str


@dataclass(frozen=True)
class Classification:
    """The answer for one clause."""

    label: Optional[str]
    """The predicted label; None when the strategy abstained."""
    confidence: float
    answered_by: str
    abstain_reason: Optional[str] = None
    alternatives: List[LabelScore] = field(default_factory=list)
    neighbors: List[Neighbor] = field(default_factory=list)
    raw_output: Optional[str] = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    truncated: bool = False
    degraded: Optional[str] = None
    """Why the server answered with a fallback (e.g. cascade by kNN alone while
    the fine-tuned classifier is unavailable); None for a normal answer."""

    @property
    def abstained(self) -> bool:
        return self.label is None


def _error(err: grpc.RpcError) -> LextralError:
    code = err.code().name if err.code() is not None else "UNKNOWN"
    return LextralError(code, err.details() or "")


class Lextral:
    """A connection to a Lextral orchestrator (``lextral serve all`` or the
    orchestrator service), e.g. ``Lextral("127.0.0.1:50051")``."""

    def __init__(self, target: str, timeout_s: float = 60.0, secure: bool = False) -> None:
        # Accept the CLI's URL form too (http://host:port).
        target = target.removeprefix("http://")
        self._channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials())
            if secure
            else grpc.insecure_channel(target)
        )
        self._stub = pb_grpc.OrchestratorServiceStub(self._channel)
        self.timeout_s = timeout_s

    def __enter__(self) -> "Lextral":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def classify(
        self,
        texts: Sequence[str] | str,
        strategy: str = "knn",
        *,
        k: Optional[int] = None,
        vote: Optional[str] = None,
        min_confidence: Optional[float] = None,
        min_similarity: Optional[float] = None,
        splits: Iterable[str] = (),
        top_k: Optional[int] = None,
        cascade_min_confidence: Optional[float] = None,
        rag_k: Optional[int] = None,
        max_output_tokens: Optional[int] = None,
    ) -> List[Classification]:
        """Classifies clauses with one strategy (knn, finetuned, cascade,
        rag, zero-shot). Options left as None take the server's defaults."""
        if isinstance(texts, str):
            texts = [texts]
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if vote is not None and vote not in VOTES:
            raise ValueError(f"unknown vote {vote!r}; expected one of {', '.join(VOTES)}")
        request = pb.ClassifyRequest(
            texts=list(texts),
            strategy=STRATEGIES[strategy],
            knn=pb.KnnOptions(
                k=k,
                vote=VOTES[vote] if vote else 0,
                min_confidence=min_confidence,
                min_similarity=min_similarity,
                splits=list(splits),
            ),
            finetuned=pb.FinetunedOptions(top_k=top_k),
            cascade=pb.CascadeOptions(min_confidence=cascade_min_confidence),
            prompt=pb.PromptOptions(k=rag_k, max_output_tokens=max_output_tokens),
        )
        try:
            response = self._stub.Classify(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise _error(err) from None
        return self._results(response)

    @classmethod
    def _results(cls, response: Any) -> List[Classification]:
        degraded = response.degraded or None
        return [cls._result(r, degraded) for r in response.results]

    @staticmethod
    def _result(r: Any, degraded: Optional[str] = None) -> Classification:
        return Classification(
            label=None if r.abstained else r.label,
            confidence=r.confidence,
            answered_by=_STRATEGY_NAMES.get(r.answered_by, "unspecified"),
            abstain_reason=r.abstain_reason or None,
            alternatives=[LabelScore(a.label, a.score) for a in r.alternatives],
            neighbors=[Neighbor(n.label, n.similarity, n.text) for n in r.neighbors],
            raw_output=r.raw_output or None,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cost_usd=r.cost_usd,
            truncated=r.truncated,
            degraded=degraded,
        )

    def ingest(self, items: Iterable[Dict[str, str]]) -> Dict[str, int]:
        """Embeds and stores labelled clauses: dicts with text, label and
        optionally split. Returns inserted / updated / unchanged counts."""
        request = pb.IngestRequest(
            items=[
                common_pb2.LabeledText(text=i["text"], label=i["label"], split=i.get("split", ""))
                for i in items
            ]
        )
        try:
            response = self._stub.Ingest(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise _error(err) from None
        return {
            "inserted": response.inserted,
            "updated": response.updated,
            "unchanged": response.unchanged,
            "truncated": response.truncated,
        }

    def labels(self) -> List[str]:
        """The labels in the index, sorted."""
        try:
            return list(self._stub.Labels(pb.LabelsRequest(), timeout=self.timeout_s).labels)
        except grpc.RpcError as err:
            raise _error(err) from None

    def info(self) -> Dict[str, Any]:
        """The stack: server defaults, embedder, index, fine-tuned model, LLM."""
        try:
            response = self._stub.Info(pb.OrchestratorServiceInfoRequest(), timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise _error(err) from None
        return {
            "version": response.version,
            "defaults": json.loads(response.defaults_json or "null"),
            "index_total": response.index.total if response.HasField("index") else None,
            "embedder_model": response.embedder.model_id if response.HasField("embedder") else None,
            "errors": dict(response.errors),
        }

    def health(self, service: str = "") -> str:
        """gRPC health status of `service` ("" = the server): SERVING,
        NOT_SERVING, … Needs the grpcio-health-checking package."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise _error(err) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
