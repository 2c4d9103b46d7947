"""QLoRA on CPU: after an eval pass, the LoRA layers over 4-bit weights still learn.

On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights after a no-grad forward in eval mode;
from then on no gradient flows back through those layers, so most LoRA matrices get none. The
control test shows that failure on this machine; the main test shows the workaround holds.
"""

from __future__ import annotations

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from dataforge.train.config import TrainConfig  # noqa: E402
from dataforge.train.model import build_model  # noqa: E402


def _qlora_model():
    torch.manual_seed(0)
    cfg = TrainConfig(method="qlora", data={"path": "unused"}, lora={"r": 8, "alpha": 16, "dropout": 0.0})
    model, info = build_model(cfg, "no", total_steps=10, on_gpu=False, bf16_ok=False)
    return model, info


def _eval_pass(model, ids):
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    model.train()


def _lora_b_with_gradient(model, ids) -> tuple[int, int, float]:
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    live = sum(g is not None and bool(g.abs().sum() > 0) for g in grads)
    return live, len(grads), out.loss.item()


def _ids():
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, 4000, (2, 48), generator=g)


def test_lora_over_4bit_weights_gets_gradients_and_learns_after_an_eval_pass(tiny_model_ready):
    model, info = _qlora_model()
    linear4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4 and all(m.support_avx512bf16_for_cpu is False for m in linear4)
    assert info.trainable_params > 0 and info.target_modules  # every linear layer but the head
    ids = _ids()
    _eval_pass(model, ids)

    live, total, first_loss = _lora_b_with_gradient(model, ids)
    assert live == total, f"only {live} of {total} LoRA B matrices got a gradient"
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(6):
        opt.step()
        opt.zero_grad()
        _eval_pass(model, ids)  # an eval between steps, as during training
        losses.append(_lora_b_with_gradient(model, ids)[2])
    a_grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert all(g is not None and g.abs().sum() > 0 for g in a_grads)
    assert losses[-1] < first_loss - 0.05, (first_loss, losses)


@pytest.mark.skipif(not bnb.functional.has_avx512bf16(), reason="the repacking only happens on CPUs with AVX512-BF16")
def test_without_the_workaround_the_eval_pass_cuts_the_gradient(tiny_model_ready):
    model, _ = _qlora_model()
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = True  # bitsandbytes' default on this CPU
    ids = _ids()
    _eval_pass(model, ids)
    live, total, _ = _lora_b_with_gradient(model, ids)
    assert live < total
