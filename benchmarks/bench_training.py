"""Training speed and quality per compute, measured on this machine.

1. The matrix-multiply peak (float32, all threads), measured first: the ceiling for training.
2. Tokens per second and model FLOPs utilisation (MFU = achieved FLOP/s / peak) for the
   notebook-4 default configuration and for a character-level configuration (4 layers,
   4 heads, d_model 128, context 64, batch 12: the size of a well-known minimal-GPT CPU recipe).
3. Quality per compute: the validation loss per character that the default run reaches after
   60 seconds of training (the LR schedule is fitted to the time budget). Target: <= 1.80.

Run: ``python benchmarks/bench_training.py`` (add ``--seconds 30`` for a quicker look, or
``--skip-quality`` for the speed part only).
"""

from __future__ import annotations

import argparse
import time

import torch

from llmhelpers.data import load_text
from llmhelpers.model import GPTConfig, GPTModel, training_flops_per_token
from llmhelpers.tokenizer import CharTokenizer
from llmhelpers.train import (
    TrainConfig,
    Trainer,
    default_trainer,
    loss_per_character,
    matmul_peak_flops,
    model_flops_utilization,
    seed_everything,
    tokenize_corpus,
)

TARGET_NATS_PER_CHAR = 1.80


def measure_speed(trainer: Trainer, steps: int, warmup: int = 3) -> float:
    """Tokens per second over ``steps`` training steps (after ``warmup`` untimed ones)."""
    trainer.run(warmup)
    started = time.perf_counter()
    trainer.run(steps)
    seconds = time.perf_counter() - started
    return steps * trainer.global_batch_size * trainer.context_length / seconds


def character_level_trainer(steps: int) -> Trainer:
    text = load_text("tiny-shakespeare")
    tokenizer = CharTokenizer.from_text(text)
    corpus = tokenize_corpus(tokenizer, text)
    seed_everything(0)
    config = GPTConfig(vocab_size=tokenizer.n_vocab, context_length=64, d_model=128, n_heads=4,
                       n_layers=4, dropout=0.0, use_sdpa=True)
    train = TrainConfig(max_steps=steps + 10, batch_size=12, eval_interval=10**6,
                        progress=False)
    return Trainer(GPTModel(config), corpus.train_ids, corpus.val_ids, train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--speed-steps", type=int, default=30)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak = matmul_peak_flops(1024)
    print(f"float32 matmul peak (1024x1024): {peak / 1e9:.1f} GFLOP/s")

    default = default_trainer(max_steps=args.speed_steps + 10, eval_interval=10**6,
                              progress=False)
    char = character_level_trainer(args.speed_steps)
    for name, trainer in (("default (BPE-512)", default), ("character-level", char)):
        tokens_per_s = measure_speed(trainer, args.speed_steps)
        flops = training_flops_per_token(trainer.model.config)
        mfu = model_flops_utilization(tokens_per_s, flops, peak)
        print(f"{name:>18}: {tokens_per_s:8,.0f} tokens/s, {flops / 1e6:.2f} MFLOP/token, "
              f"{tokens_per_s * flops / 1e9:.1f} GFLOP/s, MFU {mfu:.1%}")

    if args.skip_quality:
        return
    trainer = default_trainer(max_steps=10**6, time_limit_s=args.seconds,
                              eval_interval=10**6, progress=False)
    trainer.run()
    val_loss = trainer.evaluate(max_batches=None)  # the whole validation split
    corpus = tokenize_corpus(trainer.tokenizer, load_text("tiny-shakespeare"))
    per_char = loss_per_character(val_loss, len(corpus.val_ids), corpus.n_val_chars)
    print(f"quality after {trainer.history.train_seconds:.0f} s of training "
          f"({trainer.step} steps, {trainer.history.tokens_seen[-1]:,} tokens): "
          f"validation loss {val_loss:.3f} nats/token = {per_char:.3f} nats/char "
          f"({corpus.val_chars_per_token:.2f} chars/token); target <= {TARGET_NATS_PER_CHAR} "
          f"-> {'met' if per_char <= TARGET_NATS_PER_CHAR else 'NOT met'}")


if __name__ == "__main__":
    main()
