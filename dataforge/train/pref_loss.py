"""Preference losses as pure functions of sequence log-probabilities (DPO, IPO, hinge, KTO, Bradley-Terry).

They take summed completion log-probs of the policy and of the reference (the base model with the
adapter switched off) and return one loss per pair or per completion, so they can be checked against
a hand computation or TRL's trainers without a training loop around them. The definitions follow the
papers as TRL implements them: DPO (Rafailov et al. 2023) with conservative label smoothing (cDPO),
IPO (Azar et al. 2023) on per-token-averaged log-ratios, the hinge loss of SLiC, KTO (Ethayarajh et
al. 2024), and the pairwise Bradley-Terry loss of reward modelling (Ouyang et al. 2022).
"""

from __future__ import annotations

from enum import Enum

from dataforge.data.rows import IGNORE_INDEX


class LossType(str, Enum):
    sigmoid = "sigmoid"
    ipo = "ipo"
    hinge = "hinge"


def sequence_logps(logits, shift_labels):
    """(sum of completion-token log-probs, completion token count, per-token log-probs) per row.

    `shift_labels[t]` is the target of `logits[t]`, -100 on prompt and padding positions, as in
    `dataforge.train.data.Batch`; prompt-learning logits with virtual tokens in front are cut to the
    real positions.
    """
    import torch

    seq = shift_labels.shape[1]
    logits = logits[:, -seq:, :].float()
    labels = shift_labels.to(logits.device)
    mask = labels != IGNORE_INDEX
    safe = labels.masked_fill(~mask, 0)
    token_logps = torch.gather(logits.log_softmax(-1), 2, safe.unsqueeze(-1)).squeeze(-1) * mask
    return token_logps.sum(-1), mask.sum(-1), token_logps


def dpo_losses(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float, loss_type: LossType,
               label_smoothing: float = 0.0, chosen_tokens=None, rejected_tokens=None):
    """Per-pair DPO-family loss, and the implicit rewards beta * (log pi - log pi_ref) of chosen and rejected.

    sigmoid: -(1-eps) log s(beta d) - eps log s(-beta d), with d the difference of log-ratios (eps = 0
    is plain DPO). ipo: (d' - 1/(2 beta))^2, d' the difference of log-ratios averaged per completion
    token (needs the token counts). hinge: max(0, 1 - beta d).
    """
    import torch.nn.functional as F

    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    delta = chosen_ratio - rejected_ratio
    loss_type = LossType(loss_type)
    if loss_type == LossType.sigmoid:
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(-beta * delta)
    elif loss_type == LossType.hinge:
        losses = (1 - beta * delta).clamp(min=0)
    else:
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("ipo needs the completion token counts")
        avg = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (avg - 1 / (2 * beta)) ** 2
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def kto_losses(policy_logps, ref_logps, desirable, kl, *, beta: float, desirable_weight: float = 1.0,
               undesirable_weight: float = 1.0):
    """Per-completion KTO loss.

    `desirable` is a bool tensor; `kl` is the batch's detached estimate of KL(policy || reference),
    clamped at 0, which KTO uses as the reference point: a desirable completion is pushed above it and
    an undesirable one below it.
    """
    import torch

    ratio = policy_logps - ref_logps
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratio)))
    return torch.where(desirable, good, bad), beta * ratio.detach()


def bradley_terry_losses(chosen_scores, rejected_scores, margin=None):
    """Pairwise reward-model loss -log s(r_chosen - r_rejected [- margin]) per pair."""
    import torch.nn.functional as F

    diff = chosen_scores - rejected_scores
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)
