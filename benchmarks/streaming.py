"""Streaming generation: time to the first word and total time, against `generate` in one call.

    .venv/bin/python benchmarks/streaming.py --json out/bench/streaming.json

An untrained text_lm at the book's shapes (15,000 words, embedding 256, feed-forward 2048,
2 heads, 1 layer; benchmarks/text_generation.py) with a context of 128 words is exported with
`max_new_tokens` 100 and served by `python -m serving serve` in its own process. One client,
batch 1, 100 new words at temperature 1, requests in turn, side by side in one run:
- generate: one Predict call of `generate` (the whole loop in the graph);
- stream: `ModelServerClient.generate_stream(transport="stream")`, the server's
  GenerateStream RPC (start and steps run in the server, words streamed back);
- predict: `generate_stream(transport="predict")`, one Predict call per word
  (`generate_start`, then `generate_step` with the key/value cache sent back and forth), what
  works against any TF Serving.
Targets: the first word within 1/10 of generate's time, a streamed generation within 1.5x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import serving as bench  # noqa: E402
from benchmarks import text_generation as book  # noqa: E402

NEW_TOKENS = 100
CONTEXT = 128  # the book's 100 words leave no room for a prompt and 100 new words
SEED = 7
MODES = ("generate", "stream", "predict")


def export_model(root: Path) -> None:
    """The untrained book-shaped LM, exported with max_new_tokens=NEW_TOKENS."""
    import tensorflow as tf

    from models.text.export import export_text_lm
    from models.text.lm import build_lm
    from models.text.standardize import vocabulary_with_specials

    tf.keras.utils.set_random_seed(0)
    model = build_lm(book.VOCAB_SIZE, CONTEXT, book.EMBED_DIM, book.LATENT_DIM, book.NUM_HEADS)
    words = book.PROMPT.split() + [f"word{i}" for i in range(book.VOCAB_SIZE - 4)]
    export_text_lm(model, vocabulary_with_specials(words), str(root / "text_lm" / "1"),
                   max_new_tokens=NEW_TOKENS)


def timed_generation(client, mode: str) -> tuple[float, float, str]:
    """(seconds to the first word, total seconds, continuation) of one generation."""
    settings = dict(max_tokens=NEW_TOKENS, temperature=1.0, seed=SEED)
    start = time.perf_counter()
    if mode == "generate":
        (result,) = client.generate_text(book.PROMPT, **settings)
        total = time.perf_counter() - start
        return total, total, result.continuation
    transport = mode
    first, words = None, []
    for word in client.generate_stream(book.PROMPT, transport=transport, **settings):
        first = time.perf_counter() - start if first is None else first
        words.append(word.word)
    return first, time.perf_counter() - start, " ".join(words)


def run(args: argparse.Namespace) -> dict:
    from client.model_client import ModelServerClient

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "models"
        export_model(root)
        server = bench.ServerProcess(None, ("--models_root", str(root)))
        try:
            with ModelServerClient(f"127.0.0.1:{server.grpc_port}", timeout=300) as client:
                texts = {mode: timed_generation(client, mode)[2] for mode in MODES}  # warm-up
                times: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
                for _ in range(args.repeats):  # round-robin: a load spike hits every mode
                    for mode in MODES:
                        first, total, _ = timed_generation(client, mode)
                        times[mode].append((first, total))
        finally:
            server.stop()
    results = {
        mode: {
            "first_word_ms": 1000 * statistics.median(t[0] for t in runs),
            "total_ms": 1000 * statistics.median(t[1] for t in runs),
            "runs": len(runs),
        }
        for mode, runs in times.items()
    }
    return {
        **bench.run_facts("streaming"),
        "model": f"untrained text_lm, book shapes, context {CONTEXT}",
        "new_tokens": NEW_TOKENS,
        "same_text": len(set(texts.values())) == 1,
        "results": results,
    }


def summary(report: dict) -> str:
    results = report["results"]
    whole = results["generate"]["total_ms"]
    rows = [
        "| mode | first word ms | total ms | first / generate | total / generate |",
        "|---|---|---|---|---|",
    ]
    for mode, r in results.items():
        rows.append(
            f"| {mode} | {r['first_word_ms']:.1f} | {r['total_ms']:.1f} | "
            f"{r['first_word_ms'] / whole:.3f} | {r['total_ms'] / whole:.2f} |"
        )
    report["ratios"] = {
        mode: {"first": r["first_word_ms"] / whole, "total": r["total_ms"] / whole}
        for mode, r in results.items()
    }
    rows.append("")
    rows.append(
        f"{NEW_TOKENS} new words; targets: first word <= 0.1 x generate, total <= 1.5 x "
        f"generate; the three modes {'give' if report['same_text'] else 'do NOT give'} the same "
        "text"
    )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--repeats", type=int, default=10, help="generations per mode")
    args = parser.parse_args()
    report = run(args)
    print(summary(report))
    bench.write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
