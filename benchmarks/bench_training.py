"""Training speed and quality per compute, measured on this machine.

1. The float32 matrix-multiply peak, measured first: the ceiling for training. Measured for one
   thread and for PyTorch's default thread count.
2. Tokens per second and model FLOPs utilisation (MFU = achieved FLOP/s / peak at the same
   thread count) for the notebook-4 default configuration and for a character-level
   configuration of 4 layers, 4 heads, d_model 128, context 64, batch 12 (the size of a
   well-known minimal-GPT CPU recipe).
3. Quality per compute: the validation loss per character (whole validation split) that the
   default configuration reaches after 60 seconds of training, with the learning-rate decay
   fitted to the time budget. Two ways of using the machine:
   a. one process, as configured by default (one thread: see ``DEFAULT_TRAINING``);
   b. ``torchrun`` with one single-threaded process per core (DistributedDataParallel over gloo,
      so the global batch is ``batch_size x processes``).
   Target: at most 1.80 nats per character.

Run: ``python benchmarks/bench_training.py`` (``--seconds 30`` for a quicker look,
``--skip-quality`` for the speed part only). Small models are very sensitive to other programs
running at the same time, above all with several threads: benchmark on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from llmhelpers.checkpoint import load_checkpoint
from llmhelpers.data import load_text
from llmhelpers.model import GPTConfig, GPTModel, training_flops_per_token
from llmhelpers.tokenizer import CharTokenizer, shakespeare_bpe
from llmhelpers.train import (
    DEFAULT_VOCAB_SIZE,
    TrainConfig,
    Trainer,
    default_trainer,
    evaluate_loss,
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
                       n_layers=4, dropout=0.0, use_sdpa=True, use_fused_ops=True)
    train = TrainConfig(max_steps=steps + 10, batch_size=12, eval_interval=10**6,
                        progress=False)
    return Trainer(GPTModel(config), corpus.train_ids, corpus.val_ids, train)


def report_quality(label: str, model, seconds: float, steps: int, tokens: int) -> float:
    tokenizer = shakespeare_bpe(DEFAULT_VOCAB_SIZE)
    corpus = tokenize_corpus(tokenizer, load_text("tiny-shakespeare"))
    context = model.config.context_length
    from llmhelpers.batches import SlidingWindowDataset

    windows = SlidingWindowDataset(corpus.val_ids, context, context)
    val_loss = evaluate_loss(model, windows, batch_size=32)  # the whole validation split
    per_char = loss_per_character(val_loss, len(corpus.val_ids), corpus.n_val_chars)
    verdict = "met" if per_char <= TARGET_NATS_PER_CHAR else "NOT met"
    print(f"{label}: {seconds:.0f} s, {steps} steps, {tokens:,} tokens -> validation "
          f"{val_loss:.3f} nats/token = {per_char:.3f} nats/char "
          f"({corpus.val_chars_per_token:.2f} chars/token); target <= {TARGET_NATS_PER_CHAR}: "
          f"{verdict}")
    return per_char


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--speed-steps", type=int, default=40)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()

    default_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, default {default_threads} threads")
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        peak = matmul_peak_flops(1024)
        print(f"\n{threads} thread(s): float32 matmul peak {peak / 1e9:.1f} GFLOP/s")
        default = default_trainer(max_steps=args.speed_steps + 10, eval_interval=10**6,
                                  progress=False)
        char = character_level_trainer(args.speed_steps)
        for name, trainer in (("default (BPE-512)", default), ("character-level", char)):
            tokens_per_s = measure_speed(trainer, args.speed_steps)
            flops = training_flops_per_token(trainer.model.config)
            mfu = model_flops_utilization(tokens_per_s, flops, peak)
            print(f"  {name:>18}: {tokens_per_s:8,.0f} tokens/s, {flops / 1e6:.2f} MFLOP/token, "
                  f"{tokens_per_s * flops / 1e9:5.1f} GFLOP/s, MFU {mfu:.1%}")
    torch.set_num_threads(default_threads)
    if args.skip_quality:
        return

    print(f"\nQuality after {args.seconds:.0f} s of training (default configuration):")
    trainer = default_trainer(max_steps=10**6, time_limit_s=args.seconds, eval_interval=10**6,
                              progress=False)
    trainer.run()
    history = trainer.history
    threads = trainer.config.num_threads or torch.get_num_threads()
    report_quality(f"  a. 1 process x {threads} thread(s), batch {trainer.global_batch_size}",
                   trainer.model, history.train_seconds, trainer.step, history.tokens_seen[-1])

    processes = min(os.cpu_count() or 1, 8)
    if processes < 2:
        return
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", "-m", "llmhelpers.train", "--out", out,
                   "--steps", str(10**6), "--time-limit-s", str(args.seconds),
                   "--eval-interval", str(10**6), "--no-progress"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            print(result.stderr[-3000:])
            raise SystemExit("the torchrun benchmark failed")
        loaded = load_checkpoint(Path(out))
        history = loaded.history
        report_quality(f"  b. torchrun {processes} processes x 1 thread, global batch "
                       f"{loaded.train_config['batch_size'] * processes}", loaded.model.eval(),
                       history["train_seconds"], loaded.step, history["tokens_seen"][-1])


if __name__ == "__main__":
    main()
