"""Headless tests for the model-size calculator and the notebook-3 figures and tables."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from llmhelpers.model import (  # noqa: E402
    GPTConfig,
    LayerNorm,
    forward_flops_per_token,
    kv_cache_bytes,
    parameter_count,
)
from llmhelpers.plots import model as plots  # noqa: E402
from llmhelpers.widgets.model import ModelSizeCalculator  # noqa: E402


def test_calculator_starts_at_gpt2_small():
    calc = ModelSizeCalculator()
    assert calc.config == dataclasses.replace(GPTConfig.gpt2("124M"), valid_vocab_size=None)
    assert calc.report["parameters"] == 124_439_808
    assert "124.4 M parameters" in calc.summary
    assert "474.7 MiB" in calc.html  # 124,439,808 x 4 bytes
    assert calc.output.value == calc.html


def test_calculator_follows_every_slider():
    calc = ModelSizeCalculator()
    calc.n_layers.value = 24
    calc.d_model.value = 1024
    calc.n_heads.value = 16
    assert calc.report["parameters"] == 354_823_168  # GPT-2 medium
    calc.context_length.value = 2048
    calc.vocab_size.value = 32_000
    expected = GPTConfig(
        vocab_size=32_000, context_length=2048, d_model=1024, n_heads=16, n_layers=24,
        qkv_bias=True, tie_weights=True,
    )  # fmt: skip
    assert calc.config == expected
    assert calc.report["parameters"] == parameter_count(expected)
    assert calc.report["forward FLOPs/token"] == forward_flops_per_token(expected)
    assert calc.report["KV cache, full context (bytes)"] == kv_cache_bytes(expected)
    assert "head width 64" in calc.summary


def test_calculator_dtype_halves_memory():
    calc = ModelSizeCalculator()
    fp32 = calc.report["weights memory (bytes)"]
    kv32 = calc.report["KV cache, full context (bytes)"]
    calc.dtype.value = "bfloat16"
    assert calc.report["weights memory (bytes)"] == fp32 // 2
    assert calc.report["KV cache, full context (bytes)"] == kv32 // 2
    assert "in bfloat16" in calc.summary


def test_calculator_explains_an_invalid_shape_and_recovers():
    calc = ModelSizeCalculator()
    calc.n_heads.value = 7  # 768 is not divisible by 7
    assert calc.config is None and calc.report == {}
    assert "divisible by n_heads" in calc.html
    calc.n_heads.value = 8
    assert calc.config is not None and calc.config.head_dim == 96


def test_calculator_from_a_custom_start():
    start = GPTConfig.cpu_default(vocab_size=2048)
    calc = ModelSizeCalculator(start)
    assert calc.report["parameters"] == parameter_count(start)


def test_figures_and_tables():
    x = torch.randn(4, 32) * 3 + 1
    fig = plots.plot_layernorm_effect(x, LayerNorm(32)(x))
    assert "std 1.00" in fig.axes[1].get_legend().get_texts()[0].get_text()
    assert len(plots.plot_gelu_vs_relu().axes) == 2
    fig = plots.plot_gradient_norms([1.0, 0.5], [1e-6, 0.1])
    assert fig.axes[0].get_yscale() == "log"
    fig = plots.plot_parameter_breakdown({"a": GPTConfig.gpt2(), "b": GPTConfig.cpu_default(100)})
    assert fig.axes[0].get_title() == "a: 124.4 M parameters"
    table = plots.size_table({"GPT-2 124M": GPTConfig.gpt2()})
    assert "GPT-2 124M" in table and "124.4 M" in table and "72.0 MiB" in table
    assert "&lt;b&gt;" in plots.html_table(["x"], [["<b>"]])  # escaped
    shapes = plots.shape_table([("tok_emb", (2, 5, 8))])
    assert "(2, 5, 8)" in shapes


def test_calculator_shows_a_custom_start_exactly_and_honours_d_ff():
    # Every value outside the default slider ranges, and a non-default feed-forward width.
    start = GPTConfig(
        vocab_size=100, context_length=40, d_model=40, n_heads=2, n_layers=150, d_ff=100,
        qkv_bias=True,
    )  # fmt: skip
    calc = ModelSizeCalculator(start)
    assert calc.config == start
    assert calc.report["parameters"] == parameter_count(start)
    assert not calc.ff_default.value and not calc.d_ff.disabled
    assert "feed-forward width 100" in calc.summary
    calc.d_ff.value = 60
    assert calc.config.ff_dim == 60
    calc.ff_default.value = True  # back to 4 x d_model, following d_model
    assert calc.config.d_ff is None and calc.d_ff.value == 160 and calc.d_ff.disabled
    calc.d_model.value = 80
    assert calc.config.ff_dim == calc.d_ff.value == 320
    assert calc.report["parameters"] == parameter_count(calc.config)


def test_calculator_reaches_gpt3():
    calc = ModelSizeCalculator()
    assert calc.n_heads.max >= 96 and calc.n_layers.max >= 96 and calc.d_model.max >= 12_288
    calc.d_model.value = 12_288
    calc.n_heads.value = 96
    calc.n_layers.value = 96
    calc.context_length.value = 2048
    gpt3 = GPTConfig(
        vocab_size=50_257, context_length=2048, d_model=12_288, n_heads=96, n_layers=96,
        qkv_bias=True, tie_weights=True,
    )  # fmt: skip
    assert calc.config == gpt3 and calc.config.ff_dim == 49_152
    assert calc.report["parameters"] == parameter_count(gpt3) == 174_604_259_328
    assert "174.6 B parameters" in calc.summary


def test_tables_and_legends_read_correctly():
    table = plots.size_table({"GPT-2 1558M": GPTConfig.gpt2("1558M")})
    assert "(bytes)" not in table and "weights memory (float32)" in table
    assert "5.8 GiB" in table and "1.56 B" in table  # weights; parameters with the tied head
    assert "1.64 B" in table  # 1,557,611,200 + 50,257 x 1,600 with a separate head
    assert "parameters, head untied" in table and "tied" in table
    calc = ModelSizeCalculator()
    assert "(bytes)" not in calc.html and "weights memory (float32)" in calc.html
    assert "parameters, head untied" in calc.html
    # A mean that rounds to zero is written +0.00, never -0.00; labels name the vectors.
    before = torch.tensor([[-1.0, 0.999, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    after = LayerNorm(4)(before).detach()
    fig = plots.plot_layernorm_effect(before, after, labels=["first", "second"])
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts[0] == "first: mean +0.00, std 0.71" and texts[1].startswith("second: mean +2.50")
