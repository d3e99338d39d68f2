"""Model-card sections generated from result files (never typed in).

    python -m eval_suite.model_card --card model_card.md --pretraining runs/cj-small --results results/demo

Sections between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers are replaced: `pretraining` (data, run,
MPP accuracy per head against the prior baseline), `results` (Tables 4-6 and the headline check), and the
`model-index` of the YAML front matter (one entry per task for the primary U-MLP).

Every number is traceable: each file the card is generated from must exist inside the card's repository (the card's
folder) and is named in the card by its relative path, with the command that wrote it (`config["command"]` of a
results.json verbatim when recorded, else rebuilt from its `config`) and the command that wrote the card. A missing
source file, or one outside the repository, stops the generator (SystemExit "error: ...") before anything is written.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

from eval_suite.merging import merge_results
from eval_suite.report import primary_umlp, write_tables

from .downstream import load_results, repo_path, result_sources, results_section, split_results_spec
from .model_index import REPO_CARD_LABELS, downstream_eval_results
from .pretraining import pretraining_section


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        return re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    return text.rstrip() + "\n\n" + block + "\n"


def eval_results(results: dict) -> list:
    """`huggingface_hub.EvalResult`s of the primary U-MLP (never a trivial representation such as "U-MLP SVD") for
    the model-index metadata."""
    checkpoints = list(results.get("config", {}).get("checkpoints", {}))
    umlps = {name: primary_umlp(entry, checkpoints) for name, entry in results["tasks"].items()}
    return downstream_eval_results(results, umlps, REPO_CARD_LABELS)


# Extra sections: (section name, markdown file written by the command, figure, command that writes them)
EXTRAS = {
    "recipe": ("recipe.md", None, "python -m eval_suite recipe ... (see the command file beside recipe.md)"),
    "costs": ("table3.md", None, "python -m eval_suite costs --model runs/cj-mp-a/final --data data/cj "
                                 "--out results/costs"),
    "umap": ("umap.md", "umap.png", "python -m eval_suite visualize --model runs/cj-mp-a/final --data data/cj "
                                    "--out results/umap/umap.png"),
    "ablation": ("ablation.md", "ablation.png", "python -m eval_suite ablation --out results/ablation "
                                                "--months 1,3,6,9 --repeats 3 --epochs 8 --quick"),
}


def extra_section(card: Path, name: str, folder: Path) -> str:
    """A command's own markdown output, its figure copied beside the card, and the command that wrote them.

    Raises SystemExit when the markdown file is missing or outside the card's repository.
    """
    markdown, figure, command = EXTRAS[name]
    source = repo_path(folder / markdown, card.parent, f"output of `python -m eval_suite {name}`")
    if (folder / "command.txt").is_file():  # the literal command line the output was written by
        command = (folder / "command.txt").read_text().strip()
    lines = [f"Written by `{command}` (`{source}`).", "", (folder / markdown).read_text().strip()]
    if figure and (folder / figure).is_file():
        target = f"docs/figures/{name}.png"
        (card.parent / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / figure, card.parent / target)
        lines += ["", f"![{name}]({target})"]
    return "\n".join(lines)


def release_section(card: Path, folder: Path) -> str:
    """The checksums that tie the shipped checkpoint to the card's numbers, from `eval_suite release-record`."""
    source = repo_path(folder / "release.json", card.parent, "output of `python -m eval_suite release-record`")
    record = json.loads((folder / "release.json").read_text())
    embeddings = repo_path(folder / record["embeddings_file"], card.parent, "the release's user embeddings")
    return "\n".join([
        f"Written by `{record.get('command', 'python -m eval_suite release-record')}` (`{source}`); "
        "`tests/test_release.py` checks both.",
        "",
        f"- `{record['model']}/model.safetensors`: sha256 `{record['model_sha256']}`, the weights every U-MLP "
        f"number of the card was computed from (label `{record['label']}` in `{record['results']}`).",
        f"- `{embeddings}`: sha256 `{record['embeddings_sha256']}`, the user embeddings of all "
        "households before the cutoff that the downstream runs used; re-encoding the sample households of "
        f"`{record['sample_inputs_file']}` with the shipped weights reproduces them.",
    ])


