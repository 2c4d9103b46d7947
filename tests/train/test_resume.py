"""A run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import signal
import time

from train_helpers import popen_cli, read_log, read_manifest, run_cli, write_config


def _wait_for_checkpoint(proc, run, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run / "checkpoints" / "checkpoint-00000004" / "trainer_state.json").is_file():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before its first checkpoint:\n{proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no checkpoint appeared")


def _checkpoint_adapters_hold_the_checkpoint_weights(root) -> None:
    """Each kept checkpoint carries a peft adapter (for `eval --adapter 'run/checkpoints/*'`) whose LoRA
    tensors are the very ones of the checkpoint's saved training state."""
    from safetensors.torch import load_file

    from dataforge.eval.checkpoints import expand_adapters

    adapters = expand_adapters([str(root / "*")])
    assert [p.split("/")[-2] for p in adapters] == ["checkpoint-00000004", "checkpoint-00000008"]
    for adapter in adapters:
        lora = load_file(f"{adapter}/adapter_model.safetensors")
        state = load_file(f"{adapter}/../model.safetensors")
        assert lora and all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in lora)
        for name, tensor in lora.items():
            trained = name.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
            assert (state[trained] == tensor).all(), name


def test_resume_after_kill9_reaches_the_uninterrupted_final_loss(tmp_path, build_run):
    straight = tmp_path / "straight"
    cfg = write_config(tmp_path / "a.yaml", build_run, straight)
    done = run_cli("train", str(cfg), "-q")
    assert done.returncode == 0, done.stderr[-3000:]

    _checkpoint_adapters_hold_the_checkpoint_weights(straight / "checkpoints")

    killed = tmp_path / "killed"
    cfg_k = write_config(tmp_path / "b.yaml", build_run, killed)
    proc = popen_cli("train", str(cfg_k), "-q")
    _wait_for_checkpoint(proc, killed)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "adapter").exists(), "the kill came too late to interrupt the run"
    assert read_manifest(killed)["complete"] is False

    again = run_cli("train", str(cfg_k), "-q")
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr

    resumed = run_cli("train", str(cfg_k), "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = read_manifest(straight)["stats"], read_manifest(killed)["stats"]
    assert 4 <= 12 - b["steps_run"] < 12  # it really continued from a checkpoint (at step 4 or 8)
    for key in ("final_loss", "final_eval_loss", "final_eval_domain_loss", "final_eval_general_loss"):
        assert abs(a[key] - b[key]) < 1e-4, (key, a[key], b[key])
    # The resumed log reads like the uninterrupted one: same steps, same losses.
    log_a = {r["step"]: r.get("loss") for r in read_log(straight) if "loss" in r}
    log_b = {r["step"]: r.get("loss") for r in read_log(killed) if "loss" in r}
    assert sorted(log_a) == sorted(log_b) == list(range(1, 13))
    assert all(abs(log_a[s] - log_b[s]) < 1e-4 for s in log_a)
