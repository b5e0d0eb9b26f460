"""A cross-encoder head that starts from a useful scoring function.

A plain sequence-classification cross-encoder initialised from a bi-encoder (all-MiniLM)
must learn relevance from scratch through the [CLS] token, which that checkpoint never
trained; on a CPU budget it does not leave the no-information plateau (see the team's
feasibility notes). This head instead reads the jointly encoded pair the way the bi-encoder
was trained to be read: it mean-pools the question's tokens and the passage's tokens
separately (by token type) and scores their cosine, plus a learned diagonal interaction
term that starts at zero. Training then only has to refine a ranking that already works,
while every layer still sees question and passage together.

Optionally (`vocab_size` > 0) the head adds an exact-match term: the IDF-weighted share of the
question's distinct word pieces that also occur in the passage, times a learned weight. A
bi-encoder's pooled vectors blur exact terms (names, numbers, rare words), which is where BM25
beats them on SQuAD-style questions; this puts that evidence inside the cross-encoder's own
score. The IDF table is a buffer saved with the weights, counted from the training corpora.

Optionally (`reader`) the head also reads: start and end logits over every passage token (where
the answer is, SQuAD-style) and a no-answer logit, from the same forward pass. The no-answer logit
is not a fresh [CLS] output, which does not learn at CPU scale (../shared/notes), but anchored on
the relevance score: `null_logit = null_bias - null_scale * semantic score`, so "no answer here"
starts as "this passage does not read as relevant" and training refines it jointly with the ranking.
A span's score is `start + end`; the no-answer score is `2 * null_logit` on the same scale.

Optionally (`reader_layers` > 0) the span logits are read through transformer layers of the reader's own
over the encoder's token states, instead of straight off them. The encoder's tokens serve ranking
(mean-pooled), and a linear layer over them finds spans poorly (F1 ~15 on held-out gold paragraphs);
one more layer, started from the base model's next layer, trained with the encoder frozen, reaches ~46
(bench/README.md). Those layers cost a layer's time per pair, so the product reads spans only for the
few pairs it ranks highest (`read_spans`), from the states the ranking pass already computed.

It is a standard sentence-transformers module: a CrossEncoder saved with it loads with
`CrossEncoder(path)`, provided this package is importable.
"""

from __future__ import annotations

import re
from typing import Iterable

import torch
from sentence_transformers.base.modules import Module

_WORDLIKE = re.compile(r"[^\W_]")  # a piece with a letter or digit; punctuation carries no match evidence
NOT_A_SPAN = -1e4  # start/end logit of a position outside the passage
MAX_ANSWER_TOKENS = 30


def span_scores(start, end, max_tokens: int = MAX_ANSWER_TOKENS):
    """Per row, start + end logit of every span [batch, i, j] from token i to token j; 2 * NOT_A_SPAN where
    j < i or the span is longer than `max_tokens` tokens."""
    pair = start.unsqueeze(-1) + end.unsqueeze(-2)
    i = torch.arange(start.shape[-1], device=start.device)
    allowed = (i.unsqueeze(1) <= i.unsqueeze(0)) & (i.unsqueeze(0) - i.unsqueeze(1) < max_tokens)
    return pair.masked_fill(~allowed, 2 * NOT_A_SPAN)


def best_spans(start, end, max_tokens: int = MAX_ANSWER_TOKENS):
    """Per row, the best (start + end) over spans of at most `max_tokens` tokens with start <= end:
    (span_score, start index, end index), each a tensor of the batch's size."""
    n = start.shape[-1]
    score, flat = span_scores(start, end, max_tokens).reshape(start.shape[0], -1).max(-1)
    return score, flat // n, flat % n


