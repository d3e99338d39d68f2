"""Validation of masked purchase prediction (MPP) during pre-training: the loss and each head's accuracy on held-out
users with fixed masks, beside baselines that learn nothing (the training prior, and for the category heads the
user-mode and basket-mode rules), so that a number in `eval_results.json` says how much the model learned.
"""

from __future__ import annotations

import numpy as np
import torch

from modeling_shopperbert import MPP_HEADS
from modeling_shopperbert.configuration_shopperbert import CATEGORY_FIELDS, CLS_ID, UNK_ID
from modeling_shopperbert.mpp_rules import rule_table
from pretraining.errors import RunError


def majority_classes(train_dataset) -> list[int]:
    """The prior baseline: each head's most frequent class among the training purchases (unknown excluded)."""
    majority = []
    for name in MPP_HEADS:
        counts = np.zeros(1, dtype=np.int64)
        for chunk in train_dataset.with_format("numpy", columns=[name]).iter(batch_size=1024):
            values = np.concatenate(list(chunk[name])) if len(chunk[name]) else np.zeros(0, dtype=np.int64)
            if name in CATEGORY_FIELDS:
                values = values[values != UNK_ID]
            grown = np.bincount(values)
            if len(grown) > len(counts):
                counts = np.pad(counts, (0, len(grown) - len(counts)))
            counts[: len(grown)] += grown
        majority.append(int(counts.argmax()))
    return majority


def rule_predictions(batch: dict, k: int, fallback: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two no-learning rules for category head `k` on the masked purchases of a batch, in `masked_positions` order:

    - user mode: the user's most frequent category among their purchases that were not selected for prediction;
    - basket mode: the most frequent category among the unselected purchases of the same basket (same date and
      hour), else the user mode.
    Either falls back to `fallback` (the training prior) when it has nothing to count. Returns two `(N,)` tensors.
    """
    selected = batch["masked_positions"].bool()  # (B, T)
    category = batch["category_ids"][..., k]  # (B, T) original ids wherever not selected
    visible = (batch["category_ids"][..., 0] > CLS_ID) & ~selected & (category != UNK_ID)  # (B, T)
    dates = torch.where(selected.unsqueeze(-1), batch["labels"][..., len(CATEGORY_FIELDS):],
                        batch["date_ids"])  # (B, T, 5) original dates everywhere
    basket = dates[..., 0]
    for j in (1, 2, 4):  # year, month, day, hour (weekday follows from the day)
        basket = basket * 64 + dates[..., j]  # (B, T) one key per date and hour
    size = int(category.max()) + 1
    weights = visible.float()  # (B, T)
    user_counts = torch.zeros(category.shape[0], size).scatter_add_(1, category * visible, weights)  # (B, V)
    user_pred = torch.where(user_counts.sum(1) > 0, user_counts.argmax(1), fallback)  # (B,)
    row = selected.nonzero(as_tuple=True)[0]  # (N,)
    user_mode = user_pred[row]  # (N,)
    same = (basket[row] == basket[selected].unsqueeze(-1)) & visible[row]  # (N, T)
    basket_counts = torch.zeros(len(row), size).scatter_add_(1, category[row] * same, same.float())  # (N, V)
    basket_mode = torch.where(same.any(1), basket_counts.argmax(1), user_mode)  # (N,)
    return user_mode, basket_mode


@torch.no_grad()
def evaluate_mpp(model, dataloader, accelerator, majority: list[int] | None = None) -> dict[str, float]:
    """Validation MPP loss and each head's accuracy on held-out users with fixed masks, beside three baselines that
    learn nothing: the prior (the training majority class), and for the category heads the user-mode and
    basket-mode rules of `rule_predictions`.

    Per-user sums are gathered across processes with `gather_for_metrics` (which drops the samples duplicated to
    even out the last batch), so the numbers do not depend on the number of processes.
    """
    model.eval()
    num_heads = len(MPP_HEADS)
    sums = ("loss", "correct", "count", "prior", "user_mode", "basket_mode")
    totals = torch.zeros(len(sums), num_heads, dtype=torch.float64)
    for batch in dataloader:
        outputs = model(**batch)
        positions = batch["masked_positions"]  # (B, T)
        row = positions.nonzero(as_tuple=True)[0]  # (N,)
        target = batch["labels"][positions]  # (N, 9)
        per_user = torch.zeros(positions.shape[0], len(sums), num_heads, device=target.device)  # (B, 6, 9)
        cpu_batch = {key: value.cpu() for key, value in batch.items()}  # the rules count on the CPU, once a batch
        for k, logits in enumerate(outputs.logits):
            valid = target[:, k].ne(-100)
            loss = torch.nn.functional.cross_entropy(logits.float(), target[:, k], ignore_index=-100,
                                                     reduction="none")
            hits = [loss * valid, (logits.argmax(-1) == target[:, k]) & valid, valid]
            if majority is not None:
                hits.append((target[:, k] == majority[k]) & valid)
            if majority is not None and k < len(CATEGORY_FIELDS):
                for prediction in rule_predictions(cpu_batch, k, majority[k]):
                    hits.append((prediction.to(target.device) == target[:, k]) & valid)
            for j, hit in enumerate(hits):
                per_user[:, j, k].index_add_(0, row, hit.float())
        per_user = accelerator.gather_for_metrics(per_user)  # (users, 6, 9)
        totals += per_user.sum(0).double().cpu()
    model.train()
    counts = totals[2].clamp(min=1)
    head_loss = totals[0] / counts
    has = (totals[2] > 0).double()
    if not bool(has.any()):
        raise RunError("the validation users hold no masked purchase to evaluate", exit_code=1)
    results = {"eval/loss": float((head_loss * has).sum() / has.sum().clamp(min=1))}
    for k, name in enumerate(MPP_HEADS):
        results[f"eval/loss_{name}"] = float(head_loss[k])
        results[f"eval/accuracy_{name}"] = float(totals[1, k] / counts[k])
        if majority is not None:
            results[f"eval/prior_accuracy_{name}"] = float(totals[3, k] / counts[k])
        if majority is not None and k < len(CATEGORY_FIELDS):
            results[f"eval/user_mode_accuracy_{name}"] = float(totals[4, k] / counts[k])
            results[f"eval/basket_mode_accuracy_{name}"] = float(totals[5, k] / counts[k])
        results[f"eval/count_{name}"] = int(totals[2, k])
    return results


def mpp_diagnostics_table(results: dict) -> str:
    """Markdown table: per head, the model's validation accuracy beside the prior and the two rules, and whether it
    beats the strongest of them."""
    return rule_table(results, MPP_HEADS)
