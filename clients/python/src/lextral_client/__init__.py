"""Python client for Lextral: ``Lextral(url).classify(texts, strategy=...)``."""

from lextral_client.client import (
    STRATEGIES,
    Classification,
    LabelScore,
    Lextral,
    LextralError,
    Neighbor,
)

__all__ = ["STRATEGIES", "Classification", "LabelScore", "Lextral", "LextralError", "Neighbor"]
