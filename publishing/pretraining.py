"""The pre-training prose of both cards: the repository's `pretraining` section (the release run's report) and the
Hub card's "Pre-training" section (this checkpoint), with what they share: the corpus counts read from metadata.json
and the paragraph that introduces the MPP accuracy table against the rules that learn nothing."""

from __future__ import annotations

import json
from pathlib import Path

# The three rules of `modeling_shopperbert.mpp_rules` the MPP accuracy table compares against.
PRIOR_RULE = "the prior (the head's most frequent training class)"
USER_MODE_RULE = "the user's most frequent category among their unmasked purchases (user mode)"
BASKET = "the unmasked purchases of the same basket, i.e. same date and hour, else the user mode (basket mode)"


def fmt_int(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def corpus_counts(meta: dict) -> tuple:
    """(training households, validation households, purchases kept) of a data_prep metadata.json (None if absent)."""
    splits = meta.get("splits", {})
    return (splits.get("train", {}).get("users"), splits.get("validation", {}).get("users"),
            meta.get("counts", {}).get("purchases_kept"))


def mpp_rules_paragraph(loss: float, step: int | None = None, count: int | None = None) -> str:
    """The sentence above the MPP accuracy table: the validation loss, then the rules that learn nothing.

    With `step` and `count` (the repository card, a report of the run) it names the step and the number of masked
    purchases; without them (the Hub card, whose heading names the step) it is the shorter wording.
    """
    if step is None:
        return (f"Validation MPP loss {loss:.4f}. Accuracy on masked purchases (fixed masks) against three rules that "
                f"learn nothing: {PRIOR_RULE}, {USER_MODE_RULE}, and the most frequent among {BASKET}:")
    return (f"Validation MPP loss {loss:.4f} at step {step}. Accuracy on the {count:,} masked purchases of the "
            f"held-out households (fixed masks), against rules that learn nothing: {PRIOR_RULE}; {USER_MODE_RULE}; "
            f"the most frequent category among {BASKET}:")


# ---------------------------------------------------------------------------------------------------------------
# The repository card (`<!-- pretraining:start -->` section of model_card.md)
# ---------------------------------------------------------------------------------------------------------------
def pretraining_section(run_dir: Path, figure: str | None = None, sources: list[str] | None = None) -> str:
    """The pre-training data, run and the 'does it learn' table (validation MPP accuracy vs the no-learning rules);
    `sources` (relative paths of the files read) are named under it."""
    from modeling_shopperbert.contract import MPP_HEADS
    from modeling_shopperbert.mpp_rules import rule_table

    results = json.loads((run_dir / "eval_results.json").read_text())
    run = json.loads((run_dir / "run_config.json").read_text())
    meta_file = run_dir / "final" / "metadata.json"
    if not meta_file.is_file():  # a committed copy of a run's small files keeps metadata.json beside them
        meta_file = run_dir / "metadata.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    lines = [
        _repo_data_sentence(run["args"], run["model_config"], meta),
        "",
        _repo_run_sentence(run["args"], run["model_config"], results),
        "",
        mpp_rules_paragraph(results["eval/loss"], results["step"], results.get("eval/count_month", 0)),
        "",
        rule_table(results, MPP_HEADS, model_name="ShopperBERT", bold_no=True),
    ]
    if figure:
        lines += ["", f"![MPP loss curve: training and validation]({figure})"]
    elif (run_dir / "loss_curve.png").is_file():
        lines += ["", f"MPP loss curve: `{run_dir / 'loss_curve.png'}`."]
    if sources:
        lines += ["", "Source files: " + ", ".join(f"`{s}`" for s in sources) + " (written by `train.py`)."]
    return "\n".join(lines)


def _repo_data_sentence(args: dict, config: dict, meta: dict) -> str:
    train_users, val_users, purchases = corpus_counts(meta)
    if not (isinstance(train_users, int) and isinstance(purchases, int)):
        return "Pre-trained by `train.py`."
    return (f"Pre-trained by `train.py` ({args['preset']} preset: H={config['hidden_size']}, "
            f"L={config['num_hidden_layers']}, A={config['num_attention_heads']}, up to "
            f"{config['max_position_embeddings'] - 1} purchases; {args['num_parameters']:,} parameters with the MPP "
            f"heads) on the {meta.get('source', '?')} purchases before {str(meta.get('end_date', '?'))[:10]}: "
            f"{train_users:,} training and {val_users:,} validation households, {purchases:,} purchases.")


