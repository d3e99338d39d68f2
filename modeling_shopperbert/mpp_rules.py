"""How a checkpoint's masked purchase prediction compares with rules that learn nothing: one place for the tables of
`train.py` (`mpp_diagnostics.md`), the generated model card and the published folder's card. Standard library only.

The rules, measured by `train.py` on the same validation households and fixed masks as the model:
    prior        the head's most frequent class among the training purchases
    user_mode    the user's most frequent category among their unmasked purchases (category heads)
    basket_mode  the most frequent category among the unmasked purchases of the same basket (date and hour), else
                 the user mode (category heads)
"""

RULES = ("prior", "user_mode", "basket_mode")


def rule_rows(results: dict, heads) -> list[dict]:
    """One row per head present in `results` (train.py's `eval/...` keys): the model's accuracy, each rule's (None
    where not measured), and `verdict`: "yes" when the model beats the strongest rule, "tie (one class)" when the
    prior is already perfect, else "no"."""
    rows = []
    for head in heads:
        if f"eval/accuracy_{head}" not in results:
            continue
        accuracy = results[f"eval/accuracy_{head}"]
        rules = {rule: results.get(f"eval/{rule}_accuracy_{head}") for rule in RULES}
        known = [value for value in rules.values() if value is not None]
        if not known:
            verdict = "n/a"
        elif accuracy > max(known):
            verdict = "yes"
        else:
            verdict = "tie (one class)" if (rules["prior"] or 0) >= 0.9999 else "no"
        rows.append({"head": head, "accuracy": accuracy, **rules, "verdict": verdict,
                     "count": results.get(f"eval/count_{head}")})
    return rows


def rule_table(results: dict, heads, model_name: str = "model", bold_no: bool = False,
               with_count: bool = False) -> str:
    """Markdown table of `rule_rows`."""
    header = f"| head | {model_name} | prior | user mode | basket mode | beats the strongest rule? |"
    rule_line = "|---|---:|---:|---:|---:|---|"
    if with_count:
        header, rule_line = header + " masked tokens |", rule_line + "---:|"
    lines = [header, rule_line]
    for row in rule_rows(results, heads):
        cells = " | ".join("–" if row[r] is None else f"{row[r]:.4f}" for r in RULES)
        verdict = f"**{row['verdict']}**" if bold_no and row["verdict"] == "no" else row["verdict"]
        line = f"| {row['head']} | {row['accuracy']:.4f} | {cells} | {verdict} |"
        if with_count:
            line += f" {'–' if row['count'] is None else row['count']} |"
        lines.append(line)
    return "\n".join(lines)


__all__ = ["RULES", "rule_rows", "rule_table"]
