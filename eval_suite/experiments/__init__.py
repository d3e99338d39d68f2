"""The paper's other experiments, each a command of `python -m eval_suite`: `costs` (Table 3, computational costs
of the downstream models), `visualize` (Figure 2, UMAP of the user representations) and `ablation` (Figure 3, the
time length of the pre-training data). They read the tasks, inputs and models of `eval_suite`; nothing in
`eval_suite` imports them."""
