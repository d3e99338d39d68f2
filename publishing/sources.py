"""The inputs of a published folder (a checkpoint, its corpus files, downstream results) and the checks that run
before anything is written; the errors every publishing step raises."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from modeling_shopperbert.contract import CHECKPOINT_DATA_FILES

# The remote-code files, in the model package: the same ones `save_pretrained` copies (it follows the relative imports:
# the configuration imports the data contract `contract.py`, the model classes their building blocks
# `modeling_shopperbert_layers.py`), then the processor and the feature-extraction pipeline
# (`pipeline_shopperbert.save_pipeline_files`) with theirs (`row_encoding.py`, `collator.py`).
REMOTE_CODE_FILES = ("configuration_shopperbert.py", "modeling_shopperbert.py", "contract.py",
                     "modeling_shopperbert_layers.py", "processing_shopperbert.py", "pipeline_shopperbert.py", "row_encoding.py", "collator.py")
PROCESSOR_FILE = "processor_config.json"
# What encoding new users needs besides the weights (train.py copies them from the data_prep folder).
DATA_FILES = CHECKPOINT_DATA_FILES  # the data contract's list (train.py copies the same files into a run)
# Metadata keys a user needs to turn purchase logs into model inputs.
REQUIRED_METADATA = ("category_vocab_sizes", "text_embedding_size", "year_vocab_size", "date_base_year",
                     "text_model")
DOWNSTREAM_RESULTS_FILE = "downstream_results.json"
CARD_FILE = "README.md"
# Every file a published folder must hold (the optional ones are listed in `publishing.cli`'s docstring).
# (`contract.py` and `modeling_shopperbert_layers.py` are required where a remote-code file imports them: folders
# published before they existed work without.)
REQUIRED_FILES = ("config.json", "model.safetensors", *REMOTE_CODE_FILES[:2], *DATA_FILES, CARD_FILE)
# Files a published folder may hold; anything else makes `--overwrite` refuse to replace the folder.
KNOWN_FILES = set(REQUIRED_FILES) | set(REMOTE_CODE_FILES) | {
    PROCESSOR_FILE, "training_info.json", "run_config.json", DOWNSTREAM_RESULTS_FILE, "loss_curve.png",
    "model.safetensors.index.json", "generation_config.json"}


class PublishError(Exception):
    """A problem with the inputs or the environment, with a message meant for the user (printed without traceback,
    exit status 2)."""

    exit_status = 2


class PublishFault(PublishError):
    """What would be published is broken (non-finite weights): nothing is written; exit status 1."""

    exit_status = 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise PublishError(f"{path} is not valid JSON ({err})") from None


@dataclass
class Sources:
    """Where everything the published folder holds comes from."""

    model_dir: Path  # a save_pretrained folder
    run_dir: Path | None = None  # the train.py run folder around it, when known
    data_dir: Path | None = None  # a data_prep folder for metadata.json / vocab.json the checkpoint lacks
    results_dirs: list[str] = field(default_factory=list)  # the eval_suite output folders (`--results` specs)
    results_label: str | None = None  # which checkpoint of results.json is this one (e.g. "MP+A")
    which: str = "final"
    metadata: dict = field(default_factory=dict)
    training_info: dict = field(default_factory=dict)
    run_config: dict | None = None
    results: dict | None = None

    def inputs(self) -> list[Path]:
        """The folders read from: `--out` must never replace them."""
        return [p for p in (self.model_dir, self.run_dir, self.data_dir) if p is not None]

    def data_file(self, name: str) -> Path | None:
        for folder in (self.model_dir, self.data_dir):
            if folder is not None and (folder / name).is_file():
                return folder / name
        return None


def resolve_checkpoint(path: str | os.PathLike, which: str = "final") -> tuple[Path, Path | None]:
    """`(model folder, run folder or None)` for a run folder (its `which/` model) or a saved model folder."""
    path = Path(path)
    if not path.is_dir():
        raise PublishError(f"--model {path}: no such folder")
    if (path / "config.json").is_file():
        run_dir = path.parent if (path.parent / "run_config.json").is_file() else None
        return path, run_dir
    if (path / which / "config.json").is_file():
        return path / which, path
    if (path / "run_config.json").is_file():
        raise PublishError(f"--model {path} is a train.py run folder without a `{which}/` model "
                           f"(it holds {sorted(p.name for p in path.iterdir())}); did the run finish?")
    raise PublishError(f"--model {path} is neither a saved model folder (no config.json) nor a train.py run "
                       f"folder (no {which}/config.json)")


def gather_sources(checkpoint, which="final", data=None, results=None, results_label=None) -> Sources:
    """Read every input file and check that they belong together; raise `PublishError` naming what is wrong."""
    model_dir, run_dir = resolve_checkpoint(checkpoint, which)
    sources = Sources(model_dir=model_dir, run_dir=run_dir, which=model_dir.name,
                      data_dir=Path(data) if data else None, results_label=results_label)
    if sources.data_dir is not None and not sources.data_dir.is_dir():
        raise PublishError(f"--data {sources.data_dir}: no such folder")
    for name in DATA_FILES:
        if sources.data_file(name) is None:
            raise PublishError(
                f"{model_dir} has no {name}, which encoding new users needs (train.py copies it from the data_prep "
                f"folder); pass --data <the data_prep folder the model was pre-trained on>")
    sources.metadata = read_json(sources.data_file("metadata.json"))
    missing = [k for k in REQUIRED_METADATA if k not in sources.metadata]
    if missing:
        raise PublishError(f"{sources.data_file('metadata.json')} lacks {missing}: it is not a data_prep metadata file")
    config = read_json(model_dir / "config.json")
    if config.get("model_type") != "shopperbert":
        raise PublishError(f"{model_dir}/config.json has model_type {config.get('model_type')!r}, not 'shopperbert'")
    check_corpus_matches(config, sources)
    if (model_dir / "training_info.json").is_file():
        sources.training_info = read_json(model_dir / "training_info.json")
    if run_dir is not None and (run_dir / "run_config.json").is_file():
        sources.run_config = read_json(run_dir / "run_config.json")
    if results:
        sources.results_dirs, sources.results = read_results(results)
        sources.results_label = match_results_checkpoint(sources.results, model_dir, results_label)
    return sources


def read_results(specs) -> tuple[list[str], dict]:
    """The `--results` specs (eval_suite run folders or their results.json, `FOLDER:A-B` for seeds A..B) and their
    results, merged when there are several (runs of other seeds, tasks or models: `eval_suite.merging`), summarised
    afresh (means, paired tests and headline over the seeds kept)."""
    from eval_suite.merging import merge_results
    from eval_suite.report import summarise

    specs = [str(specs)] if isinstance(specs, (str, os.PathLike)) else [str(s) for s in specs]
    runs = [_read_run(spec) for spec in specs]
    names = [shown_path(spec) for spec in specs]
    if len(runs) == 1:
        return names, summarise(runs[0])
    try:
        merged = merge_results(runs, names)
    except ValueError as err:
        raise PublishError(f"the --results runs cannot be merged: {str(err).removeprefix('error: ')}") from None
    return names, summarise(merged)


def _read_run(spec: str) -> dict:
    """One `--results` spec's results (a results.json file may be named instead of its folder); PublishError naming
    the file when it is missing, not JSON, holds no task, or keeps no seed of the range asked for."""
    from .downstream import SEED_RANGE, load_results

    match = SEED_RANGE.search(spec)
    folder, suffix = (spec[:match.start()], match.group(0)) if match else (spec, "")
    if Path(folder).is_file():
        if Path(folder).name != "results.json":
            raise PublishError(f"--results {spec}: give the run's folder or its results.json, not {Path(folder).name}")
        folder = str(Path(folder).parent)
    path = Path(folder) / "results.json"
    try:
        results = load_results(folder + suffix)
    except FileNotFoundError:
        raise PublishError(f"--results {spec}: no results.json there (an `python -m eval_suite run` output)") from None
    except json.JSONDecodeError as err:
        raise PublishError(f"--results {spec}: {path} is not valid JSON ({err})") from None
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise PublishError(f"--results {spec}: {path} is not a results.json of `eval_suite run` ({err!r})") from None
    tasks = results.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise PublishError(f"--results {spec}: {path} holds no task results")
    if not any(m.get("seeds") for e in tasks.values() for m in e.get("models", {}).values()):
        raise PublishError(f"--results {spec}: {path} keeps no seed{' of that range' if suffix else ''}")
    for stopped in results.get("stopped", []):  # named in the public card: never a machine's own path
        stopped["run"] = shown_path(stopped["run"])
    return results


def shown_path(path) -> str:
    """How a card names a local path: relative to the working directory when inside it, else its last part."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(path).name