class SegmentCosineHead(Module):
    config_keys = ["hidden_size", "init_scale", "init_bias", "vocab_size", "init_lexical_weight", "reader",
                   "reader_layers", "reader_layer_config"]

    def __init__(self, hidden_size: int = 384, init_scale: float = 20.0, init_bias: float = -10.0,
                 vocab_size: int = 0, init_lexical_weight: float = 8.0, reader: bool = False,
                 reader_layers: int = 0, reader_layer_config: dict | None = None):
        super().__init__()
        self.hidden_size = hidden_size
        self.init_scale = init_scale
        self.init_bias = init_bias
        self.vocab_size = vocab_size
        self.init_lexical_weight = init_lexical_weight
        self.scale = torch.nn.Parameter(torch.tensor(float(init_scale)))
        self.bias = torch.nn.Parameter(torch.tensor(float(init_bias)))
        # Diagonal bilinear term: a learned re-weighting of dimensions, zero at start.
        self.interaction = torch.nn.Parameter(torch.zeros(hidden_size))
        if vocab_size:
            self.lexical_weight = torch.nn.Parameter(torch.tensor(float(init_lexical_weight)))
            self.register_buffer("idf", torch.zeros(vocab_size))
        self.reader = bool(reader)
        if self.reader:
            self.span = torch.nn.Linear(hidden_size, 2)
            torch.nn.init.normal_(self.span.weight, std=0.02)
            torch.nn.init.zeros_(self.span.bias)
            # At start a passage at the relevance logit's zero point has no-answer score 0, a span
            # score of about 0: even odds, tipped by relevance.
            self.null_scale = torch.nn.Parameter(torch.tensor(0.25))
            self.null_bias = torch.nn.Parameter(torch.tensor(0.0))
        self.reader_layers = int(reader_layers)
        # BertConfig fields of the reader's layers (heads, intermediate size, activation...): saved with the
        # head, so that loading rebuilds the same layers before their weights are read.
        self.reader_layer_config = dict(reader_layer_config or {})
        if self.reader_layers:
            if not self.reader:
                raise ValueError("reader_layers needs reader=True")
            from transformers import BertConfig
            from transformers.models.bert.modeling_bert import BertLayer

            config = BertConfig(hidden_size=hidden_size, **self.reader_layer_config)
            config._attn_implementation = "sdpa"
            self.reader_encoder = torch.nn.ModuleList(BertLayer(config) for _ in range(self.reader_layers))

    @property
    def has_lexical_term(self) -> bool:
        return bool(self.vocab_size)

    def lexical_coverage(self, input_ids: torch.Tensor, question: torch.Tensor, passage: torch.Tensor) -> torch.Tensor:
        """IDF-weighted share of the question's distinct word pieces found in the passage, in [0, 1]."""
        same = input_ids.unsqueeze(2) == input_ids.unsqueeze(1)  # [batch, i, j]: piece i is piece j
        q = question.bool()
        earlier = torch.ones_like(same[0]).tril(-1).unsqueeze(0)
        repeat = (same & q.unsqueeze(1) & earlier).any(-1)  # the same piece already counted earlier
        distinct = q & ~repeat
        matched = (same & passage.bool().unsqueeze(1)).any(-1)
        weight = self.idf.to(input_ids.device)[input_ids].float() * distinct
        return (weight * matched).sum(-1) / weight.sum(-1).clamp(min=1e-6)

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        features = self.relevance(features)
        if self.reader:
            start, end = self.read_spans(features["token_embeddings"], features["attention_mask"],
                                         features["token_type_ids"])
            features["start_logits"], features["end_logits"] = start, end
        return features

    def read_spans(self, tokens: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
        """Start and end logits over the tokens (NOT_A_SPAN outside the passage) from the encoder's token
        states, through the reader's own layers when it has them."""
        return self.span_logits(self.reader_states(tokens, attention_mask), attention_mask, token_type_ids)

    def reader_states(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The token states the span layer reads: the encoder's, through the reader's own layers when it has them."""
        if self.reader_layers:
            # additive attention mask: padding is never attended to
            blocked = (1.0 - attention_mask.to(tokens.dtype))[:, None, None, :] * torch.finfo(tokens.dtype).min
            for layer in self.reader_encoder:
                tokens = layer(tokens, attention_mask=blocked)
        return tokens

    def span_logits(self, states: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
        """Start and end logits (NOT_A_SPAN outside the passage) from `reader_states`."""
        mask = attention_mask.to(states.dtype)
        start, end = self.span(states).float().unbind(-1)
        outside = (mask * token_type_ids.to(mask.dtype)) < 0.5  # question, special and padding tokens start no span
        return start.masked_fill(outside, NOT_A_SPAN), end.masked_fill(outside, NOT_A_SPAN)

    def relevance(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Everything but the spans: the relevance logits (`scores`, and `semantic_logit` with the exact-match
        term) and, with a reader, the no-answer logit."""
        tokens = features["token_embeddings"]
        mask = features["attention_mask"].to(tokens.dtype)
        types = features.get("token_type_ids")
        if types is None:
            raise ValueError("SegmentCosineHead needs token_type_ids to tell the question from the passage")
        passage = mask * types.to(tokens.dtype)
        question = mask - passage
        q = (tokens * question.unsqueeze(-1)).sum(1) / question.sum(1, keepdim=True).clamp(min=1.0)
        d = (tokens * passage.unsqueeze(-1)).sum(1) / passage.sum(1, keepdim=True).clamp(min=1.0)
        qn = torch.nn.functional.normalize(q, dim=-1)
        dn = torch.nn.functional.normalize(d, dim=-1)
        cosine = (qn * dn).sum(-1)
        logit = self.scale * cosine + self.bias + (qn * dn * self.interaction).sum(-1) * self.hidden_size ** 0.5
        if self.reader:
            features["null_logit"] = self.null_bias - self.null_scale * logit.float()
        if self.has_lexical_term:
            coverage = self.lexical_coverage(features["input_ids"], question, passage)
            features["semantic_logit"] = logit
            features["lexical_coverage"] = coverage
            logit = logit + self.lexical_weight * coverage.to(logit.dtype)
        features["scores"] = logit.unsqueeze(-1)
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, **kwargs):
        hub = dict(subfolder=subfolder, token=token, cache_folder=cache_folder, revision=revision,
                   local_files_only=local_files_only)
        module = cls(**cls.load_config(model_name_or_path=model_name_or_path, **hub))
        cls.load_torch_weights(model_name_or_path=model_name_or_path, model=module, **hub)
        return module.eval()  # as transformers loads its models: the reader's layers must not drop out when serving


def wordpiece_idf(tokenizer, texts: Iterable[str], batch_size: int = 512) -> torch.Tensor:
    """BM25-style IDF of every vocabulary piece over `texts` (one text = one document). Special
    tokens and punctuation get 0, so they neither count as question terms nor as matches."""
    vocab_size = len(tokenizer)
    df = torch.zeros(vocab_size, dtype=torch.float64)
    n_docs = 0
    batch: list[str] = []

    def count(batch: list[str]) -> None:
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            df[torch.tensor(sorted(set(ids)), dtype=torch.long)] += 1

    for text in texts:
        batch.append(text)
        n_docs += 1
        if len(batch) >= batch_size:
            count(batch)
            batch = []
    if batch:
        count(batch)
    if not n_docs:
        raise ValueError("no documents to count word-piece IDF from")
    idf = torch.log1p((n_docs - df + 0.5) / (df + 0.5))
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    special = set(tokenizer.all_special_ids)
    useless = [i for i, piece in enumerate(pieces)
               if i in special or not _WORDLIKE.search(piece.removeprefix("##"))]
    idf[useless] = 0.0
    return idf.float()


def has_reader(ce) -> bool:
    """Whether a CrossEncoder's head reads spans (any other model, a hub one included, does not)."""
    return len(ce._modules) > 1 and bool(getattr(ce[1], "reader", False))


def reader_layer_count(ce) -> int:
    """How many transformer layers of its own a CrossEncoder's reader has (0: none, or no reader)."""
    return int(getattr(ce[1], "reader_layers", 0)) if has_reader(ce) else 0


def add_reader_layers(ce, count: int, base_path: str):
    """Give a segment-cosine CrossEncoder's reader `count` transformer layers of its own (in place), keeping
    every other weight: copies of the layers of `base_path` (a BERT checkpoint) that come after the
    encoder's depth, which already read tokens the way the encoder's last layer writes them (random
    layers when the base has no such layers); a fresh span layer reads their output. A reader that has
    layers of its own keeps them, trained, and gains the base's layers that come after them."""
    from transformers import AutoModel

    add_reader(ce)
    old = ce[1]
    if old.reader_layers >= count:
        raise ValueError(f"this reader already has {old.reader_layers} layer(s) of its own")
    base = AutoModel.from_pretrained(str(base_path))
    keys = ("num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps", "hidden_dropout_prob",
            "attention_probs_dropout_prob")
    layer_config = {k: getattr(base.config, k) for k in keys}
    head = SegmentCosineHead(old.hidden_size, old.init_scale, old.init_bias, vocab_size=old.vocab_size,
                             init_lexical_weight=old.init_lexical_weight, reader=True, reader_layers=count,
                             reader_layer_config=layer_config)
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("span.")}
    missing, unexpected = head.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(("reader_encoder.", "span.")) for k in missing):
        raise ValueError(f"cannot add reader layers to this head: missing {missing}, unexpected {unexpected}")
    depth = ce[0].model.config.num_hidden_layers
    for i, layer in enumerate(head.reader_encoder):
        if i >= old.reader_layers and depth + i < len(base.encoder.layer):
            layer.load_state_dict(base.encoder.layer[depth + i].state_dict())
    ce._modules[list(ce._modules)[1]] = head
    return ce


