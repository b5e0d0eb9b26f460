"""Replay cost: re-asking N stored questions under a new floor or calibration (`chatbot replay`) against
asking the same N questions from scratch, on one knowledge base, with the product's defaults.

Three timings of the same N questions, in one run on one warm pipeline:
  1. from scratch: `Pipeline.ask` (retrieve, rerank, gate, extractive answer, trace), with an empty
     pair cache: what the traces were made by;
  2. replay, reusing the traces' pair scores (the product's replay);
  3. replay with no score reused (as after a change of reranker): retrieval and the cross-encoder again.
The knowledge base is SQuAD 2.0's corpus from ../shared/eval (864 passages), the questions its first N
in a fixed order. Timings on this shared machine are noisy: read the ratios.

    .venv/bin/python bench/replay.py [--n 1000]     # writes bench/results/replay.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANCE_LOG", "error")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EVAL = ROOT.parent / "shared" / "eval" / "squad2"


def main(n: int) -> dict:

    from chatbot.config import Config
    from chatbot.pipeline import Pipeline
    from chatbot.replay import replay
    from chatbot.traces import TraceStore
    from ingest.beir import ingest_corpus, load_beir
    from ingest.run import ChunkingSettings

    dataset = load_beir(EVAL)
    questions = [q.text for q in sorted(dataset.queries, key=lambda q: q.id)[:n]]
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(db_uri=str(Path(tmp) / "db"))
        pipeline = Pipeline.from_config(config)
        ingest_corpus(dataset.corpus_path, pipeline.store, pipeline.embedder, ChunkingSettings())
        pipeline.warm()
        pipeline.evidence("warm up the retrieval index")

        pipeline.reranker.clear_cache()  # a fresh pair cache: every question scored from scratch
        started = time.perf_counter()
        answered = sum(not pipeline.ask(q).refused for q in questions)
        scratch = time.perf_counter() - started

        traces = TraceStore(pipeline.store).replayable()
        assert len(traces) == len(questions), len(traces)
        calibration = pipeline.calibration
        higher = calibration.with_decision_floor(min(1.0, calibration.decision_floor * 2))
        replayer = pipeline.with_calibration(higher)

        pipeline.reranker.clear_cache()  # reuse must come from the traces, not from the run above
        reused = replay(replayer, traces)
        pipeline.reranker.clear_cache()
        cold = replay(replayer, traces, reuse_scores=False)

    result = {
        "n_questions": len(questions), "answered_from_scratch": answered,
        "seconds": {"ask_from_scratch": round(scratch, 2), "replay_reusing_scores": round(reused.seconds, 2),
                    "replay_no_reuse": round(cold.seconds, 2)},
        "ratio_to_from_scratch": {"replay_reusing_scores": round(reused.seconds / scratch, 3),
                                  "replay_no_reuse": round(cold.seconds / scratch, 3)},
        "per_question_ms": {"ask_from_scratch": round(1000 * scratch / len(questions), 1),
                            "replay_reusing_scores": round(1000 * reused.seconds / len(questions), 1),
                            "replay_no_reuse": round(1000 * cold.seconds / len(questions), 1)},
        "pairs": {"reused": reused.reused_pairs, "read_again_with_reuse": reused.scored_pairs,
                  "read_without_reuse": cold.scored_pairs},
        "flips_at_double_floor": reused.summary()["answered_to_refused"],
        "same_flips_without_reuse": [r.now for r in reused.replayed] == [r.now for r in cold.replayed],
        "floor": {"then": calibration.decision_floor, "replayed": higher.decision_floor},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "config": {"reranker_precision": config.reranker_precision, "rerank_depth": config.rerank_depth,
                   "pool_size": config.pool_size},
    }
    return result


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    s, r, ms = result["seconds"], result["ratio_to_from_scratch"], result["per_question_ms"]
    (out / "replay.md").write_text(f"""# Replay vs asking from scratch ({result['n_questions']} questions)

SQuAD 2.0 corpus from ../shared/eval, its first {result['n_questions']} questions, shipped reranker
({result['config']['reranker_precision']}, depth {result['config']['rerank_depth']}), {result['machine']};
one run, one warm pipeline (`bench/replay.py`).

| | seconds | ms / question | x from scratch |
|---|---|---|---|
| ask from scratch (`Pipeline.ask`: retrieve, rerank, gate, answer, trace) | {s['ask_from_scratch']} | {ms['ask_from_scratch']} | 1 |
| replay, pair scores reused from the traces | {s['replay_reusing_scores']} | {ms['replay_reusing_scores']} | {r['replay_reusing_scores']} |
| replay, nothing reused (as after a change of reranker) | {s['replay_no_reuse']} | {ms['replay_no_reuse']} | {r['replay_no_reuse']} |

- Pairs: {result['pairs']['reused']} reused and {result['pairs']['read_again_with_reuse']} read again with reuse;
  {result['pairs']['read_without_reuse']} read without.
- At twice the floor ({result['floor']['then']:.4f} -> {result['floor']['replayed']:.4f} on the decision score),
  {result['flips_at_double_floor']} of {result['answered_from_scratch']} answered questions flip to refused; the
  decisions with and without reuse are identical: {result['same_flips_without_reuse']}.
""", encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    outcome = main(args.n)
    write(outcome, Path(args.out))
    print(json.dumps(outcome, indent=2))
