"""The DPO loss of `dataforge train --objective dpo` against TRL's DPOTrainer on one fixed batch.

Both score the same LoRA model (its adapter weights set to seeded random values, so policy and
reference differ) on the same token rows: ours through the training loop's own `DpoObjective.forward`
on a `PairBatch`, TRL's through `DPOTrainer.compute_loss` on its own collator's batch.
"""

from __future__ import annotations

import math

import pytest
import torch

from dataforge.train.config import TrainConfig
from dataforge.train.pref_data import pair_batch_from_rows
from dataforge.train.pref_loss import LossType, dpo_losses
from dataforge.train.pref_objective import DpoObjective
from tests.train.pref_rows import demo_pairs, encode

BETA = 0.2


@pytest.fixture(scope="module")
def model_and_rows(tiny_model_ready):
    from dataforge.models import load_tokenizer
    from dataforge.train.model import build_model

    cfg = TrainConfig(model="tiny", objective="dpo", data={"path": "unused"}, lora={"r": 8, "alpha": 16, "dropout": 0.0})
    torch.manual_seed(0)
    model, _ = build_model(cfg, "no", 10, on_gpu=False, bf16_ok=False)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    model.eval()
    tokenizer = load_tokenizer("tiny")
    rows = []
    for p in demo_pairs(6):
        c_ids, c_lab = encode(tokenizer, p["instruction"], p["input"], p["chosen"], 96)
        r_ids, r_lab = encode(tokenizer, p["instruction"], p["input"], p["rejected"], 96)
        rows.append({"chosen_input_ids": c_ids, "chosen_labels": c_lab, "rejected_input_ids": r_ids,
                     "rejected_labels": r_lab, "source": "domain"})
    return model, tokenizer, rows


def _ours(model, rows, pad_id, **pref) -> float:
    cfg = TrainConfig(model="tiny", objective="dpo", data={"path": "unused"}, preference={"beta": BETA, **pref})
    out = DpoObjective(cfg).forward(model, model, pair_batch_from_rows(rows, pad_id, None), "cpu")
    loss = out.losses.mean()
    if cfg.preference.rpo_alpha:
        loss = loss + cfg.preference.rpo_alpha * out.sft_nll / out.sft_tokens
    return loss.item()


@pytest.fixture(scope="module")
def trl_trainer(model_and_rows, tmp_path_factory):
    """TRL's DPOTrainer over a fresh tiny base with the same LoRA config and, copied in, the same adapter
    weights. TRL is given the base plus a peft config, so its reference is the base with adapters off."""
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from dataforge.models import resolve_model

    model, tokenizer, rows = model_and_rows
    lora = model.peft_config["default"]
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=0.0,
                             target_modules=sorted(lora.target_modules), task_type="CAUSAL_LM")
    text = datasets.Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}] * 2)
    args = DPOConfig(output_dir=str(tmp_path_factory.mktemp("trl")), beta=BETA, report_to=[], use_cpu=True,
                     max_length=None, per_device_train_batch_size=len(rows))
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"), dtype=torch.float32)
    trainer = DPOTrainer(model=base, args=args, train_dataset=text, processing_class=tokenizer, peft_config=peft_config)
    ours = dict(model.named_parameters())
    copied = 0
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_" in name:
                p.copy_(ours[name])
                copied += 1
    assert copied == sum("lora_" in n for n in ours)
    trainer.model.eval()
    yield trainer
    # TRL's Trainer leaves a process-wide AcceleratorState (its own precision) behind; later tests
    # train through dataforge's loop in this same process and need a fresh one.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def _trl(trainer, tokenizer, rows, loss_type: list[str], weights: list[float] | None = None) -> float:
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    trainer.loss_types, trainer.loss_weights = loss_type, weights or [1.0] * len(loss_type)
    examples = []
    for r in rows:
        cut = next(i for i, lab in enumerate(r["chosen_labels"]) if lab != -100)
        cut_r = next(i for i, lab in enumerate(r["rejected_labels"]) if lab != -100)
        assert r["chosen_input_ids"][:cut] == r["rejected_input_ids"][:cut_r]
        examples.append({"prompt_ids": r["chosen_input_ids"][:cut], "chosen_ids": r["chosen_input_ids"][cut:],
                         "rejected_ids": r["rejected_input_ids"][cut_r:]})
    inputs = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(examples)
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, inputs).item()


@pytest.mark.parametrize(("pref", "trl_types", "trl_weights"), [
    ({"loss_type": "sigmoid"}, ["sigmoid"], None),
    ({"loss_type": "ipo"}, ["ipo"], None),
    ({"loss_type": "hinge"}, ["hinge"], None),
    ({"loss_type": "sigmoid", "rpo_alpha": 0.5}, ["sigmoid", "sft"], [1.0, 0.5]),
], ids=["sigmoid", "ipo", "hinge", "rpo"])
def test_dpo_loss_matches_trl_dpo_trainer_on_one_batch(model_and_rows, trl_trainer, pref, trl_types, trl_weights):
    model, tokenizer, rows = model_and_rows
    with torch.no_grad():
        ours = _ours(model, rows, tokenizer.pad_token_id, **pref)
    theirs = _trl(trl_trainer, tokenizer, rows, trl_types, trl_weights)
    assert abs(ours - math.log(2)) > 1e-3  # policy and reference differ, so the check is not trivial
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_label_smoothing_is_conservative_dpo():
    """cDPO: with smoothing eps the loss is (1-eps) * DPO(d) + eps * DPO(-d), computed by hand here."""
    pc, pr, rc, rr = (torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -15.0]),
                      torch.tensor([-11.0, -19.0]), torch.tensor([-11.5, -16.0]))
    losses, _, _ = dpo_losses(pc, pr, rc, rr, beta=0.5, loss_type=LossType.sigmoid, label_smoothing=0.2)
    d = ((pc - rc) - (pr - rr)) * 0.5
    expected = [0.8 * math.log1p(math.exp(-x)) + 0.2 * math.log1p(math.exp(x)) for x in d.tolist()]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)


def test_kto_loss_pushes_desirable_above_and_undesirable_below_the_kl_reference_point():
    from dataforge.train.pref_loss import kto_losses

    policy, ref = torch.tensor([-10.0, -10.0, -8.0]), torch.tensor([-11.0, -9.0, -8.0])
    desirable = torch.tensor([True, False, True])
    losses, rewards = kto_losses(policy, ref, desirable, torch.tensor(0.5), beta=0.5, desirable_weight=1.0,
                                 undesirable_weight=2.0)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [1 - sig(0.5 * (1.0 - 0.5)), 2.0 * (1 - sig(0.5 * (0.5 - (-1.0)))), 1 - sig(0.5 * (0.0 - 0.5))]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert rewards.tolist() == pytest.approx([0.5, -0.5, 0.0])


def test_bradley_terry_loss_is_the_negative_log_sigmoid_of_the_score_difference():
    from dataforge.train.pref_loss import bradley_terry_losses

    losses = bradley_terry_losses(torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0]))
    assert losses.tolist() == pytest.approx([math.log1p(math.exp(-1.5)), math.log1p(math.exp(2.0))], abs=1e-6)
