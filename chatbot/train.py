"""Fine-tune a cross-encoder reranker on a CPU: listwise loss over hard negatives.

Each training group is one question, one relevant passage and G-1 irrelevant passages mined
from the project's own hybrid retrieval pool (the mistakes the reranker must fix). The
loss is softmax cross-entropy with the relevant passage as the target.

Questions the data marks unanswerable (SQuAD 2.0's `is_impossible`) train too, as groups of G
passages that all fail to answer them, led by the passage they were written against. Their target
is a learned "no answer" slot: one scalar logit that joins every group's softmax. So an answerable
question's passage must outscore it and an unanswerable question's best passage must not, which
asks the logit itself to say whether a passage answers, not only which passage answers best.

The default model is a segment-cosine cross-encoder (see `chatbot.cross_encoder`) cut to a
few layers of the packaged all-MiniLM-L6-v2: it starts from a working scoring function,
which is what makes CPU-scale training converge. Runs are seeded, checkpointed and resumable.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from chatbot import metrics


@dataclass(frozen=True)
class TrainingExample:
    question: str
    positives: tuple[str, ...]  # passages (as the reranker sees them) that answer it; empty: unanswerable
    negatives: tuple[str, ...]  # hard negatives, best-looking first (the retrieval pool's order)
    answers: tuple[str, ...] = ()  # gold answer texts, for the reader's span targets (where a set has them)

    @property
    def answerable(self) -> bool:
        return bool(self.positives)


@dataclass(frozen=True)
class ValidationQuery:
    question: str
    pool: tuple[str, ...]  # the fused pool, in fused order
    relevant: tuple[bool, ...]  # per pool entry
    answerable: bool = True
    # AUROC compares answerable and unanswerable questions of one dataset only: across datasets it
    # would measure how unlike the corpora are, not whether the answer is there.
    dataset: str = ""
    answers: tuple[str, ...] = ()  # gold answer texts, for the reader's span scores


@dataclass(frozen=True)
class TrainSettings:
    base: str = "sentence-transformers/all-MiniLM-L6-v2"
    head: str = "segment-cosine"  # or "classification" (a plain CrossEncoder head)
    layers: int = 3
    max_length: int = 192
    group_size: int = 8
    groups_per_step: int = 4
    steps: int = 1200
    max_minutes: float = 0.0  # 0 = no time cap
    lr: float = 3e-5
    head_lr: float = 1e-3
    warmup_steps: int = 50
    hard_fraction: float = 0.5  # share of negatives drawn from the top of the pool
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 0  # 0 = torch's default
    fp16_storage: bool = True  # the final model's weights on disk; inference upcasts to fp32
    lexical: bool = True  # segment-cosine only: add the exact-match term (IDF from the training corpora)
    lexical_weight: float = 8.0  # its starting weight; re-tuned on half the validation split after training
    init: str = ""  # start from this reranker ("shipped", a folder, a hub id) instead of `base`
    null_lr: float = 1e-2  # the "no answer" slot's step size: it must travel the logits' own scale
    reader: bool = False  # segment-cosine only: also train start/end and no-answer logits (`cross_encoder`)
    reader_weight: float = 1.0  # the reader's loss beside the listwise one
    # share of the answerable questions that also train as unanswerable, with their passage minus the answer's
    # sentences (`answer_stripped_examples`)
    answer_stripped: float = 0.0
    span_pairs: int = 0  # with the reader: extra (question, answering passage) pairs a step, read for spans only
    # > 0: train only the reader, through this many transformer layers of its own over the frozen encoder's
    # token states (`train_reader`); rankings and refusals stay the `init` model's, bit for bit
    reader_layers: int = 0
    reader_lr: float = 1e-4  # the reader's layers' step size (they start from pretrained layers)
    reader_batch: int = 32  # pairs a reader step reads: three quarters answer a question, a quarter do not
    device: str = "cpu"  # where the steps run ("cuda" on a GPU machine); the saved model is for the CPU either way


@dataclass(frozen=True)
class TrainingData:
    """What `train-reranker` mines from labelled sets before the first step: the training groups, the held-out
    questions (validation, and the half that tunes the exact-match weight) and every chunk the reranker could see
    (the word-piece IDF's documents). Saved once, it trains anywhere: a GPU machine without the knowledge base,
    the embedder or LanceDB."""

    examples: tuple[TrainingExample, ...]
    validation: tuple[ValidationQuery, ...]
    tuning: tuple[ValidationQuery, ...]
    passages: tuple[str, ...]
    mined_with: dict = field(default_factory=dict, compare=False)  # the mining options, for the model's card


TRAINING_DATA_FORMAT = "chatbot-training-data/1"


def save_training_data(data: TrainingData, path: str | Path) -> None:
    """Gzipped JSON. A pool's passages recur across questions, so each distinct text is stored once and
    referenced by number (the squad2 + squad2-extra + SciFact pools: about 5 MB instead of hundreds)."""
    import gzip

    texts: dict[str, int] = {}

    def refs(passages: Sequence[str]) -> list[int]:
        return [texts.setdefault(p, len(texts)) for p in passages]

    def query(q: ValidationQuery) -> dict:
        return {"question": q.question, "pool": refs(q.pool), "relevant": list(q.relevant),
                "answerable": q.answerable, "dataset": q.dataset, "answers": list(q.answers)}

    payload = {"format": TRAINING_DATA_FORMAT, "mined_with": data.mined_with, "passages": refs(data.passages),
               "examples": [{"question": e.question, "positives": refs(e.positives), "negatives": refs(e.negatives),
                             "answers": list(e.answers)} for e in data.examples],
               "validation": [query(q) for q in data.validation], "tuning": [query(q) for q in data.tuning]}
    payload["texts"] = list(texts)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with gzip.open(partial, "wt", encoding="utf-8") as f:
        json.dump(payload, f, ensure_ascii=False)
    partial.replace(path)  # never a half-written file under the name a run will read


def load_training_data(path: str | Path) -> TrainingData:
    """What `save_training_data` wrote; ValueError naming the file when it is not such a file."""
    import gzip

    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            payload = json.load(f)
        if payload.get("format") != TRAINING_DATA_FORMAT:
            raise ValueError(f"format {payload.get('format')!r}, expected {TRAINING_DATA_FORMAT!r}")
        texts = payload["texts"]

        def passages(refs: Sequence[int]) -> tuple[str, ...]:
            return tuple(texts[i] for i in refs)

        def query(q: dict) -> ValidationQuery:
            return ValidationQuery(q["question"], passages(q["pool"]), tuple(q["relevant"]), q["answerable"],
                                   q["dataset"], tuple(q["answers"]))

        return TrainingData(
            examples=tuple(TrainingExample(e["question"], passages(e["positives"]), passages(e["negatives"]),
                                           tuple(e["answers"])) for e in payload["examples"]),
            validation=tuple(query(q) for q in payload["validation"]),
            tuning=tuple(query(q) for q in payload["tuning"]),
            passages=passages(payload["passages"]), mined_with=payload.get("mined_with") or {})
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not training data saved by `train-reranker --save-examples` ({e})") from None


def base_tokenizer(settings: TrainSettings):
    """The tokenizer of the model training starts from (`init` when set, else `base`)."""
    from transformers import AutoTokenizer

    from chatbot.embed import resolve_embedder_path
    from chatbot.rerank import resolve_reranker_path

    return AutoTokenizer.from_pretrained(resolve_reranker_path(settings.init) if settings.init
                                         else resolve_embedder_path(settings.base))


def has_lexical_term(ce) -> bool:
    return is_segment_cosine(ce) and ce[1].has_lexical_term


def load_initial_model(settings: TrainSettings, idf=None):
    """An existing reranker to continue from; a segment-cosine one gains the exact-match term if it
    lacks it (its other weights are kept, so `steps=0` is a pure add-and-tune)."""
    from chatbot.cross_encoder import add_lexical_term
    from chatbot.rerank import load_cross_encoder

    ce = load_cross_encoder(settings.init, settings.max_length)
    if settings.lexical and is_segment_cosine(ce) and not ce[1].has_lexical_term:
        if idf is None:
            raise ValueError("adding the exact-match term needs the word-piece IDF of the training corpora")
        add_lexical_term(ce, idf, settings.lexical_weight)
    return _with_reader(ce, settings)


def _with_reader(ce, settings: TrainSettings):
    if not settings.reader:
        return ce
    if not is_segment_cosine(ce):
        raise ValueError("the reader needs the segment-cosine head (--head segment-cosine, or --init from one)")
    from chatbot.cross_encoder import add_reader

    return add_reader(ce)


def is_segment_cosine(ce) -> bool:
    from chatbot.cross_encoder import SegmentCosineHead

    return len(ce._modules) > 1 and isinstance(ce[1], SegmentCosineHead)


def build_model(settings: TrainSettings, idf=None):
    from chatbot.embed import resolve_embedder_path

    if settings.init:
        return load_initial_model(settings, idf)
    base = resolve_embedder_path(settings.base)
    if settings.head == "segment-cosine":
        from chatbot.cross_encoder import build_segment_cosine_cross_encoder

        return _with_reader(build_segment_cosine_cross_encoder(base, settings.layers, settings.max_length,
                                                               idf if settings.lexical else None,
                                                               settings.lexical_weight), settings)
    if settings.reader:
        raise ValueError("the reader needs the segment-cosine head")
    if settings.head == "classification":
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(str(base), num_labels=1, max_length=settings.max_length, device="cpu")
        bert = ce.model.bert if hasattr(ce.model, "bert") else ce[0].model.bert
        bert.encoder.layer = bert.encoder.layer[: settings.layers]
        bert.config.num_hidden_layers = settings.layers
        return ce
    raise ValueError(f"unknown head {settings.head!r}: use 'segment-cosine' or 'classification'")


def _forward(ce, features) -> dict:
    out = ce(dict(features))
    if isinstance(out, dict):
        return out
    return {"scores": out.logits}


def answer_token_span(features, row: int, passage: str, answers: Sequence[str]) -> tuple[int, int] | None:
    """Token indices (first, last) of the first gold answer found in `passage`, within what the
    tokenizer kept of row `row` (a fast tokenizer's encoding with offsets); None when no answer is
    there or it was cut off."""
    for answer in answers:
        at = passage.find(answer)
        if at < 0:
            at = passage.lower().find(answer.lower())
        if at < 0:
            continue
        stop = at + len(answer)
        offsets = features["offset_mapping"][row].tolist()
        tokens = [i for i, seq in enumerate(features.sequence_ids(row)) if seq == 1]
        first = next((i for i in tokens if offsets[i][1] > at), None)
        last = next((i for i in reversed(tokens) if offsets[i][0] < stop), None)
        if first is None or last is None or first > last or offsets[tokens[-1]][1] < stop:
            continue
        return first, last
    return None


def reader_loss(out: dict, targets: Sequence[tuple[int, int] | None]):
    """Cross-entropy of the start and of the end position, each over [no answer, every token]; a target
    None is "no answer here". Answer and no-answer pairs weigh half each: a group has one positive and
    seven negatives, and an unweighted mean would teach mostly "no answer"."""
    import torch
    import torch.nn.functional as F

    null = out["null_logit"].float().unsqueeze(1)
    start = torch.cat([null, out["start_logits"].float()], dim=1)
    end = torch.cat([null, out["end_logits"].float()], dim=1)
    s_target = torch.tensor([0 if t is None else t[0] + 1 for t in targets], dtype=torch.long, device=start.device)
    e_target = torch.tensor([0 if t is None else t[1] + 1 for t in targets], dtype=torch.long, device=start.device)
    per_pair = (F.cross_entropy(start, s_target, reduction="none") + F.cross_entropy(end, e_target, reduction="none")) / 2
    is_answer = torch.tensor([t is not None for t in targets], device=start.device)
    parts = [per_pair[mask].mean() for mask in (is_answer, ~is_answer) if mask.any()]
    return sum(parts) / len(parts)


# Where one sentence ends and the next begins: after . ! or ? (and a closing quote or bracket) before a capital or a
# digit, and at a line break. Abbreviations ("U.S. Army") split too early; that only makes a removed piece shorter.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n+")


def strip_answer(passage: str, answers: Sequence[str], keep_at_least: float = 1 / 3) -> str | None:
    """`passage` without the sentences that hold a gold answer: the same topic, the same neighbouring facts, and no
    answer. None when no sentence holds one, when less than `keep_at_least` of the text would be left, or when an
    answer still shows in what is left (said twice, the passage would still answer)."""
    golds = [a.lower() for a in answers if a.strip()]
    if not golds:
        return None
    # each sentence with the break that follows it, so what is kept keeps its own line breaks (a title's too)
    ends = [m.end() for m in _SENTENCE_END.finditer(passage)] + [len(passage)]
    kept, dropped, start = [], False, 0
    for stop in ends:
        if any(g in passage[start:stop].lower() for g in golds):
            dropped = True
        else:
            kept.append(passage[start:stop])
        start = stop
    text = "".join(kept).strip()
    lowered = text.lower()
    if not dropped or len(text) < keep_at_least * len(passage.strip()) or any(g in lowered for g in golds):
        return None
    return text


def answer_stripped_examples(examples: Sequence[TrainingExample], share: float, seed: int = 0) -> list[TrainingExample]:
    """On-topic unanswerable questions made from answerable ones: for `share` of the questions with gold answer
    texts, a group led by the gold passage with its answer's sentences removed (`strip_answer`), then the
    question's hard negatives, whose target is the "no answer" slot. SQuAD's written-unanswerable questions teach
    a question that sounds answerable; these teach a passage that is about the question and lacks the answer,
    the case users meet beside their documents, in every set that marks answers."""
    rng = random.Random(seed)
    made = []
    for example in examples:
        if not (example.answerable and example.answers) or rng.random() >= share:
            continue
        stripped = next((s for s in (strip_answer(p, example.answers) for p in example.positives) if s), None)
        if stripped is not None:
            made.append(TrainingExample(example.question, (), (stripped,) + example.negatives))
    return made


def _sample_group(example: TrainingExample, settings: TrainSettings, rng: random.Random) -> list[str]:
    """The positive first, then hard and random negatives; an unanswerable question's group is all
    negatives (`group_size` of them), hardest first."""
    k = settings.group_size - (1 if example.answerable else 0)
    n_hard = min(len(example.negatives), int(round(k * settings.hard_fraction)))
    hard = list(example.negatives[:n_hard])
    rest_pool = list(example.negatives[n_hard:])
    rest = rng.sample(rest_pool, min(k - n_hard, len(rest_pool)))
    negatives = (hard + rest)[:k]
    while len(negatives) < k:  # a thin pool: repeat negatives rather than shrink the group
        negatives.append(rng.choice(example.negatives))
    return ([rng.choice(example.positives)] if example.answerable else []) + negatives


def pool_rankings(scores, relevant: Sequence[bool]) -> tuple[list[str], list[str], dict[str, float]]:
    """A pool's positions as ids in pool (fused) order, the same ids best-scored first, and the
    relevant ones: what `metrics` ranks."""
    ids = [str(i) for i in range(len(relevant))]
    order = [ids[i] for i in np.argsort(-np.asarray(scores), kind="stable")]
    return ids, order, {ids[i]: 1.0 for i, r in enumerate(relevant) if r}


def validate(ce, queries: Sequence[ValidationQuery], max_length: int, batch_size: int = 32) -> dict:
    """nDCG@10 / hit@1 / hit@5 of the reranked pool against the fused order; AUROC of the top logit,
    answerable vs unanswerable, for each dataset that has both (and of the top semantic logit, for a
    model with the exact-match term: the refusal signal a calibration may read instead). A model with a
    reader also gets the AUROC of its best answer margin, and span EM / F1 of the best span in the pool
    (and in the first relevant passage) against the gold answers."""
    import torch

    fused = {"ndcg@10": [], "hit@1": [], "hit@5": []}
    reranked = {"ndcg@10": [], "hit@1": [], "hit@5": []}
    from chatbot.cross_encoder import has_reader

    lexical, reading = has_lexical_term(ce), has_reader(ce)
    # dataset -> (answerable, unanswerable) top scores, of the logit and of its semantic part
    tops: dict[str, tuple[list[float], list[float]]] = {}
    semantic_tops: dict[str, tuple[list[float], list[float]]] = {}
    margin_tops: dict[str, tuple[list[float], list[float]]] = {}
    spans = {"pool_em": [], "pool_f1": [], "gold_em": [], "gold_f1": []}
    for q in queries:
        if not q.pool:
            continue
        side = 0 if q.answerable else 1
        if reading:
            rows = reader_scores(ce, q.question, q.pool, max_length, batch_size)
            logits, margins = rows[:, 0], rows[:, 2] - rows[:, 3]
            margin_tops.setdefault(q.dataset, ([], []))[side].append(float(margins.max()))
            if lexical:
                semantic_tops.setdefault(q.dataset, ([], []))[side].append(float(rows[:, 1].max()))
            if q.answerable and q.answers:
                def span(i: int) -> str:
                    return q.pool[i][int(rows[i, 4]):int(rows[i, 5])]
                best = span(int(np.argmax(margins)))
                spans["pool_em"].append(metrics.span_exact_match(best, q.answers))
                spans["pool_f1"].append(metrics.span_f1(best, q.answers))
                if any(q.relevant):
                    gold = span(q.relevant.index(True))
                    spans["gold_em"].append(metrics.span_exact_match(gold, q.answers))
                    spans["gold_f1"].append(metrics.span_f1(gold, q.answers))
        elif lexical:
            semantic, coverage = score_components(ce, q.question, q.pool, max_length, batch_size)
            logits = semantic + ce[1].lexical_weight.detach().item() * coverage
            semantic_tops.setdefault(q.dataset, ([], []))[side].append(float(semantic.max()))
        else:
            logits = ce.predict([(q.question, p) for p in q.pool], batch_size=batch_size,
                                activation_fn=torch.nn.Identity(), convert_to_numpy=True,
                                show_progress_bar=False).reshape(-1)
        tops.setdefault(q.dataset, ([], []))[side].append(float(logits.max()))
        if not q.answerable:
            continue
        ids, order, rel = pool_rankings(logits, q.relevant)
        for name, k in (("ndcg@10", 10), ("hit@1", 1), ("hit@5", 5)):
            fn = metrics.ndcg_at if name.startswith("ndcg") else metrics.hit_at
            fused[name].append(fn(ids, rel, k))
            reranked[name].append(fn(order, rel, k))
    report = {"n_answerable": sum(len(pos) for pos, _ in tops.values()),
              "n_unanswerable": sum(len(neg) for _, neg in tops.values()),
              "fused": {k: float(np.mean(v)) if v else None for k, v in fused.items()},
              "reranked": {k: float(np.mean(v)) if v else None for k, v in reranked.items()}}
    for key, by_dataset in (("auroc_top_logit", tops), ("auroc_top_semantic_logit", semantic_tops),
                            ("auroc_top_answer_margin", margin_tops)):
        report[key] = {name: metrics.auroc(pos, neg) for name, (pos, neg) in sorted(by_dataset.items()) if pos and neg}
    if reading:
        report["spans"] = {k: 100 * float(np.mean(v)) if v else None for k, v in spans.items()}
        report["spans"]["n"] = len(spans["pool_f1"])
    return report


def reader_scores(ce, question: str, passages: Sequence[str], max_length: int, batch_size: int = 32) -> np.ndarray:
    """`chatbot.rerank.SCORE_COLUMNS` per passage for a model with a reader, tokenized as in training."""
    from chatbot.cross_encoder import encode_pairs
    from chatbot.rerank import _forward

    out = []
    for i in range(0, len(passages), batch_size):
        chunk = passages[i:i + batch_size]
        features = encode_pairs(ce.tokenizer, [question] * len(chunk), chunk, max_length)
        offsets = features.pop("offset_mapping")
        out.append(_forward(ce, dict(features), offsets))
    return np.concatenate(out)


def score_components(ce, question: str, passages: Sequence[str], max_length: int, batch_size: int = 32):
    """(semantic_logit, lexical_coverage) per passage, from one forward pass of a lexical head."""
    import torch

    semantic, coverage = [], []
    with torch.inference_mode():
        for i in range(0, len(passages), batch_size):
            chunk = list(passages[i:i + batch_size])
            features = ce.tokenizer([question] * len(chunk), chunk, truncation="only_second", max_length=max_length,
                                    padding=True, return_tensors="pt")
            out = ce(dict(features.to(ce.device)))
            semantic.append(out["semantic_logit"].float().cpu())
            coverage.append(out["lexical_coverage"].float().cpu())
    return torch.cat(semantic).numpy(), torch.cat(coverage).numpy()


LEXICAL_WEIGHT_GRID = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0)


def tune_lexical_weight(ce, queries: Sequence[ValidationQuery], max_length: int) -> dict:
    """Set the exact-match term's weight to the grid value with the best mean nDCG@10 on `queries`
    (answerable ones with a relevant passage in the pool). Training alone cannot set it: by the end
    the model has memorised its training questions, on which the exact-match evidence looks redundant."""
    import torch

    head = ce[1]
    scored = [(score_components(ce, q.question, q.pool, max_length), q.relevant)
              for q in queries if q.answerable and any(q.relevant) and q.pool]
    if not scored:
        return {"lexical_weight": head.lexical_weight.item(), "tuned_on": 0}
    by_weight = {}
    for w in LEXICAL_WEIGHT_GRID:
        values = []
        for (semantic, coverage), relevant in scored:
            _, order, rel = pool_rankings(semantic + w * coverage, relevant)
            values.append(metrics.ndcg_at(order, rel, 10))
        by_weight[w] = float(np.mean(values))
    best = max(LEXICAL_WEIGHT_GRID, key=lambda w: (round(by_weight[w], 6), -abs(w - TrainSettings.lexical_weight)))
    with torch.no_grad():
        head.lexical_weight.fill_(best)
    return {"lexical_weight": best, "tuned_on": len(scored),
            "ndcg@10_by_weight": {str(w): round(v, 4) for w, v in by_weight.items()}}


def _open_run(settings: TrainSettings, out_dir: Path, resume: bool):
    """What every training run sets up first: threads, seeds, the device, and with `resume` the checkpoint's
    model and state (None, None when there is none yet): (checkpoint folder, rng, device, model, state)."""
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    checkpoint = out_dir / "checkpoint"
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    ce = state = None
    if resume and (checkpoint / "state.pt").is_file():
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(str(checkpoint), device="cpu", max_length=settings.max_length, trust_remote_code=True)
        # A checkpoint written on a GPU resumes on the CPU and the other way round.
        state = torch.load(checkpoint / "state.pt", weights_only=False, map_location="cpu")
    return checkpoint, rng, torch.device(settings.device), ce, state


def _optimizer_step(optimizer, base_lrs: Sequence[float], loss, params, step: int, settings: TrainSettings,
                    least: float) -> float:
    """One clipped step at the schedule's rate: warm-up over `settings.warmup_steps`, then a linear decay over
    `settings.steps` down to `least` of each group's peak. Returns the loss's value."""
    import torch

    warm = min(1.0, (step + 1) / settings.warmup_steps)
    decay = max(least, 1.0 - step / settings.steps)
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * warm * decay
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(params), 1.0)
    optimizer.step()
    return loss.item()


def train(examples: Sequence[TrainingExample], settings: TrainSettings, out_dir: Path, *,
          resume: bool = False, on_step: Callable[[int, float], None] | None = None, idf=None):
    """Train and save the model to `out_dir`; checkpoints go to `out_dir/checkpoint`."""
    import torch
    import torch.nn.functional as F

    if not examples:
        raise ValueError("no training examples")
    if settings.answer_stripped:
        examples = list(examples) + answer_stripped_examples(examples, settings.answer_stripped, settings.seed)
    out_dir = Path(out_dir)
    checkpoint, rng, device, ce, state = _open_run(settings, out_dir, resume)
    start_step = 0
    if state is not None:
        start_step = state["step"]
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
    else:
        ce = build_model(settings, idf)
    ce.to(device)
    # The "no answer" slot exists only when some questions have no answer; it starts unset and takes
    # the first batch's mean logit, since the logits' scale depends on the model being trained.
    null_logit, null_ready = None, False
    if any(not e.answerable for e in examples):
        saved = state.get("null_logit") if state is not None else None
        null_logit = torch.nn.Parameter(torch.tensor(0.0 if saved is None else float(saved), device=device))
        null_ready = saved is not None
    head_params = list(ce[1].parameters()) if is_segment_cosine(ce) else [
        p for n, p in ce.named_parameters() if "classifier" in n or "pooler" in n]
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in ce.parameters() if id(p) not in head_ids]
    groups = [{"params": body_params, "lr": settings.lr}, {"params": head_params, "lr": settings.head_lr}]
    base_lrs = [settings.lr, settings.head_lr]
    if null_logit is not None:
        groups.append({"params": [null_logit], "lr": settings.null_lr, "weight_decay": 0.0})
        base_lrs.append(settings.null_lr)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    if state is not None:
        if len(state["optimizer"]["param_groups"]) != len(groups):
            raise ValueError("the checkpoint was trained with" + (" out" if null_logit is not None else "")
                             + " unanswerable questions and this run is not: resume with the same data and options")
        optimizer.load_state_dict(state["optimizer"])
    from chatbot.cross_encoder import encode_pairs, has_reader

    tokenizer = ce.tokenizer
    reading = has_reader(ce)
    with_answers = [e for e in examples if e.answerable and e.answers]
    order: list[int] = state["order"] if state is not None else []

    def save_checkpoint(step: int) -> None:
        checkpoint.mkdir(parents=True, exist_ok=True)
        ce.save_pretrained(str(checkpoint))
        torch.save({"step": step, "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                    "optimizer": optimizer.state_dict(), "order": order, "settings": asdict(settings),
                    "null_logit": null_logit.item() if null_ready else None}, checkpoint / "state.pt")

    ce.train()
    started = time.time()
    step = start_step
    loss_ema = None
    while step < settings.steps:
        if settings.max_minutes and time.time() - started > settings.max_minutes * 60:
            break
        texts_q, texts_p, targets, answers = [], [], [], []
        for _ in range(settings.groups_per_step):
            if not order:
                order = list(range(len(examples)))
                rng.shuffle(order)
            example = examples[order.pop()]
            group = _sample_group(example, settings, rng)
            texts_q += [example.question] * len(group)
            texts_p += group
            targets.append(0 if example.answerable else settings.group_size)  # the positive, or the null slot
            # The reader's targets, per pair: gold answer texts to find in the positive (None: the set has
            # none, skip the pair), and () for "no answer here" in every negative.
            answers += ([example.answers or None] + [()] * (len(group) - 1)) if example.answerable else [()] * len(group)
        ranked_pairs = len(texts_p)
        # Span-only pairs: a group holds one positive, so a step gives the reader few spans to learn from;
        # these add (question, passage with a gold answer) pairs that only the reader's loss reads.
        for example in (rng.sample(with_answers, min(settings.span_pairs, len(with_answers))) if reading else ()):
            texts_q.append(example.question)
            texts_p.append(rng.choice(example.positives))
            answers.append(example.answers)
        features = encode_pairs(tokenizer, texts_q, texts_p, settings.max_length, offsets=reading)
        # Per pair: (first, last) answer tokens, None for "no answer here", or left out of the reader's loss
        # (a positive without gold answers, or whose answer the tokenizer cut off, teaches nothing either way).
        spans, read_rows = [], []
        if reading:
            for row, (passage, gold) in enumerate(zip(texts_p, answers)):
                target = answer_token_span(features, row, passage, gold) if gold else None
                if gold is None or (gold and target is None):
                    continue
                spans.append(target)
                read_rows.append(row)
            del features["offset_mapping"]
        out = _forward(ce, features.to(device))
        scores = out["scores"].reshape(-1)[:ranked_pairs].view(settings.groups_per_step, settings.group_size)
        if null_logit is not None:
            if not null_ready:
                with torch.no_grad():
                    null_logit.fill_(scores.mean())
                null_ready = True
            scores = torch.cat([scores, null_logit.expand(settings.groups_per_step, 1)], dim=1)
        loss = F.cross_entropy(scores, torch.tensor(targets, dtype=torch.long, device=device))
        if read_rows:
            read = {k: out[k][read_rows] for k in ("start_logits", "end_logits", "null_logit")}
            loss = loss + settings.reader_weight * reader_loss(read, spans)
        value = _optimizer_step(optimizer, base_lrs, loss, ce.parameters(), step, settings, least=0.05)
        step += 1
        loss_ema = value if loss_ema is None else 0.97 * loss_ema + 0.03 * value
        if on_step is not None:
            on_step(step, loss_ema)
        if settings.checkpoint_every and step % settings.checkpoint_every == 0:
            ce.eval()
            save_checkpoint(step)
            ce.train()
    ce.eval()
    save_checkpoint(step)
    save_model(ce, out_dir, settings)
    summary = {"steps": step, "minutes": round((time.time() - started) / 60, 2), "final_loss_ema": loss_ema,
               "chance_loss": math.log(settings.group_size + (null_logit is not None)), "settings": asdict(settings),
               # the model's own depth: `settings.layers` only applies when building from the base, not with --init
               "encoder_layers": ce.config.num_hidden_layers,
               "examples": len(examples), "unanswerable_examples": sum(not e.answerable for e in examples),
               "null_logit": null_logit.item() if null_ready else None}
    return ce, summary


@dataclass(frozen=True)
class ReaderPairs:
    """The frozen encoder's view of the reader's training pairs, computed once: a reader-only step then
    runs the reader's layers alone (the encoder's forward pass would cost three times theirs). fp16 token
    states: about 150 KB a pair at 192 tokens."""

    states: object  # [pairs, max_length, hidden] fp16 token states
    attention_mask: object  # [pairs, max_length]
    token_type_ids: object  # [pairs, max_length]
    semantic_logit: object  # [pairs], what the no-answer logit is anchored on
    targets: object  # [pairs, 2] first and last answer token; -1 for "no answer here"


def reader_pairs(examples: Sequence[TrainingExample], rng: random.Random,
                 answer_stripped: float = 0.0) -> list[tuple[str, str, tuple[str, ...]]]:
    """(question, passage, gold answers) to read: a passage that holds a gold answer for each question that
    has one, and a third as many that do not answer (the hardest negative of questions drawn at random,
    answerable or not; answers () for those); with `answer_stripped`, also that share of the answering
    passages with the answer's sentences removed, as "no answer here" (`answer_stripped_examples`)."""
    answering = [(e.question, p, e.answers) for e in examples if e.answerable and e.answers
                 for p in e.positives[:1]]
    with_negatives = [e for e in examples if e.negatives]
    silent = [(e.question, e.negatives[0], ()) for e in rng.sample(with_negatives, min(len(with_negatives),
                                                                                          len(answering) // 3))]
    stripped = [(e.question, e.negatives[0], ())
                for e in answer_stripped_examples(examples, answer_stripped, rng.randrange(2 ** 32))]
    return answering + silent + stripped


def encode_reader_pairs(ce, pairs, max_length: int, batch_size: int = 32) -> ReaderPairs:
    """Run the (frozen) encoder and relevance head over `pairs` once; answering pairs whose answer the
    tokenizer cut off are left out."""
    import torch

    from chatbot.cross_encoder import encode_pairs

    head = ce[1]
    states, masks, types, semantic, targets = [], [], [], [], []
    ce.eval()
    for at in range(0, len(pairs), batch_size):
        batch = pairs[at:at + batch_size]
        features = encode_pairs(ce.tokenizer, [p[0] for p in batch], [p[1] for p in batch], max_length)
        spans = [answer_token_span(features, row, p[1], p[2]) if p[2] else None for row, p in enumerate(batch)]
        del features["offset_mapping"]
        with torch.inference_mode():
            out = head.relevance(ce[0](dict(features.to(ce.device))))
        width = features["input_ids"].shape[1]
        for row, (pair, span) in enumerate(zip(batch, spans)):
            if pair[2] and span is None:
                continue
            state = torch.zeros(max_length, out["token_embeddings"].shape[-1], dtype=torch.float16)
            state[:width] = out["token_embeddings"][row].half().cpu()
            mask, type_ids = torch.zeros(max_length, dtype=torch.long), torch.zeros(max_length, dtype=torch.long)
            mask[:width], type_ids[:width] = features["attention_mask"][row], features["token_type_ids"][row]
            states.append(state), masks.append(mask), types.append(type_ids)
            semantic.append(float(out["semantic_logit" if "semantic_logit" in out else "scores"][row].reshape(-1)[0]))
            targets.append(span if span is not None else (-1, -1))
    if not states:
        raise ValueError("no training pair holds a gold answer the tokenizer kept: the reader has nothing to learn")
    return ReaderPairs(torch.stack(states), torch.stack(masks), torch.stack(types),
                       torch.tensor(semantic), torch.tensor(targets, dtype=torch.long))


def train_reader(examples: Sequence[TrainingExample], settings: TrainSettings, out_dir: Path, *,
                 resume: bool = False, on_step: Callable[[int, float], None] | None = None):
    """Train the reader alone, through `settings.reader_layers` layers of its own (`cross_encoder.add_reader_layers`),
    from the `init` reranker: its encoder and relevance head are frozen, so rankings, refusals and their
    calibration inputs stay that model's. The loss is `reader_loss` (start and end over [no answer, every
    token]), on answering passages and some that do not answer. Saves to `out_dir` like `train`."""
    import torch

    from chatbot.cross_encoder import add_reader_layers, reader_layer_count

    if not settings.init:
        raise ValueError("training the reader alone needs a reranker to start from (--init)")
    out_dir = Path(out_dir)
    checkpoint, rng, device, ce, state = _open_run(settings, out_dir, resume)
    if state is None:
        from chatbot.embed import resolve_embedder_path
        from chatbot.rerank import load_cross_encoder

        ce = load_cross_encoder(settings.init, settings.max_length)
        if not is_segment_cosine(ce):
            raise ValueError("the reader needs the segment-cosine head (--init from one)")
        if reader_layer_count(ce) != settings.reader_layers:
            add_reader_layers(ce, settings.reader_layers, resolve_embedder_path(settings.base))
    ce.to(device)
    head = ce[1]
    for p in ce.parameters():
        p.requires_grad_(False)
    layer_params = list(head.reader_encoder.parameters())
    top_params = list(head.span.parameters()) + [head.null_scale, head.null_bias]
    for p in layer_params + top_params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW([{"params": layer_params, "lr": settings.reader_lr},
                                   {"params": top_params, "lr": settings.head_lr}], weight_decay=0.01)
    base_lrs = [settings.reader_lr, settings.head_lr]
    # The pairs are drawn from the seed alone, so a resumed run encodes the same ones.
    data = encode_reader_pairs(ce, reader_pairs(examples, random.Random(settings.seed), settings.answer_stripped),
                               settings.max_length)
    step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
    answers = (data.targets[:, 0] >= 0).tolist()
    answering = [i for i, a in enumerate(answers) if a]
    silent = [i for i, a in enumerate(answers) if not a]
    n_silent = min(len(silent), settings.reader_batch // 4)

    def save_checkpoint() -> None:
        checkpoint.mkdir(parents=True, exist_ok=True)
        ce.save_pretrained(str(checkpoint))
        torch.save({"step": step, "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                    "optimizer": optimizer.state_dict(), "settings": asdict(settings)}, checkpoint / "state.pt")

    head.train()
    started = time.time()
    loss_ema = None
    while step < settings.steps:
        if settings.max_minutes and time.time() - started > settings.max_minutes * 60:
            break
        rows = rng.sample(answering, min(len(answering), settings.reader_batch - n_silent)) + rng.sample(silent, n_silent)
        mask = data.attention_mask[rows]
        width = int(mask.sum(1).max())
        start, end = head.read_spans(data.states[rows, :width].float().to(device), mask[:, :width].to(device),
                                     data.token_type_ids[rows, :width].to(device))
        null = head.null_bias - head.null_scale * data.semantic_logit[rows].to(device)
        targets = [None if t[0] < 0 else (t[0], t[1]) for t in data.targets[rows].tolist()]
        loss = reader_loss({"start_logits": start, "end_logits": end, "null_logit": null}, targets)
        value = _optimizer_step(optimizer, base_lrs, loss, layer_params + top_params, step, settings, least=0.02)
        step += 1
        loss_ema = value if loss_ema is None else 0.97 * loss_ema + 0.03 * value
        if on_step is not None:
            on_step(step, loss_ema)
        if settings.checkpoint_every and step % settings.checkpoint_every == 0:
            head.eval()
            save_checkpoint()
            head.train()
    ce.eval()
    save_checkpoint()
    save_model(ce, out_dir, settings)
    summary = {"steps": step, "minutes": round((time.time() - started) / 60, 2), "final_loss_ema": loss_ema,
               "chance_loss": math.log(settings.max_length + 1), "settings": asdict(settings),
               "encoder_layers": ce[0].model.config.num_hidden_layers, "reader_layers": settings.reader_layers,
               "examples": len(examples), "reader_pairs": len(data.targets), "reader_answering_pairs": len(answering)}
    return ce, summary


def save_model(ce, out_dir: Path, settings: TrainSettings) -> None:
    ce.save_pretrained(str(out_dir))
    if settings.fp16_storage:
        compact_weights(Path(out_dir))


def compact_weights(model_dir: Path) -> int:
    """Store a saved model's float weights as fp16 (half the size); `Reranker` loads them back
    as fp32, so inference keeps fp32 arithmetic. Returns the number of files converted."""
    from safetensors.torch import load_file, save_file

    converted = 0
    for path in Path(model_dir).rglob("*.safetensors"):
        if "checkpoint" in path.relative_to(model_dir).parts:
            continue
        tensors = load_file(str(path))
        half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(half, str(path), metadata={"format": "pt"})
        converted += 1
    return converted


def write_training_report(out_dir: Path, summary: dict, validation: dict | None) -> None:
    (Path(out_dir) / "training_report.json").write_text(
        json.dumps({**summary, "validation": validation}, indent=2) + "\n", encoding="utf-8")
