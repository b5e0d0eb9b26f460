"""Ingest throughput on Ray (issue #21): the same files ingested without Ray, and with `--ray` on a
local cluster with 1 and 2 workers, side by side (the order rotates each round, each into a fresh
LanceDB), plus the cost of the driver's commits on a small and on a 100k-chunk table, for the
projection to 10M chunks in bench/README.md.

The corpus: the first --docs SciFact abstracts, written as Markdown files into a temporary folder
(outside the repository; the labelled data is read from ../shared/eval and never copied).

    nice -n 5 .venv/bin/python bench/ray_ingest.py [--docs 600] [--rounds 2] \
        [--big-table /work/bench_cache/lancedb:scifact_x9]                      # bench/results/ray_ingest.{json,md}

Whole-ingest rates include each Ray worker's model load (a few seconds per worker per ingest), as a
real run pays it; the cluster is started once, as `ray start` is on a real one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_corpus(eval_dir: Path, folder: Path, n: int) -> int:
    folder.mkdir(parents=True)
    with open(eval_dir / "corpus.jsonl", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            doc = json.loads(line)
            (folder / f"{doc['_id']}.md").write_text(f"# {doc['title']}\n\n{doc['text']}\n", encoding="utf-8")
    return n


def ingest_once(corpus: Path, db: str, address: str | None, workers: int | None) -> dict:
    from chatbot.embed import Embedder
    from chatbot.store import ChunkStore
    from ingest.run import ChunkingSettings, ingest_paths

    store = ChunkStore(db)
    commits: list[float] = []
    replace = store.replace_documents

    def timed_replace(*args):
        t = time.perf_counter()
        replace(*args)
        commits.append(time.perf_counter() - t)

    store.replace_documents = timed_replace
    embedder = Embedder("sentence-transformers/all-MiniLM-L6-v2")
    prepare = None
    if address:
        from ingest.on_ray import RayPreparer

        prepare = RayPreparer(embedder.name, ChunkingSettings(), address=address, workers=workers)
    else:
        embedder.embed_documents(["warm up"])  # the local model loads before the clock, as a server's would
    report = ingest_paths([corpus], store, embedder, ChunkingSettings(), prepare=prepare)
    assert not report.failed, report.failed[:3]
    return {"chunks": report.chunks_written, "seconds": round(report.total_seconds, 2),
            "chunks_per_s": round(report.chunks_written / report.total_seconds, 1),
            "commit_seconds": round(sum(commits), 3), "commits": len(commits)}


def commit_cost(table_dir: str, table: str, chunks: int = 512) -> dict:
    """Seconds for one commit of `chunks` new chunks (one ingest batch) into a copy of a big table."""
    import numpy as np

    from chatbot.store import ChunkStore
    from chatbot.types import Chunk

    with tempfile.TemporaryDirectory(dir="/work" if Path("/work").is_dir() else None) as tmp:
        for name in (table, f"{table}_meta"):
            shutil.copytree(Path(table_dir) / f"{name}.lance", Path(tmp) / f"{name}.lance")
        store = ChunkStore(tmp, table)
        rows = store.count()
        rng = np.random.default_rng(0)
        times = []
        for r in range(3):
            docs = [f"/bench/new-{r}-{d}.md" for d in range(chunks // 4)]
            new = [Chunk(f"{doc}#{p}", doc, "New", (), p, f"new text {r} {doc} {p}", 5, "h") for doc in docs
                   for p in range(4)]
            vectors = rng.normal(size=(len(new), 384)).astype(np.float32)
            t = time.perf_counter()
            store.replace_documents(docs, new, vectors)
            times.append(time.perf_counter() - t)
    return {"table_rows": rows, "chunks_per_commit": chunks, "seconds": [round(t, 3) for t in times],
            "median_s": round(statistics.median(times), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--eval-dir", default=str(ROOT.parent / "shared" / "eval" / "scifact"))
    ap.add_argument("--big-table", help="DIR:TABLE of a big chunk table, to time one commit into a copy of it")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ray_ingest"))
    args = ap.parse_args()

    import ray

    from tests.helpers import local_ray_cluster

    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "docs": args.docs,
                     "ray": ray.__version__, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        write_corpus(Path(args.eval_dir), corpus, args.docs)
        t = time.perf_counter()
        with local_ray_cluster(cpus=2) as address:
            results["cluster_start_s"] = round(time.perf_counter() - t, 1)
            os.environ["RAY_AUTH_MODE"] = "disabled"
            settings = {"no Ray (2 torch threads)": (None, None), "Ray, 1 worker": (address, 1),
                        "Ray, 2 workers": (address, 2)}
            for r in range(args.rounds):
                names = list(settings)
                names = names[r % len(names):] + names[:r % len(names)]
                for name in names:
                    db = str(Path(tmp) / f"db-{r}-{len(results['runs'].get(name, []))}-{names.index(name)}")
                    run = ingest_once(corpus, db, *settings[name])
                    print(f"round {r} {name}: {run}", file=sys.stderr, flush=True)
                    results["runs"].setdefault(name, []).append(run)
                    shutil.rmtree(db, ignore_errors=True)
    results["median_chunks_per_s"] = {name: statistics.median(r["chunks_per_s"] for r in runs)
                                      for name, runs in results["runs"].items()}
    base = results["median_chunks_per_s"]["no Ray (2 torch threads)"]
    results["ratio_to_no_ray"] = {name: round(v / base, 2) for name, v in results["median_chunks_per_s"].items()}
    if args.big_table:
        table_dir, _, table = args.big_table.rpartition(":")
        results["commit_into_big_table"] = commit_cost(table_dir, table)
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = [f"# Ingest on Ray: {results['docs']} SciFact abstracts as Markdown files (`bench/ray_ingest.py`)", "",
             f"{results['machine']}; Ray {results['ray']}; local cluster started once in {results['cluster_start_s']} s.",
             "", "| setting | chunks | median chunks/s (whole ingest) | ratio | commits, s |", "|---|---|---|---|---|"]
    for name, runs in results["runs"].items():
        lines.append(f"| {name} | {runs[0]['chunks']} | {results['median_chunks_per_s'][name]:.1f} | "
                     f"{results['ratio_to_no_ray'][name]:.2f}x | {statistics.median(r['commit_seconds'] for r in runs):.2f} |")
    big = results.get("commit_into_big_table")
    if big:
        lines += ["", f"One commit of {big['chunks_per_commit']} new chunks into a copy of a {big['table_rows']:,}-chunk "
                      f"table: median {big['median_s']} s ({big['seconds']})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
