#!/usr/bin/env python3
"""Regenerates the embedder's reference fixture with sentence-transformers.

The embedder test compares our candle vectors with these (cosine >= 0.999).
The fixture used by the tests lives in ../shared/data/reference/ and was made
with exactly these settings (sentence-transformers, CPU, max_seq_length 256,
normalize_embeddings=True). Run it where PyTorch is installable:

    python3 -m venv /tmp/st && /tmp/st/bin/pip install sentence-transformers
    /tmp/st/bin/python scripts/make_reference_vectors.py \
        --validation ../shared/data/ledgar/validation.jsonl --out vectors.jsonl
"""
import argparse
import json


def edge_cases():
    return [
        "Governing law.",
        "",
        "  This   Agreement\tshall\n\nbe   binding.  ",
        "Der Vertrag unterliegt deutschem Recht. Le contrat est régi par le droit français — § 5 ©",
        "indemnify " * 600,
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validation", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    with open(args.validation, encoding="utf-8") as f:
        clauses = [json.loads(line)["text"] for line in f if line.strip()]
    texts = clauses[:20] + [max(clauses, key=len)] + edge_cases()

    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = 256
    vectors = model.encode(texts, normalize_embeddings=True, batch_size=32)
    tokenizer = model.tokenizer
    with open(args.out, "w", encoding="utf-8") as out:
        for text, vector in zip(texts, vectors):
            tokens = len(tokenizer(text, truncation=False)["input_ids"])
            out.write(json.dumps({
                "text": text,
                "tokens_untruncated": tokens,
                "truncated": tokens > 256,
                "embedding": [round(float(v), 7) for v in vector],
            }, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
