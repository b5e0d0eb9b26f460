"""Dynamic int8 serving of a cross-encoder's encoder: weights int8, activations quantized per batch.

On CPUs with VNNI an int8 product runs about twice as fast as an fp32 one. A per-tensor activation
scale is what makes dynamic int8 cheap, and also what it cannot afford: one very large channel
stretches the scale and the rest of the tensor loses its resolution. Every BERT-style encoder has
such channels in one place, the input of each layer's feed-forward output projection (the GELU
output): in the shipped model one to two channels per layer reach 15-24 while the median channel
peaks at 1.4-1.7. `OutlierSplitLinear` serves those few channels in fp32 and the rest in int8.

Measured on the shipped model, held-out SciFact pools, rerank depth 20 (nDCG@10 / mean logit error
against fp32): fp32 0.791 / 0; every linear int8 0.767 / 2.1; the projection kept whole in fp32
0.791 / 0.39; the projection split with 4 fp32 channels 0.800 / 0.41, and a pool of 20 scored 23%
faster than with the projection kept whole.

torch is imported at the top: this module is imported only when a reranker loads in int8.
"""

from __future__ import annotations

import warnings

import torch

from chatbot.errors import ModelLoadError

# Input channels of each feed-forward output projection kept in fp32. The shipped model needs 1-2
# per layer; 1 left a 0.66 logit error, 4 gave 0.41 (the error of quantizing nothing there), 8 no
# better. The fp32 side costs 4 of 1536 columns.
OUTLIER_CHANNELS = 4

# Where the outlier channels are is a property of the weights, not of the text: in the shipped
# model the same channels peak at the same values (24.5; 20.4; 17.4 and 14.6) on the sample knowledge
# base, SciFact, SQuAD and a two-word pair, so they sit on tokens every pair has, not on content.
# A few ordinary pairs find them at load, for any model.
CALIBRATION_PAIRS = (
    ("How long does the battery last on a full charge?",
     "The battery lasts about eight hours of continuous use. Charging from empty takes two hours; "
     "a 30-minute charge gives roughly three hours of use."),
    ("Who approves travel expenses over the limit?",
     "Expenses above the nightly hotel limit need written approval from your manager before booking. "
     "Receipts must be submitted within 30 days, or the claim is returned."),
    ("What causes the error code E42?",
     "E42 means the lift motor drew more current than its rating for over two seconds, usually "
     "because the load exceeds 600 kg or the arm is blocked. Clear the obstruction and restart."),
)


class OutlierSplitLinear(torch.nn.Module):
    """`linear` with its input channels `outliers` multiplied in fp32 and the others by `inliers`,
    a linear layer that `quantize_int8` turns into dynamic int8."""

    def __init__(self, linear: torch.nn.Linear, outliers: torch.Tensor):
        super().__init__()
        weight = linear.weight.detach()
        self.register_buffer("outliers", outliers.sort().values)
        self.register_buffer("outlier_weight", weight[:, self.outliers].clone())
        self.inliers = torch.nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
        inlier_weight = weight.clone()
        # Their input is zeroed anyway; zeroed weights also leave the int8 weight scale to the rest.
        inlier_weight[:, self.outliers] = 0
        self.inliers.weight = torch.nn.Parameter(inlier_weight, requires_grad=False)
        if linear.bias is not None:
            self.inliers.bias = torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outlier_input = x[..., self.outliers]  # indexing copies: zeroing x below leaves it intact
        # Zeroed in place, not copied: x is the GELU output, made fresh for this projection and read
        # by nothing else, and a copy of it (the largest tensor in the layer) costs more than the split saves.
        x[..., self.outliers] = 0
        return self.inliers(x) + torch.nn.functional.linear(outlier_input, self.outlier_weight)


def is_feed_forward_output(name: str) -> bool:
    # BERT, MiniLM, RoBERTa and ELECTRA all name it `encoder.layer.N.output.dense`; the attention
    # block's own `attention.output.dense` reads well-behaved inputs.
    return name.endswith("output.dense") and "attention" not in name


def input_amax(cross_encoder, names: list[str], pairs=CALIBRATION_PAIRS) -> dict[str, torch.Tensor]:
    """Per-channel largest |input| of each named module of `cross_encoder` over `pairs`."""
    amax: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, inputs, output):
            seen = inputs[0].detach().abs().flatten(0, -2).amax(0)
            amax[name] = torch.maximum(amax[name], seen) if name in amax else seen
        return record

    model = cross_encoder.model
    handles = [model.get_submodule(name).register_forward_hook(hook(name)) for name in names]
    try:
        cross_encoder.predict(list(pairs), batch_size=len(pairs),
                              activation_fn=torch.nn.Identity(), show_progress_bar=False)
    finally:
        for handle in handles:
            handle.remove()
    return amax


def quantize_int8(cross_encoder, outlier_channels: int = OUTLIER_CHANNELS) -> int:
    """Serve `cross_encoder`'s encoder linear layers in dynamic int8, in place; returns how many.
    The pooler and classifier stay fp32: they see one vector per pair and cost nothing."""
    try:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    except ImportError as e:  # removed from some future torch: say which setting avoids it
        raise ModelLoadError("int8 reranking needs torch.ao.quantization, which this torch lacks: "
                             "set config key 'reranker_precision' to 'fp32'") from e
    model = cross_encoder.model
    linears = [name for name, module in model.named_modules()
               if type(module) is torch.nn.Linear and "encoder." in name]
    if not linears:
        return 0
    split = [name for name in linears if is_feed_forward_output(name)]
    amax = input_amax(cross_encoder, split)
    for name in split:
        parent, _, attribute = name.rpartition(".")
        linear = model.get_submodule(name)
        outliers = amax[name].topk(min(outlier_channels, linear.in_features)).indices
        setattr(model.get_submodule(parent), attribute, OutlierSplitLinear(linear, outliers))
    layers = [f"{name}.inliers" if name in split else name for name in linears]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the API's deprecation notice, once per load
        quantize_dynamic(model, {name: default_dynamic_qconfig for name in layers}, inplace=True)
    return len(layers)
