"""The located stage: the embedder's cosine to each best-ranked chunk's closest sentence."""

import dataclasses

import numpy as np
import pytest

from chatbot.calibrate import LabelledQuestion, fit_calibration
from chatbot.calibration import Calibration, question_features
from chatbot.embed import Embedder
from chatbot.errors import CalibrationError
from chatbot.locate import SentenceVectors, closest_sentences
from chatbot.record import candidate_from_record, candidate_record
from chatbot.types import Candidate, Chunk

HANDBOOK = ("Leave. Employees accrue annual leave every month they work. Annual leave is 25 days a year for "
            "full-time staff. Leave requests go to your manager through the HR portal.")
WITHOUT_ANSWER = ("Leave. Employees accrue annual leave every month they work. "
                  "Leave requests go to your manager through the HR portal.")


def _candidate(i: int, text: str, logit: float | None) -> Candidate:
    chunk = Chunk(id=f"c{i}", doc_path=f"doc{i}.md", title="Handbook", heading_path=(), position=i, text=text,
                  token_count=len(text.split()), content_hash=str(i))
    return Candidate(chunk=chunk, vector_distance=0.5, vector_rank=i + 1, bm25_score=1.0, bm25_rank=i + 1,
                     rrf_score=0.01, rerank_logit=logit)


class CountingEmbedder(Embedder):
    """The real embedder, counting what it encodes."""

    def __init__(self, shared: Embedder, cache_size: int = 4096):
        super().__init__(shared.name, cache_size=cache_size)
        self._model = shared._model
        self.encoded: list[str] = []

    def _embed(self, texts):
        self.encoded += list(texts)
        return super()._embed(texts)


def test_the_closest_sentence_is_the_one_that_answers_and_only_the_best_ranked_are_read(embedder):
    question = "How many days of annual leave do full-time staff get?"
    q = embedder.embed_query(question)
    reranked = (_candidate(0, HANDBOOK, 3.0), _candidate(1, WITHOUT_ANSWER, 2.0), _candidate(2, HANDBOOK, 1.0),
                _candidate(3, HANDBOOK, None))  # the last past the rerank depth: never read
    located = closest_sentences(q, reranked, SentenceVectors(embedder), top_n=2)
    assert located[0].closest_sentence == "Annual leave is 25 days a year for full-time staff."
    assert np.isclose(located[0].sentence_cosine, float(embedder.embed_query(located[0].closest_sentence) @ q), atol=1e-5)
    # The same topic without the sentence that answers: its closest sentence is another, further from the question.
    assert located[1].closest_sentence == "Employees accrue annual leave every month they work."
    assert located[0].sentence_cosine - located[1].sentence_cosine > 0.15
    # Past top_n, and past the rerank depth, nothing is set; everything else is unchanged.
    assert located[2].sentence_cosine is None and located[3].sentence_cosine is None
    assert [dataclasses.replace(c, sentence_cosine=None, closest_sentence=None) for c in located] == list(reranked)
    assert closest_sentences(q, (), SentenceVectors(embedder), top_n=5) == ()


def test_sentence_embeddings_come_from_a_bounded_cache(embedder):
    counting = CountingEmbedder(embedder, cache_size=3)
    texts = ["Annual leave is 25 days.", "Requests go to your manager.", "Annual leave is 25 days."]
    first = counting.embed_sentences(texts)
    assert counting.encoded == texts[:2]  # a repeated text is encoded once
    assert np.allclose(first, embedder.embed_documents(texts), atol=1e-6)
    again = counting.embed_sentences(texts[:2])
    assert counting.encoded == texts[:2] and np.array_equal(again, first[:2])
    counting.embed_sentences(["a", "b", "c"])  # the least recently used go first
    counting.embed_sentences([texts[0]])
    assert counting.encoded[-1] == texts[0] and len(counting._cache) == 3
    assert counting.embed_sentences([]).shape == (0, embedder.dimension)


