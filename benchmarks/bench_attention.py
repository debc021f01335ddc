"""Benchmark: our explicit attention vs PyTorch's fused scaled_dot_product_attention (SDPA).

Both run in this process on the same weights and inputs; results are printed as ratios
(explicit time / SDPA time), since absolute times depend on the machine.

    python benchmarks/bench_attention.py [--repeats 10]
"""

from __future__ import annotations

import argparse

import torch
from timing import median_time  # benchmarks/timing.py, beside this script

from llmhelpers.attention import MultiHeadAttention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'batch':>5} {'seq':>5} {'d_model':>7} {'heads':>5} | "
          f"{'forward ms':>10} {'ratio':>6} | {'fwd+bwd ms':>10} {'ratio':>6}")
    for batch, seq, d_model, heads in [(8, 64, 128, 4), (8, 256, 256, 8), (4, 512, 256, 8),
                                       (2, 1024, 384, 6)]:
        explicit = MultiHeadAttention(d_model, heads, seq)
        fused = MultiHeadAttention(d_model, heads, seq, use_sdpa=True)
        fused.load_state_dict(explicit.state_dict())
        x = torch.randn(batch, seq, d_model)
        with torch.no_grad():
            torch.testing.assert_close(fused(x), explicit(x), rtol=0, atol=1e-5)
            fwd = {name: median_time(lambda m=m, x=x: m(x), args.repeats)
                   for name, m in (("explicit", explicit), ("sdpa", fused))}
        xg = x.clone().requires_grad_()
        bwd = {name: median_time(lambda m=m, xg=xg: m(xg).sum().backward(), args.repeats)
               for name, m in (("explicit", explicit), ("sdpa", fused))}
        print(f"{batch:>5} {seq:>5} {d_model:>7} {heads:>5} | "
              f"{1e3 * fwd['sdpa']:>10.2f} {fwd['explicit'] / fwd['sdpa']:>5.2f}x | "
              f"{1e3 * bwd['sdpa']:>10.2f} {bwd['explicit'] / bwd['sdpa']:>5.2f}x")
    print("ms = SDPA time; ratio = explicit / SDPA (> 1: the fused path is faster)")


if __name__ == "__main__":
    main()
