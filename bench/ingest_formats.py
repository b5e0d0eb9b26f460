"""Ingest throughput on the sample knowledge base, this checkout against another (an older commit's
checkout, given with --compare), side by side: each round ingests the same files into a fresh
LanceDB with each version in turn (a subprocess each, models loaded before the clock starts), and
reports chunks written per second of the whole ingest (parse, chunk, embed, commit), and the
parse time alone.

    git worktree add /tmp/before <commit>        # the version to compare with
    .venv/bin/python bench/ingest_formats.py --compare /tmp/before    # bench/results/ingest_formats.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KB = ROOT / "data" / "kb"

CHILD = r"""
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from chatbot.embed import Embedder
from chatbot.store import ChunkStore
from ingest.parse import parse_file
from ingest.run import ChunkingSettings, ingest_paths
files = [Path(f) for f in json.loads(sys.argv[3])]
embedder = Embedder("sentence-transformers/all-MiniLM-L6-v2")
embedder.embed_documents(["warm up"])
t = time.perf_counter()
for f in files:
    parse_file(f)
parse_s = time.perf_counter() - t
report = ingest_paths(files, ChunkStore(sys.argv[2]), embedder, ChunkingSettings())
print(json.dumps({"chunks": report.chunks_written, "seconds": report.total_seconds, "parse_seconds": parse_s,
                  "failed": report.failed}))
"""


def run(code_dir: Path, files: list[Path]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, str(code_dir), str(Path(tmp) / "db"),
                              json.dumps([str(f) for f in files])],
                             capture_output=True, text=True, check=True, env={**os.environ, "LANCE_LOG": "error"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(compare: Path | None, rounds: int) -> dict:
    old_formats = (".md", ".txt", ".html", ".pdf", ".docx")
    common = sorted(f for f in KB.iterdir() if f.suffix in old_formats and "scan" not in f.name)
    everything = sorted(KB.iterdir())
    runs: dict[str, list[dict]] = {"this, common files": [], "this, all files": []}
    if compare:
        runs["compared, common files"] = []
    for _ in range(rounds):
        if compare:
            runs["compared, common files"].append(run(compare, common))
        runs["this, common files"].append(run(ROOT, common))
        runs["this, all files"].append(run(ROOT, everything))
    summary = {}
    for name, results in runs.items():
        summary[name] = {"chunks": results[0]["chunks"], "files": len(everything if "all" in name else common),
                         "chunks_per_s": round(statistics.median(r["chunks"] / r["seconds"] for r in results), 1),
                         "parse_s": round(statistics.median(r["parse_seconds"] for r in results), 2),
                         "failed": results[0]["failed"]}
    if compare:
        summary["ratio_chunks_per_s_this_vs_compared"] = round(
            summary["this, common files"]["chunks_per_s"] / summary["compared, common files"]["chunks_per_s"], 3)
    return {"rounds": rounds, "compared_with": str(compare) if compare else None, "results": summary}


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ingest_formats.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = [f"# Ingest throughput on the sample knowledge base ({result['rounds']} rounds, medians)", "",
             "| run | files | chunks | chunks/s (whole ingest) | parse s |", "|---|---|---|---|---|"]
    for name, r in result["results"].items():
        if isinstance(r, dict):
            lines.append(f"| {name} | {r['files']} | {r['chunks']} | {r['chunks_per_s']} | {r['parse_s']} |")
    if "ratio_chunks_per_s_this_vs_compared" in result["results"]:
        lines += ["", f"this / compared on the common files: **{result['results']['ratio_chunks_per_s_this_vs_compared']}x**"
                  f" chunks/s (compared: `{result['compared_with']}`)"]
    (out / "ingest_formats.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", type=Path, help="another checkout of this project to run side by side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    outcome = main(args.compare, args.rounds)
    write(outcome, args.out)
    print(json.dumps(outcome, indent=2))