def test_the_question_reads_its_best_located_sentence_and_a_calibration_that_needs_one_says_so():
    features = question_features([2.0, 1.0, 0.5], sentence_cosine=[0.4, 0.7, None])
    assert features["best_sentence_cosine"] == 0.7
    assert question_features([2.0], sentence_cosine=[None])["best_sentence_cosine"] is None
    cal = Calibration(floor=0.01, method="logistic", weights={"rerank_logit": 1.0},
                      answerability_weights={"best_rerank_logit": 0.5, "best_sentence_cosine": 4.0, "intercept": -3.0},
                      answerability_floor=0.2)
    p = cal.p_answerable(question_features([2.0], sentence_cosine=[0.6]))
    assert np.isclose(p, 1 / (1 + np.exp(-(0.5 * 2.0 + 4.0 * 0.6 - 3.0))))
    try:
        cal.p_answerable(question_features([2.0], sentence_cosine=[None]))
    except CalibrationError as e:
        assert "best_sentence_cosine" in str(e) and "chatbot.locate" in str(e)
    else:
        raise AssertionError("a missing sentence cosine must be named")


def _located_questions(rng, n: int, answerable: bool) -> list[LabelledQuestion]:
    """Questions whose best chunk is as on topic either way (same logits, cosines); only the closest
    sentence's cosine, set on the first three chunks, tells whether the answer is there."""
    out = []
    for i in range(n):
        logits = rng.normal(-2.0, 1.0, size=8)
        logits[0] = rng.normal(2.0, 1.0)
        cosines = rng.uniform(0.3, 0.6, size=8)
        sentences = rng.uniform(0.2, 0.45, size=3)
        if answerable:
            sentences[0] = rng.uniform(0.55, 0.8)
        labels = (1,) + (0,) * 7 if answerable else (0,) * 8
        out.append(LabelledQuestion(f"{answerable}{i}", answerable, tuple(logits), labels, tuple(cosines),
                                    tuple(rng.uniform(0, 0.6, size=8)), source=f"{answerable}-article-{i % 10}",
                                    pair_sentence_cosines=tuple(sentences) + (None,) * 5))
    return out


def test_calibrate_tries_the_located_sentence_and_keeps_it_when_it_separates():
    rng = np.random.default_rng(7)
    questions = _located_questions(rng, 250, True) + _located_questions(rng, 250, False)
    cal, details = fit_calibration(questions, "m:1", "emb:1", max_false_refusal_rate=0.05, target_refusal_precision=None)
    a = details["answerability"]
    assert "sentence" in a["method"] and cal.answerability_weights["best_sentence_cosine"] > 0
    assert a["held_out"]["logit+cosine"]["auroc"] < 0.7 < 0.95 < a["held_out"][a["method"]]["auroc"]
    # Questions asked before the stage existed (traces, older reports) carry none: those candidates are not tried.
    older = [dataclasses.replace(q, pair_sentence_cosines=()) for q in questions]
    cal_older, details_older = fit_calibration(older, "m:1", "emb:1", max_false_refusal_rate=0.05,
                                               target_refusal_precision=None)
    assert "best_sentence_cosine" not in cal_older.answerability_weights
    assert not any("sentence" in name for name in details_older["answerability"]["held_out"])


def test_the_record_keeps_the_closest_sentence():
    c = dataclasses.replace(_candidate(0, HANDBOOK, 2.0), sentence_cosine=0.61,
                            closest_sentence="Annual leave is 25 days a year for full-time staff.")
    back = candidate_from_record(candidate_record(c, "kept", None))
    assert back.sentence_cosine == 0.61 and back.closest_sentence == c.closest_sentence