def update_model_card(card: Path, results: dict | None = None, results_dir: Path | list[Path] | None = None,
                      pretraining_dir: Path | None = None, model_name: str = "shopperbert",
                      extras: dict | None = None, command: str | None = None) -> None:
    """Rewrite the generated sections of a model card in place (and its model-index metadata).

    `results` (already loaded) must come with `results_dir`, the `--results` specs it came from. `extras` maps
    "costs" / "umap" / "ablation" to the output folders of those commands; `command` is the one that writes the card
    (named in the card). Every source file must exist inside the card's folder (the repository): SystemExit
    "error: ..." otherwise, before the card is touched.
    """
    from huggingface_hub import ModelCard

    root = card.parent
    dirs = results_dir if isinstance(results_dir, list) else [results_dir] if results_dir is not None else []
    if results is not None and not dirs:
        raise SystemExit("error: results without the results.json they came from: the card names the source of "
                         "every number (pass results_dir)")
    result_sources(dirs, root)  # fail before reading or writing anything
    pretraining_sources = None
    if pretraining_dir is not None:
        pretraining_sources = [repo_path(Path(pretraining_dir) / name, root, "pre-training results of train.py")
                               for name in ("eval_results.json", "run_config.json")]
    text = card.read_text() if card.is_file() else "---\nlibrary_name: transformers\n---\n"
    for name, folder in (extras or {}).items():
        body = release_section(card, Path(folder)) if name == "release" else extra_section(card, name, Path(folder))
        text = replace_section(text, name, body)
    if pretraining_dir is not None:
        figure = None
        curve = Path(pretraining_dir) / "loss_curve.png"
        if curve.is_file():  # copied beside the card so that the image shows wherever the card is read
            figure = "docs/figures/mpp_loss_curve.png"
            (card.parent / figure).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(curve, card.parent / figure)
        text = replace_section(text, "pretraining", pretraining_section(Path(pretraining_dir), figure,
                                                                         pretraining_sources))
    if results is None and dirs:  # several folders: runs of other seeds, merged
        results = merge_results([load_results(d) for d in dirs], [str(d) for d in dirs])
    if results is not None:
        text = replace_section(text, "results", results_section(results, dirs, root, command))
        if len(dirs) == 1 and split_results_spec(dirs[0])[1] is None:  # the tables of that one whole run
            write_tables(results, Path(dirs[0]))
    parsed = ModelCard(text)
    if results is not None:
        parsed.data.model_name = parsed.data.model_name or model_name
        parsed.data.eval_results = eval_results(results)
    card.write_text(str(parsed))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval_suite.model_card", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", default="model_card.md", help="the model card to update in place")
    parser.add_argument("--pretraining", default=None, help="a train.py output folder (eval_results.json, ...)")
    parser.add_argument("--results", action="append", default=None,
                        help="an eval_suite run output folder (results.json); repeat it to merge runs of other seeds "
                             "(`--first-seed`) made with the same settings; FOLDER:A-B keeps seeds A..B of a run")
    parser.add_argument("--model-name", default="shopperbert", help="name used in the model-index metadata")
    for name in EXTRAS:
        parser.add_argument(f"--{name}", default=None, help=f"output folder of `python -m eval_suite {name}`")
    parser.add_argument("--release", default=None, help="output folder of `python -m eval_suite release-record`")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    extras = {name: getattr(args, name) for name in (*EXTRAS, "release") if getattr(args, name)}
    update_model_card(Path(args.card), results_dir=list(args.results) if args.results else None,
                      pretraining_dir=Path(args.pretraining) if args.pretraining else None,
                      model_name=args.model_name, extras=extras,
                      command=shlex.join(["python", "-m", "eval_suite", "model-card", *argv]))
    print(f"updated {args.card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