def _repo_run_sentence(args: dict, config: dict, results: dict) -> str:
    precision = {"no": "fp32"}.get(args["mixed_precision_resolved"], args["mixed_precision_resolved"])
    contrastive = (f" + {config['contrastive_weight']:g} x InfoNCE (two views, temperature "
                   f"{config.get('contrastive_temperature', 0.1):g})" if config.get("contrastive_weight") else "")
    contrastive += (f" + {config['profile_weight']:g} x profile (the user vector predicts the category_2 values "
                    "bought)" if config.get("profile_weight") else "")
    stopping = (f", early stopping after {args['early_stopping_patience']} evaluations without a lower validation "
                f"loss ({'triggered' if results.get('stopped_early') else 'not triggered'})"
                if args.get("early_stopping_patience") else "")
    return (f"Run: {args['total_steps']} optimizer steps ({args['steps_per_epoch']} per epoch), global batch "
            f"{args['batch_size']}, peak learning rate {args['learning_rate']:g} (AdamW 0.9/0.999, weight decay "
            f"{args['weight_decay']:g}, {args['warmup_steps']} warm-up steps then cosine), representation "
            f"`{config['user_representation']}`, input combination `{config.get('embedding_combination', 'mean')}`, "
            f"objective MPP{contrastive}, augmentation {'on' if args['augmentation'] else 'off'}, {precision}, "
            f"{args['num_processes']} process(es){stopping}.")


# ---------------------------------------------------------------------------------------------------------------
# The Hub card ("## Pre-training" of README.md)
# ---------------------------------------------------------------------------------------------------------------
def hub_pretraining_section(meta: dict, info: dict, args: dict, which: str, files: list[str]) -> list[str]:
    """The corpus, the run (`args`: train.py's resolved arguments), which checkpoint this is (`which`: its folder
    name), its validation MPP accuracy against the rules, and the loss curve when `files` ship it."""
    from modeling_shopperbert.contract import MPP_HEADS
    from modeling_shopperbert.mpp_rules import rule_table

    lines = ["## Pre-training", ""]
    if meta.get("splits", {}):
        train_users, val_users, purchases = corpus_counts(meta)
        lines += [f"Data: {fmt_int(train_users)} training and {fmt_int(val_users)} validation households, "
                  f"{fmt_int(purchases)} purchases before {meta.get('end_date') or '?'}.", ""]
    if args:
        lines += [_hub_run_sentence(args), ""]
    step = info.get("step")
    if step is not None:
        kind = ("the lowest validation MPP loss of the run" if which == "best"
                else "the end of the run" if which == "final" else "this checkpoint")
        lines += [f"This checkpoint: step {step} ({kind}).", ""]
    if "eval/loss" in info:
        lines += [f"### Masked purchase prediction on validation households (step {step})", "",
                  mpp_rules_paragraph(info["eval/loss"]), "",
                  rule_table(info, MPP_HEADS, model_name="accuracy", bold_no=True, with_count=True), ""]
    else:
        lines += ["No validation MPP metrics were recorded with this checkpoint (no training_info.json).", ""]
    if "loss_curve.png" in files:
        lines += ["![MPP loss curve](loss_curve.png)", ""]
    return lines


def _hub_run_sentence(args: dict) -> str:
    steps = args.get("total_steps", args.get("max_steps"))
    bits = [f"preset `{args.get('preset', '?')}`", f"{steps} optimizer steps" if steps else None,
            f"global batch {args['batch_size']}" if "batch_size" in args else None,
            f"peak learning rate {args['learning_rate']:g}" if "learning_rate" in args else None,
            f"weight decay {args['weight_decay']:g}" if "weight_decay" in args else None,
            f"{args['warmup_steps']} warm-up steps then cosine" if args.get("warmup_steps") is not None else None,
            f"augmentation {'on' if args['augmentation'] else 'off'}" if "augmentation" in args else None,
            f"precision {args['mixed_precision_resolved']}" if "mixed_precision_resolved" in args else None,
            f"{args['num_processes']} process(es)" if "num_processes" in args else None,
            f"seed {args['seed']}" if "seed" in args else None]
    return "Run (`train.py`, AdamW): " + ", ".join(b for b in bits if b) + "."
