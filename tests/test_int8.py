"""int8 serving of the reranker: the outlier split, the shipped model, a hub-shaped model."""
import numpy as np
import pytest
import torch
from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

from chatbot.int8 import OUTLIER_CHANNELS, OutlierSplitLinear, input_amax, is_feed_forward_output
from chatbot.rerank import Reranker


def _gelu_like_input(outliers: list[int], rows: int = 512, width: int = 1536) -> torch.Tensor:
    """Inputs shaped like a feed-forward activation: mostly near 0-2, a few channels reaching 24."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.gelu(torch.randn(rows, width, generator=g))
    x[:, outliers] *= 24 / x[:, outliers].abs().max()
    return x


def test_the_split_computes_the_same_linear_and_int8_keeps_the_resolution_the_outliers_would_take():
    torch.manual_seed(0)
    linear = torch.nn.Linear(1536, 384)
    x = _gelu_like_input([7, 900])
    exact = linear(x)
    split = OutlierSplitLinear(linear, torch.tensor([900, 7, 3, 1200]))
    assert split.outliers.tolist() == [3, 7, 900, 1200]
    torch.testing.assert_close(split(x.clone()), exact, atol=1e-4, rtol=1e-4)  # before quantizing: the same function

    plain = quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, inplace=False)
    quantized = quantize_dynamic(torch.nn.Sequential(split), {"0.inliers": default_dynamic_qconfig}, inplace=False)
    assert "quantized" in type(quantized[0].inliers).__module__
    plain_error = (plain(x.clone()) - exact).abs().mean()
    split_error = (quantized(x.clone()) - exact).abs().mean()
    assert split_error < plain_error / 3


def test_shipped_int8_splits_every_feed_forward_output_and_ranks_like_fp32():
    fp32, int8 = Reranker("shipped"), Reranker("shipped", precision="int8")
    modules = dict(int8.model.model.named_modules())
    layers = int8.model.model.config.num_hidden_layers
    splits = {n: m for n, m in modules.items() if isinstance(m, OutlierSplitLinear)}
    assert len(splits) == layers and all(is_feed_forward_output(n) for n in splits)
    assert all(len(m.outliers) == OUTLIER_CHANNELS for m in splits.values())
    encoder = {n: type(m).__module__ for n, m in modules.items() if type(m).__name__ == "Linear" and "encoder." in n}
    assert len(encoder) == 6 * layers and all("quantized" in kind for kind in encoder.values())

    question = "How long does the H2 battery last on one charge?"
    passages = ["Battery: the H2 runs for up to 10 hours on a full charge and recharges in 90 minutes.",
                "Expense claims above 2,000 euros need the approval of a director.",
                "The Rotterdam office is closed on public holidays.",
                "Payload: a single H2 carries at most 600 kg."]
    a, b = fp32.logits(question, passages), int8.logits(question, passages)
    assert np.argmax(a) == np.argmax(b) == 0
    assert np.abs(a - b).max() < 1.0  # the held-out pools moved 0.41 on average
    with pytest.raises(ValueError, match="precision"):
        Reranker("shipped", precision="fp16")


def test_the_outlier_channels_are_the_models_not_the_calibration_texts():
    """The split is found on three built-in pairs at load; it must hold for any other text."""
    model = Reranker("shipped").model
    names = [n for n, m in model.model.named_modules() if "encoder." in n and is_feed_forward_output(n)]
    builtin = input_amax(model, names)
    other = [("Who wrote the treaty of 911?", "The Duchy of Normandy began in 911 as a fiefdom, established by "
              "the treaty of Saint-Clair-sur-Epte between King Charles III and the Viking ruler Rollo."),
             ("does vitamin D reduce fractures", "In a randomised trial of 2,686 adults, vitamin D3 every four "
              "months reduced fractures by 22% (relative risk 0.78, 95% CI 0.61-0.99).")]
    elsewhere = input_amax(model, names, other)
    for name in names:
        # The outliers: far above every other channel (24.5 against 5.8 in layer 0), whatever the text.
        outliers = {int(i) for i in np.flatnonzero(elsewhere[name] > 2 * elsewhere[name].quantile(0.99))}
        assert outliers and outliers <= set(builtin[name].topk(OUTLIER_CHANNELS).indices.tolist()), name
