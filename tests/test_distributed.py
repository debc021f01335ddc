"""Scale-out: the training command under torchrun with 2 CPU processes (DDP over gloo) gives
the same result as one process with the same global batch."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import torch

from llmhelpers.checkpoint import load_checkpoint

TINY = ["--d-model", "32", "--n-layers", "2", "--n-heads", "2", "--context-length", "16",
        "--dropout", "0", "--steps", "4", "--warmup-steps", "1", "--lr", "3e-3",
        "--eval-interval", "2", "--eval-batches", "2", "--seed", "0", "--device", "cpu",
        "--no-progress"]


def run(command, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    from llmhelpers.tokenizer import shakespeare_bpe

    shakespeare_bpe()  # cached once here, read by every process below
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run([sys.executable, "-m", "llmhelpers.train", *TINY, "--batch-size", "4",
         "--out", str(single)], tmp_path)
    out = run([sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "llmhelpers.train", *TINY, "--batch-size", "2",
               "--out", str(ddp)], tmp_path)
    assert out.count("step 4:") == 1  # only rank 0 reports

    one, two = load_checkpoint(single), load_checkpoint(ddp)
    assert one.step == two.step == 4
    assert two.history["tokens_seen"] == one.history["tokens_seen"] == [64, 128, 192, 256]
    assert torch.allclose(torch.tensor(two.history["train_loss"]),
                          torch.tensor(one.history["train_loss"]), rtol=0, atol=1e-5)
    assert torch.allclose(torch.tensor(two.history["val_loss"]),
                          torch.tensor(one.history["val_loss"]), rtol=0, atol=1e-5)
    init = load_checkpoint(single).model  # (same config, reloaded) to check training moved it
    torch.manual_seed(0)
    fresh = type(init)(init.config)
    moved = 0.0
    for (name, a), b, c in zip(one.model.state_dict().items(), two.model.state_dict().values(),
                               fresh.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), name
        moved = max(moved, float((a - c).abs().max()))
    assert moved > 1e-3


def test_ctrl_c_under_torchrun_stops_every_rank_at_one_step_and_saves(tmp_path):
    """A terminal's Ctrl-C sends SIGINT to torchrun and to both workers (and torchrun sends it
    on again; a second Ctrl-C makes it send SIGTERM). No rank may be left waiting in a
    collective: all stop after the same step, rank 0 saves, and the workers exit well before
    torchrun's 30 s grace period ends in SIGKILL."""
    from llmhelpers.tokenizer import shakespeare_bpe

    shakespeare_bpe()
    out = tmp_path / "run"
    job = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "llmhelpers.train", *TINY, "--steps", "100000", "--batch-size", "2",
         "--checkpoint-interval", "3",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not (out / "checkpoint.json").exists():  # training has started
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()[0]
            time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):  # an impatient second Ctrl-C: torchrun
            os.killpg(job.pid, signal.SIGINT)  # then sends its workers SIGTERM
        log, _ = job.communicate(timeout=25)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    match = re.search(r"interrupted at step (\d+): saved", log)
    assert match, log[-4000:]
    assert "forcefully" not in log and "[rank" not in log, log[-4000:]  # no hang, no worker error
    saved = load_checkpoint(out)
    assert saved.step == int(match.group(1)) >= 3
    assert saved.history["step"][-1] == saved.step