def check_corpus_matches(config: dict, sources: Sources) -> None:
    """The corpus files (metadata.json, vocab.json) must be the model's: same sizes, and the same vocabulary content
    when the config or the corpus records a fingerprint (older ones without: sizes only)."""
    from modeling_shopperbert.encoder import check_vocabulary

    metadata_file, vocab_file = sources.data_file("metadata.json"), sources.data_file("vocab.json")
    try:
        check_vocabulary(config, sources.metadata, read_json(vocab_file), f"{metadata_file} / {vocab_file}",
                         model=f"the model {sources.model_dir}")
    except ValueError as err:
        raise PublishError(f"{err}; it describes another corpus") from None


def check_finite_weights(folder: Path) -> None:
    """Refuse weights holding NaN or inf (a diverged training run), before anything is written."""
    from safetensors import safe_open

    from modeling_shopperbert.encoder import non_finite_tensors

    bad = []
    for path in _safetensors_files(folder):
        if path.is_file():
            with safe_open(str(path), framework="pt") as handle:
                bad += non_finite_tensors((key, handle.get_tensor(key)) for key in handle.keys())
    if bad:
        raise PublishFault(f"{folder} has non-finite (NaN/inf) weights in {len(bad)} tensors ({', '.join(bad[:3])}"
                           f"{', ...' if len(bad) > 3 else ''}): the training run diverged; publish an earlier "
                           "checkpoint (e.g. --which best) or re-train. Nothing was written.")


