"""The paper's downstream experiments on real data (Complete Journey): tasks, models, metrics, tables, plots."""
