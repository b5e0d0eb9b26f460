"""Which extractive leads does a change to `chatbot/answer.py` alter? Both versions answer from the same evidence
(the shipped pipeline's kept chunks) for every held-out answerable question (eval's split, by article), and each
question whose lead differs is printed with whether either holds a gold answer. Separates an answer-code change
from run-to-run noise in `chatbot eval`.

    git archive BASE_COMMIT chatbot | tar -x -C /tmp/base
    python bench/lead_diff.py /tmp/base/chatbot/answer.py EVALDB eval_squad2_extra ../shared/eval/squad2-extra

EVALDB is a `chatbot eval` database that holds the set's table (run `chatbot --db EVALDB eval ...` once).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(base_answer: str, db: str, table: str, folder: str) -> None:
    from chatbot import answer as new
    from chatbot.config import Config
    from chatbot.evaluate import held_out_filter
    from chatbot.metrics import contains_answer
    from chatbot.pipeline import Pipeline
    from ingest.beir import load_beir

    spec = importlib.util.spec_from_file_location("base_answer", base_answer)
    old = importlib.util.module_from_spec(spec)
    sys.modules["base_answer"] = old  # dataclasses look their module up while the file runs
    spec.loader.exec_module(old)
    pipe = Pipeline.from_config(Config(db_uri=db, table=table, traces=False))
    data = load_beir(folder, split=None)
    keep = held_out_filter(data.name, data.queries, 0.2)
    compared = differ = 0
    held = {"before": 0, "after": 0}
    for q in (q for q in data.queries if keep(q) and q.answerable and q.answers):
        ev = pipe.evidence(q.text)
        if not ev.gate.kept:
            continue
        compared += 1
        leads = {name: m.lead_sentence(m.extractive_answer(q.text, ev.gate.kept, pipe.embedder.embed_documents,
                                                           span_floor=ev.gate.answer_span_floor).text)
                 for name, m in (("before", old), ("after", new))}
        for name, lead in leads.items():
            held[name] += contains_answer(lead, q.answers)
        if leads["before"] != leads["after"]:
            differ += 1
            print(f"Q: {q.text} | gold: {q.answers[:2]}")
            for name, lead in leads.items():
                print(f"  {name:<6} {contains_answer(lead, q.answers)!s:<5} {lead}")
    print(f"{compared} answered questions compared, {differ} leads differ; a gold answer in the lead: "
          f"before {held['before'] / max(compared, 1):.3f}, after {held['after'] / max(compared, 1):.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