def check_repo_id(repo_id: str | None) -> None:
    """A Hub repository id (`namespace/name`, huggingface_hub's rules), checked even without --push."""
    if repo_id is None:
        return
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if repo_id.count("/") != 1:
        raise PublishError(f"--repo-id {repo_id!r} is not a valid repository id: give it as NAMESPACE/NAME "
                           "(your user or organisation, then the model name)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise PublishError(f"--repo-id {repo_id!r} is not a valid repository id: {err}") from None


def match_results_checkpoint(results: dict, model_dir: Path, label: str | None) -> str:
    """The label (e.g. "MP") under which results.json evaluated this checkpoint: `label`, else the one whose path is
    `model_dir`. Refuse to guess: a card must not report another checkpoint's numbers."""
    checkpoints = results.get("config", {}).get("checkpoints", {})
    if label is not None:
        if label not in checkpoints:
            raise PublishError(f"--results-model {label!r} is not in the results "
                               f"(they evaluated {sorted(checkpoints)})")
        return label
    target = model_dir.resolve()
    matches = [name for name, path in checkpoints.items() if Path(path).resolve() == target]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(f"{name}={path}" for name, path in checkpoints.items()) or "none"
    raise PublishError(f"the results evaluated checkpoints {listing}; none is {model_dir}. Pass --results-model NAME "
                       "to say which one this checkpoint is")


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted({folder / name for name in read_json(index)["weight_map"].values()})
    return [folder / "model.safetensors"]
