"""How often the extractive lead's range rule fires on text that is not a policy document, and whether it is
then right: for every answerable question of a BEIR-format SQuAD set that names an amount (years and ordinals left
out, `answer.asked_amounts`), is that amount held, in its unit, by a range stated in a sentence of the question's own
gold paragraph (`answer.stated_ranges`), and does such a sentence hold a gold answer?

    python bench/range_firing.py ../shared/eval/squad2 ../shared/eval/squad2-extra   # writes results/range_firing.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def count(folder: Path) -> tuple[int, int, int, int]:
    from chatbot.answer import asked_amounts, split_sentences, stated_ranges

    corpus = {row["_id"]: row["text"] for row in map(json.loads, (folder / "corpus.jsonl").open(encoding="utf-8"))}
    answerable = with_amount = fired = right = 0
    for q in map(json.loads, (folder / "queries.jsonl").open(encoding="utf-8")):
        if q["is_impossible"]:
            continue
        answerable += 1
        amounts = asked_amounts(q["text"])
        if not amounts:
            continue
        with_amount += 1
        held = [s for s in split_sentences(corpus[q["source_paragraph"]])
                if any(r.holds(a) for r in stated_ranges(s) for a in amounts)]
        if held:
            fired += 1
            right += any(answer in s for s in held for answer in q["answers"])
    return answerable, with_amount, fired, right


def main(folders: list[str]) -> None:
    lines = ["| answerable questions | name an amount (no years or ordinals) | a gold-paragraph sentence's range holds it "
             "| such a sentence holds a gold answer |", "|---|---|---|---|"]
    for folder in map(Path, folders):
        answerable, with_amount, fired, right = count(folder)
        lines.append(f"| {folder.name} ({answerable:,}) | {with_amount} | {fired} | {right} |")
    table = "\n".join(lines)
    print(table)
    (ROOT / "bench" / "results" / "range_firing.md").write_text(
        "# bench/range_firing.py\n\n```\npython bench/range_firing.py " + " ".join(folders) + "\n```\n\n" + table + "\n",
        encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
