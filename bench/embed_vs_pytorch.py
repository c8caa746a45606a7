#!/usr/bin/env python3
"""Embed the same clauses with Lextral's embedder and sentence-transformers
(PyTorch, CPU) in one run, and print both throughputs and their ratio.

Run through bench/run.sh, which builds lextral and creates the PyTorch venv.
Rounds alternate (lextral, pytorch, lextral, pytorch, ...) so drift in the
machine's speed hits both alike; each figure is the median over rounds.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def read_texts(path, limit):
    texts = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                texts.append(json.loads(line)["text"])
            if len(texts) == limit:
                break
    return texts


def run_lextral(args, data_path, vectors_path):
    command = [
        args.lextral, "bench", "embed", "--data", data_path, "--batch", str(args.batch),
        "--limit", str(args.limit), "--single", str(args.single), "--json",
        "--embed-model", args.model, "--vectors", vectors_path,
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def run_pytorch(model, texts, batch, single):
    import numpy as np

    model.encode(texts[:batch], batch_size=batch)  # warm-up, as lextral does
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch, convert_to_numpy=True)
    seconds = time.perf_counter() - started
    singles = []
    for text in texts[:single]:
        started = time.perf_counter()
        model.encode([text], batch_size=1)
        singles.append((time.perf_counter() - started) * 1000.0)
    return {
        "clauses": len(texts),
        "seconds": seconds,
        "clauses_per_s": len(texts) / seconds,
        "p50_ms_single": float(np.percentile(singles, 50)) if singles else None,
        "vectors": vectors,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="JSONL with a text field per line")
    parser.add_argument("--model", required=True, help="sentence-transformers model directory")
    parser.add_argument("--lextral", required=True, help="the lextral binary")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--single", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    texts = read_texts(args.data, args.limit)
    model = SentenceTransformer(args.model, device="cpu")

    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # Both read exactly these clauses.
        data_path = os.path.join(tmp, "clauses.jsonl")
        with open(data_path, "w", encoding="utf-8") as handle:
            for text in texts:
                handle.write(json.dumps({"text": text}) + "\n")
        vectors_path = os.path.join(tmp, "vectors.jsonl")
        for round_index in range(args.rounds):
            ours.append(run_lextral(args, data_path, vectors_path))
            theirs.append(run_pytorch(model, texts, args.batch, args.single))
            print(
                f"round {round_index + 1}: lextral {ours[-1]['clauses_per_s']:.1f} clauses/s, "
                f"pytorch {theirs[-1]['clauses_per_s']:.1f} clauses/s",
                file=sys.stderr,
            )
        with open(vectors_path, encoding="utf-8") as handle:
            our_vectors = np.array([json.loads(line) for line in handle], dtype=np.float64)
    their_vectors = theirs[-1]["vectors"].astype(np.float64)
    cosines = (our_vectors * their_vectors).sum(1) / (
        np.linalg.norm(our_vectors, axis=1) * np.linalg.norm(their_vectors, axis=1)
    )

    median = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    result = {
        "clauses": len(texts),
        "batch": args.batch,
        "threads": args.threads,
        "rounds": args.rounds,
        "tokens": ours[0]["tokens"],
        "lextral_clauses_per_s": median(ours, "clauses_per_s"),
        "pytorch_clauses_per_s": median(theirs, "clauses_per_s"),
        "lextral_p50_ms_single": median(ours, "p50_ms_single"),
        "pytorch_p50_ms_single": median(theirs, "p50_ms_single"),
        "lextral_peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
        "torch": torch.__version__,
        "min_cosine": float(cosines.min()),
        "mean_cosine": float(cosines.mean()),
    }
    result["throughput_ratio"] = result["lextral_clauses_per_s"] / result["pytorch_clauses_per_s"]
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