def test_the_pipeline_locates_only_when_its_calibration_reads_the_closest_sentence(sample_db, tiny_reranker_dir):
    from chatbot.record import ask_record
    from tests.helpers import make_pipeline

    pipeline = make_pipeline(sample_db, tiny_reranker_dir, floor=0.0, top_n=3)
    result = pipeline.ask("What is the maximum payload of the H2?")
    assert "locate_ms" not in result.timings_ms
    assert all(c.sentence_cosine is None for c in result.gate.ranked)

    pipeline.calibration = Calibration(floor=0.0, answerability_weights={
        "best_rerank_logit": 0.1, "best_sentence_cosine": 6.0, "intercept": -3.0}, answerability_floor=0.05)
    assert pipeline.locates_sentences and pipeline.with_table("other").locates_sentences
    result = pipeline.ask("What is the maximum payload of the H2?")
    assert "locate_ms" in result.timings_ms
    # The reranker's best top_n chunks, each with its closest sentence, and no other; P(answerable) read the best.
    read = sorted((c for c in result.gate.ranked if c.rerank_logit is not None), key=lambda c: -c.rerank_logit)
    assert all(c.sentence_cosine is not None and c.closest_sentence for c in read[:3])
    assert all(c.sentence_cosine is None for c in read[3:])
    best = max(c.sentence_cosine for c in read[:3])
    expected = 1 / (1 + np.exp(-(0.1 * read[0].rerank_logit + 6.0 * best - 3.0)))
    assert np.isclose(result.gate.p_answerable, expected, atol=1e-6)
    stored = {c["chunk_id"]: c for c in ask_record(result)["candidates"]}
    assert stored[read[0].chunk.id]["closest_sentence"] == read[0].closest_sentence
    pipeline.locate = False  # told not to: a calibration that needs it then names what is missing
    with pytest.raises(CalibrationError, match="best_sentence_cosine"):
        pipeline.ask("What is the maximum payload of the H2?")


def test_the_shipped_located_calibration_locates_and_reads_on_topic_unanswered_questions_lower(sample_db):
    from chatbot.config import Config
    from chatbot.pipeline import Pipeline
    from tests.helpers import SAMPLE_QUESTIONS

    default = Pipeline.from_config(Config(db_uri=sample_db, traces=False))
    located = Pipeline.from_config(Config(db_uri=sample_db, traces=False, calibration="located"))
    assert not default.locates_sentences and located.locates_sentences
    assert located.calibration.reranker_fingerprint == default.calibration.reranker_fingerprint
    # "parental leave" beside the handbook's annual-leave section: on topic, unanswered. Its closest sentence
    # ("A full-time position is 40 hours per week") reads far from the question, and P(answerable) with it.
    (parental,) = [q["question"] for q in SAMPLE_QUESTIONS if "parental" in q["question"]]
    assert located.ask(parental).gate.p_answerable < default.ask(parental).gate.p_answerable / 1.5


def test_the_located_calibration_is_named_for_the_shipped_reranker_only(tmp_path):
    from chatbot.config import SHIPPED_RERANKER_DIR, Config
    from chatbot.errors import ConfigError
    from chatbot.pipeline import default_calibration_path

    assert default_calibration_path(Config(calibration="located")) == SHIPPED_RERANKER_DIR / "calibration_located.json"
    assert default_calibration_path(Config()) == SHIPPED_RERANKER_DIR / "calibration.json"
    own = tmp_path / "mine.json"
    assert default_calibration_path(Config(reranker="some/model", calibration=str(own))) == own
    assert default_calibration_path(Config(reranker="some/model")) is None
    with pytest.raises(ConfigError, match="fitted for the shipped reranker"):
        default_calibration_path(Config(reranker="some/model", calibration="located"))


def _ingest(paths, uri, embedder, sentence_vectors=True, sentence_progress=None):
    from chatbot.store import ChunkStore
    from ingest.run import ChunkingSettings, ingest_paths

    return ingest_paths(paths, ChunkStore(uri), embedder, ChunkingSettings(), sentence_vectors=sentence_vectors,
                        sentence_progress=sentence_progress)


def _stored_rows(uri) -> dict[str, np.ndarray]:
    from chatbot.sentences import sentencing_fingerprint
    from chatbot.store import ChunkStore

    store = ChunkStore(uri)
    ids = store._scan(["id"]).column("id").to_pylist()
    return store.sentence_vectors(ids, sentencing_fingerprint(EMBEDDER))


EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def test_ingest_stores_each_chunks_sentence_vectors_and_the_located_stage_reads_them_instead_of_embedding(
        sample_db, writable_sample_db, embedder, tiny_reranker_dir):
    from chatbot.sentences import chunk_sentences
    from chatbot.store import ChunkStore
    from tests.helpers import SAMPLE_KB, make_pipeline

    assert _stored_rows(writable_sample_db) == {}  # ingested before: none yet, and nothing breaks
    report = _ingest([SAMPLE_KB], writable_sample_db, embedder)
    store = ChunkStore(writable_sample_db)
    # An unchanged knowledge base gains them: no document re-read, every chunk's sentences embedded once.
    assert report.chunks_written == 0 and report.sentences_of_chunks == store.count()
    assert "the sentences of" in report.summary()
    stored = _stored_rows(writable_sample_db)
    texts = dict(zip(store._scan(["id"]).column("id").to_pylist(), store._scan(["text"]).column("text").to_pylist()))
    assert set(stored) == set(texts)
    for chunk_id in list(texts)[:20]:
        sentences = chunk_sentences(texts[chunk_id])
        assert stored[chunk_id].shape == (len(sentences), embedder.dimension)
        assert np.abs(stored[chunk_id] - embedder.embed_documents(sentences)).max() < 2e-3  # float16 on disk
    assert _ingest([SAMPLE_KB], writable_sample_db, embedder).sentences_of_chunks == 0  # nothing new to embed

    question = "What is the maximum payload of the H2?"
    fresh = make_pipeline(sample_db, tiny_reranker_dir, floor=0.0, top_n=3, traces=False)
    with_stored = make_pipeline(writable_sample_db, tiny_reranker_dir, floor=0.0, top_n=3, traces=False)
    fresh.locate = with_stored.locate = True
    with_stored.embedder = counting = CountingEmbedder(embedder)
    with_stored.sentence_vectors.embedder = counting
    with_stored.retriever.embedder = counting
    a, b = fresh.ask(question), with_stored.ask(question)
    # Not one sentence embedded while asking: locate read them, and the answer found them in the cache.
    assert set(counting.encoded) == {question}
    located = {c.chunk.id: c for c in a.gate.ranked if c.sentence_cosine is not None}
    assert located and {c.chunk.id for c in b.gate.ranked if c.sentence_cosine is not None} == set(located)
    for c in b.gate.ranked:
        if c.chunk.id in located:
            assert c.closest_sentence == located[c.chunk.id].closest_sentence
            assert abs(c.sentence_cosine - located[c.chunk.id].sentence_cosine) < 2e-3
    assert b.outcome.text == a.outcome.text


