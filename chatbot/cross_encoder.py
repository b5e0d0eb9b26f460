"""A cross-encoder head that starts from a useful scoring function.

A plain sequence-classification cross-encoder initialised from a bi-encoder (all-MiniLM)
must learn relevance from scratch through the [CLS] token, which that checkpoint never
trained; on a CPU budget it does not leave the no-information plateau (see the team's
feasibility notes). This head instead reads the jointly encoded pair the way the bi-encoder
was trained to be read: it mean-pools the question's tokens and the passage's tokens
separately (by token type) and scores their cosine, plus a learned diagonal interaction
term that starts at zero. Training then only has to refine a ranking that already works,
while every layer still sees question and passage together.

It is a standard sentence-transformers module: a CrossEncoder saved with it loads with
`CrossEncoder(path)`, provided this package is importable.
"""

from __future__ import annotations

import torch
from sentence_transformers.base.modules import Module


class SegmentCosineHead(Module):
    config_keys = ["hidden_size", "init_scale", "init_bias"]

    def __init__(self, hidden_size: int = 384, init_scale: float = 20.0, init_bias: float = -10.0):
        super().__init__()
        self.hidden_size = hidden_size
        self.init_scale = init_scale
        self.init_bias = init_bias
        self.scale = torch.nn.Parameter(torch.tensor(float(init_scale)))
        self.bias = torch.nn.Parameter(torch.tensor(float(init_bias)))
        # Diagonal bilinear term: a learned re-weighting of dimensions, zero at start.
        self.interaction = torch.nn.Parameter(torch.zeros(hidden_size))

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
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
        return module


def build_segment_cosine_cross_encoder(base_path: str, n_layers: int | None = None, max_length: int = 256):
    """A CrossEncoder over a (bi-encoder) BERT checkpoint with the segment-cosine head."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Transformer

    transformer = Transformer(str(base_path), transformer_task="feature-extraction", max_seq_length=max_length)
    if n_layers is not None:
        bert = transformer.model
        encoder = getattr(bert, "encoder", None) or bert.bert.encoder
        encoder.layer = encoder.layer[:n_layers]
        bert.config.num_hidden_layers = n_layers
    head = SegmentCosineHead(hidden_size=transformer.get_embedding_dimension())
    return CrossEncoder(modules=[transformer, head], num_labels=1, max_length=max_length, device="cpu")