def encode_pairs(tokenizer, questions, passages, max_length: int, offsets: bool = True):
    """(question, passage) pairs tokenized as the reader trains and serves: the passage is what gets
    cut, and with `offsets` each token's character span (key "offset_mapping") turns token positions
    into text."""
    return tokenizer(list(questions), list(passages), truncation="only_second", max_length=max_length,
                     padding=True, return_tensors="pt", return_offsets_mapping=offsets)


def add_reader(ce):
    """Give a segment-cosine CrossEncoder the reader outputs (in place), keeping every other weight."""
    old = ce[1]
    if old.reader:
        return ce
    head = SegmentCosineHead(old.hidden_size, old.init_scale, old.init_bias, vocab_size=old.vocab_size,
                             init_lexical_weight=old.init_lexical_weight, reader=True)
    missing, unexpected = head.load_state_dict(old.state_dict(), strict=False)
    if unexpected or set(missing) - {"span.weight", "span.bias", "null_scale", "null_bias"}:
        raise ValueError(f"cannot add a reader to this head: missing {missing}, unexpected {unexpected}")
    ce._modules[list(ce._modules)[1]] = head
    return ce


def add_lexical_term(ce, idf: torch.Tensor, weight: float = 8.0):
    """Give a segment-cosine CrossEncoder the exact-match term (in place), keeping its other weights."""
    old = ce[1]
    head = SegmentCosineHead(old.hidden_size, old.init_scale, old.init_bias, vocab_size=len(idf),
                             init_lexical_weight=weight, reader=old.reader, reader_layers=old.reader_layers,
                             reader_layer_config=old.reader_layer_config)
    state = {k: v for k, v in old.state_dict().items()
             if k in ("scale", "bias", "interaction") or k.startswith(("span.", "null_", "reader_encoder."))}
    head.load_state_dict(state, strict=False)
    head.idf.copy_(idf)
    ce._modules[list(ce._modules)[1]] = head
    return ce


def build_segment_cosine_cross_encoder(base_path: str, n_layers: int | None = None, max_length: int = 256,
                                       idf: torch.Tensor | None = None, lexical_weight: float = 8.0):
    """A CrossEncoder over a (bi-encoder) BERT checkpoint with the segment-cosine head (plus the
    exact-match term when an IDF table is given)."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Transformer

    transformer = Transformer(str(base_path), transformer_task="feature-extraction", max_seq_length=max_length)
    if n_layers is not None:
        bert = transformer.model
        encoder = getattr(bert, "encoder", None) or bert.bert.encoder
        encoder.layer = encoder.layer[:n_layers]
        bert.config.num_hidden_layers = n_layers
    head = SegmentCosineHead(hidden_size=transformer.get_embedding_dimension())
    ce = CrossEncoder(modules=[transformer, head], num_labels=1, max_length=max_length, device="cpu")
    return ce if idf is None else add_lexical_term(ce, idf, lexical_weight)