def test_sentence_vectors_follow_their_chunks_and_a_row_that_does_not_fit_is_embedded_again(tmp_path, embedder):
    from chatbot.locate import SentenceVectors
    from chatbot.sentences import chunk_sentences, sentencing_fingerprint
    from chatbot.store import ChunkStore

    docs, uri = tmp_path / "docs", str(tmp_path / "db")
    docs.mkdir()
    (docs / "leave.md").write_text("# Leave\n\n" + HANDBOOK + "\n")
    (docs / "travel.md").write_text("# Travel\n\nHotels are booked through Meridian. The nightly cap in London is "
                                    "GBP 180. Economy class is the rule for flights under six hours.\n")
    _ingest([docs], uri, embedder)
    store = ChunkStore(uri)
    ids = lambda: set(store._scan(["id"]).column("id").to_pylist())  # noqa: E731
    assert set(_stored_rows(uri)) == ids() and len(ids()) == 2
    # Which chunks have them, read without their vectors (a Ray ingest's driver asks before storing): only
    # under the sentencing asked for, and nothing for an id the table does not hold.
    sentencing = sentencing_fingerprint(EMBEDDER)
    assert store.chunks_with_sentence_vectors(sorted(ids()) + ["no-such-chunk"], sentencing) == ids()
    assert store.chunks_with_sentence_vectors(sorted(ids()), "sentences-v0|" + EMBEDDER) == set()
    assert store.chunks_with_sentence_vectors([], sentencing) == set()

    before = ids()
    (docs / "leave.md").write_text("# Leave\n\n" + WITHOUT_ANSWER + "\n")  # a changed document: new chunk ids
    shown = []

    def progress(chunks, total):  # what a progress bar is handed: the chunks to embed, and how many
        for chunk in chunks:
            shown.append((chunk[0], total))
            yield chunk

    report = _ingest([docs], uri, embedder, sentence_progress=progress)
    (new_id,) = ids() - before
    assert report.sentences_of_chunks == 1 and shown == [(new_id, 1)]  # only the changed chunk, and said so
    table = store._sentences().to_arrow()
    assert set(table.column("chunk_id").to_pylist()) == ids()  # the old chunk's row went with it
    (docs / "travel.md").unlink()
    _ingest([docs], uri, embedder)
    assert set(store._sentences().to_arrow().column("chunk_id").to_pylist()) == ids() and len(ids()) == 1

    # Rows made another way (an older sentencing, another embedder) are never read, and the next ingest drops
    # them; a row whose count does not match its chunk's sentences is embedded again at question time.
    (chunk_id,) = ids()
    store.add_sentence_vectors([(chunk_id, np.zeros((1, embedder.dimension)))], "sentences-v0|" + EMBEDDER)
    assert _ingest([docs], uri, embedder).sentences_of_chunks == 0
    assert store._sentences().to_arrow().column("sentencing").to_pylist() == [sentencing_fingerprint(EMBEDDER)]
    store._sentences().delete("TRUE")
    store.add_sentence_vectors([(chunk_id, np.zeros((1, embedder.dimension)))], sentencing_fingerprint(EMBEDDER))
    counting = CountingEmbedder(embedder)
    text = store._scan(["text"]).column("text").to_pylist()[0]
    target = Chunk(id=chunk_id, doc_path="leave.md", title="", heading_path=(), position=0, text=text,
                   token_count=0, content_hash="")
    ((sentences, vectors),) = SentenceVectors(counting, store)([target])
    assert sentences == chunk_sentences(text) and counting.encoded == sentences and len(vectors) == len(sentences)


def test_chatbot_ingest_stores_sentence_vectors_when_the_calibration_reads_them(tmp_path, capsys):
    from chatbot.cli import main
    from tests.helpers import SAMPLE_KB

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "expense-policy.md").write_bytes((SAMPLE_KB / "expense-policy.md").read_bytes())
    plain, located = tmp_path / "plain.toml", tmp_path / "located.toml"
    plain.write_text(f'db_uri = "{tmp_path / "db1"}"\n')
    located.write_text(f'db_uri = "{tmp_path / "db2"}"\ncalibration = "located"\n')
    assert main(["--config", str(plain), "ingest", str(docs), "--quiet"]) == 0
    assert "sentences" not in capsys.readouterr().out and _stored_rows(str(tmp_path / "db1")) == {}
    assert main(["--config", str(located), "ingest", str(docs), "--quiet"]) == 0
    out = capsys.readouterr().out
    stored = _stored_rows(str(tmp_path / "db2"))
    assert f"the sentences of {len(stored)} chunks embedded" in out and len(stored) > 3


def test_a_sentence_table_that_cannot_be_read_costs_an_embedding_not_the_answer(writable_sample_db, embedder, caplog):
    import pyarrow as pa

    from chatbot.locate import SentenceVectors
    from chatbot.store import ChunkStore

    store = ChunkStore(writable_sample_db)
    # Another tool's table under the same name: no vectors in it.
    store.db.create_table(store.sentences_table_name, data=pa.table({"chunk_id": ["x"], "note": ["not vectors"]}))
    text = store._scan(["text"]).column("text").to_pylist()[0]
    chunk = Chunk(id="x", doc_path="d.md", title="", heading_path=(), position=0, text=text, token_count=0,
                  content_hash="")
    counting = CountingEmbedder(embedder)
    with caplog.at_level("WARNING", logger="chatbot.locate"):
        ((sentences, vectors),) = SentenceVectors(counting, store)([chunk])
    assert counting.encoded == sentences and vectors.shape == (len(sentences), embedder.dimension)
    assert "cannot read the sentence vectors" in caplog.text and store.sentences_table_name in caplog.text
    # An ingest that would add to it says what to do, after its documents are stored.
    from chatbot.errors import StoreError
    from tests.helpers import SAMPLE_KB

    with pytest.raises(StoreError, match="remove that table and ingest again"):
        _ingest([SAMPLE_KB], writable_sample_db, embedder)
    assert ChunkStore(writable_sample_db).count() == store.count() > 0


