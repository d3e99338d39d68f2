"""`python -m eval_suite model-card` (and `python -m eval_suite.model_card`): the repository card's generator lives in
`publishing.repo_card`, beside the Hub card's (one card generator); this module keeps the command and the names
other code imports from here."""

from __future__ import annotations

from publishing.downstream import (cap_note, load_results, protocol_name, repo_path, result_sources, results_section,
                                   run_command, seed_range, sources_block, split_results_spec)
from publishing.model_index import METRIC_NAMES, TASK_TYPES
from publishing.pretraining import pretraining_section
from publishing.repo_card import (EXTRAS, eval_results, extra_section, main, release_section, replace_section,
                                  update_model_card)

__all__ = ["EXTRAS", "METRIC_NAMES", "TASK_TYPES", "cap_note", "eval_results", "extra_section", "load_results", "main",
           "pretraining_section", "protocol_name", "release_section", "replace_section", "repo_path",
           "result_sources", "results_section", "run_command", "seed_range", "sources_block", "split_results_spec",
           "update_model_card"]

if __name__ == "__main__":
    raise SystemExit(main())