def test_questions_look_for_a_missing_sentence_table_again_only_after_a_while(tmp_path, embedder, monkeypatch):
    from chatbot import store as store_module
    from chatbot.sentences import sentencing_fingerprint
    from chatbot.store import ChunkStore

    docs, uri = tmp_path / "docs", str(tmp_path / "db")
    docs.mkdir()
    (docs / "leave.md").write_text("# Leave\n\n" + HANDBOOK + "\n")
    _ingest([docs], uri, embedder, sentence_vectors=False)
    asking = ChunkStore(uri)
    opened = []
    real_open = asking._open
    monkeypatch.setattr(asking, "_open", lambda name: (opened.append(name) if name == asking.sentences_table_name
                                                       else None) or real_open(name))
    ids = asking._scan(["id"]).column("id").to_pylist()
    sentencing = sentencing_fingerprint(EMBEDDER)
    assert asking.sentence_vectors(ids, sentencing) == {} and asking.sentence_vectors(ids, sentencing) == {}
    assert len(opened) == 1  # one look for two questions (a LIST request each on s3)

    _ingest([docs], uri, embedder)  # another process's ingest adds them
    assert asking.sentence_vectors(ids, sentencing) == {}  # not looked for again yet
    monkeypatch.setattr(store_module, "SENTENCES_RECHECK_S", 0.0)
    assert set(asking.sentence_vectors(ids, sentencing)) == set(ids) and len(opened) == 2
    # ingest always looks: an ingest by the asking process itself never misses the table
    assert asking.chunks_lacking_sentence_vectors(sentencing) == []


def test_an_eval_corpus_stores_its_sentence_vectors_once_and_questions_read_them(tmp_path, beir_dir, embedder):
    """Eval and calibrate always locate: their corpus tables store sentence vectors as `chatbot ingest` does
    under a located calibration, so that questions read them instead of embedding the best chunks' sentences."""
    from chatbot.sentences import chunk_sentences, sentencing_fingerprint
    from chatbot.store import ChunkStore
    from ingest.beir import ingest_corpus
    from ingest.run import ChunkingSettings

    uri = str(tmp_path / "db")
    counting = CountingEmbedder(embedder)
    store = ChunkStore(uri, "eval_tinyset")
    assert ingest_corpus(beir_dir / "corpus.jsonl", store, counting, ChunkingSettings(), sentence_vectors=True) == 6
    ids = store._scan(["id"]).column("id").to_pylist()
    texts = dict(zip(ids, store._scan(["text"]).column("text").to_pylist()))
    stored = store.sentence_vectors(ids, sentencing_fingerprint(EMBEDDER))
    assert set(stored) == set(ids)
    assert all(stored[i].shape == (len(chunk_sentences(texts[i])), embedder.dimension) for i in ids)

    counting.encoded.clear()
    again = ChunkStore(uri, "eval_tinyset")
    assert ingest_corpus(beir_dir / "corpus.jsonl", again, counting, ChunkingSettings(), sentence_vectors=True) == 0
    assert counting.encoded == []  # an unchanged corpus: nothing re-read, no sentence embedded again
    located = SentenceVectors(counting, again)
    target = Chunk(id=ids[0], doc_path="beir:x", title="", heading_path=(), position=0, text=texts[ids[0]],
                   token_count=0, content_hash="")
    ((sentences, vectors),) = located([target])
    assert counting.encoded == [] and len(vectors) == len(sentences)  # read, not embedded
