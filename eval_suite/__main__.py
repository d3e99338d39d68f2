"""Command line of the evaluation suite.

    python -m eval_suite run --model runs/cj-small/final --data data/cj --tasks all --repeats 10 --out results/
    python -m eval_suite run --model ... --quick          # the `make demo` setting: 2 seeds, short schedules
    python -m eval_suite run --model ... --first-seed 10 --out results/ --resume   # more seeds into the same results
    python -m eval_suite probe --model NAME=PATH --data data/cj --repeats 10 --out results/probe   # linear probes
    python -m eval_suite costs --model ... --data data/cj --out results/costs        # Table 3 analogue
    python -m eval_suite visualize --embeddings results/demo/embeddings/MP+A.parquet --out results/demo/umap.png
    python -m eval_suite ablation --out results/ablation --months 1,3,6,9             # Figure 3 analogue
    python -m eval_suite describe                                                      # task counts (TASKS.md)
    python -m eval_suite recipe --run NAME=RUN ... --probe results/probe --out results/recipe   # recipe ablation
    python -m eval_suite release-record --results results/release/cls --label ShopperBERT     # checksums

The console script `shopperbert-eval` is the same command (`shopperbert-eval run --model ...`). `--help` answers
before anything heavy is imported; each command other than `run` has its own options (`COMMAND --help`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The commands other than `run`: their module (which parses its own options) and a line for `--help`.
COMMANDS = {
    "probe": ("probe", "linear probes of frozen user representations on the classification tasks"),
    "costs": ("experiments.costs", "the paper's Table 3: computational costs of the downstream models on this machine"),
    "visualize": ("experiments.visualize", "the paper's Figure 2: UMAP of the user representations by demographics"),
    "ablation": ("experiments.ablation", "the paper's Figure 3: time length of the pre-training data"),
    "describe": ("describe_tasks", "build the downstream tasks and print what they hold (TASKS.md)"),
    "model-card": ("model_card", "regenerate the model card's sections from result files"),
    "recipe": ("recipe", "the pre-training recipe ablation, one row per train.py run"),
    "release-record": ("release", "tie the shipped checkpoint to the evaluation behind the card (checksums)"),
}
SUBMODULES = {name: module for name, (module, _) in COMMANDS.items()}


def task_names() -> tuple[str, ...]:
    from .tasks import TASK_NAMES  # pandas: imported only when the names are needed

    return TASK_NAMES


def build_parser() -> argparse.ArgumentParser:
    script = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(prog=script if script == "shopperbert-eval" else "python -m eval_suite",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below (each has --help)")
    run = sub.add_parser("run", help="downstream experiments: Tables 4-6 of the paper")
    for name, (_, text) in COMMANDS.items():  # listed for --help; main() hands their arguments to their module
        sub.add_parser(name, help=text, add_help=False)
    run.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH",
                     help="a pre-trained ShopperBERT folder; repeat for several (named MP, MP+A, CLS, CLS+A from "
                          "their config unless NAME= is given). The first is the primary one.")
    run.add_argument("--data", default="data/cj", help="the pre-training corpus (data_prep folder) of the models")
    run.add_argument("--tasks", default="all", help="comma-separated tasks or `all` (those of eval_suite/TASKS.md: kids, "
                                                      "coupon_targeting, ...; a wrong name lists them all)")
    run.add_argument("--repeats", type=int, default=None, help="seeds per task (default 10; 2 with --quick)")
    run.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    run.add_argument("--out", default="results", help="output folder (results.json, tables, negatives); an existing "
                                                      "results.json there needs --resume or --overwrite")
    run.add_argument("--resume", action="store_true",
                     help="continue the run whose results.json is in --out: its finished seeds and models are kept "
                          "and skipped (same settings required; seeds and tasks may differ)")
    run.add_argument("--overwrite", action="store_true", help="replace the results.json in --out")
    run.add_argument("--debug", action="store_true", help="show the traceback of errors")
    run.add_argument("--quick", action="store_true",
                     help="a reduced protocol for `make demo` (it says so in its output and results.json): 2 seeds, "
                          "one learning rate per model kind, at most 20 epochs for MLPs and 3 for Transformers, "
                          "the most recent 64 purchases for P-/UP-/T-Trans")
    run.add_argument("--models", default=None,
                     help="comma-separated subset of u-mlp,u-mlp-representations,p-trans,up-trans,t-trans,baselines "
                          "(default: all; u-mlp-representations: U-MLP on the --representations only, not on the "
                          "checkpoints: to add a representation to a finished run, into a new --out, then merge)")
    run.add_argument("--representations", default="svd,sbert,random",
                     help="representation baselines that get U-MLP rows like the checkpoints ('U-MLP SVD', "
                          "'U-MLP SBERT-mean', 'U-MLP Random', 'U-MLP Activity', 'U-MLP SVD+activity'): "
                          "comma-separated subset of svd,sbert,random,activity,svd+activity, or none (default: "
                          "svd,sbert,random)")
    run.add_argument("--finetune", action="store_true", help="also fine-tune ShopperBERT on the targeting tasks")
    run.add_argument("--trans-max-length", type=int, default=None,
                     help="purchases per user for P-/UP-/T-Trans (default 128; 64 with --quick)")
    run.add_argument("--model-card", default=None, help="update the results section of this model card")
    run.add_argument("--threads", type=int, default=None, help="torch threads")
    run.add_argument("--device", default="cpu",
                     help="where the downstream models train: cpu (default), cuda, cuda:N or mps; the protocol is the "
                          "same, so runs on different devices merge (the user embeddings are encoded on the CPU)")
    for kind in ("mlp", "trans", "finetune"):
        run.add_argument(f"--{kind}-lrs", default=None,
                         help=f"comma-separated learning rates for {kind} models (default: 1e-4,3e-4,1e-3; quick: 1e-3 "
                              f"for MLP and Transformers, 1e-4 for fine-tuning)")
        run.add_argument(f"--{kind}-max-epochs", type=int, default=None, help=f"epoch limit of {kind} models")
    run.add_argument("--max-users", type=int, default=None,
                     help="subsample each task to this many users (smoke runs and tests; not for results)")
    return parser


def command_line(argv: list[str]) -> str:
    """The command as typed (shell-quoted), recorded in results.json so that every table names its command."""
    import shlex

    return shlex.join(["python", "-m", "eval_suite", *argv])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBMODULES:  # the other commands keep their own parsers
        import importlib

        module = importlib.import_module(f".{SUBMODULES[argv[0]]}", __package__)
        try:
            return module.main(argv[1:]) or 0
        except SystemExit as exc:
            if not isinstance(exc.code, str):
                raise
            # The modules stop on bad input with `SystemExit("error: ...")` (exit 1 by default): exit 2, like
            # argparse and every other command here.
            print(exc.code, file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_command(args, argv)
    return 0


def _numbers(text: str, option: str) -> tuple[float, ...]:
    """`1e-4,3e-4` -> (0.0001, 0.0003); ValueError naming the option on anything else."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"error: {option} {text}: give comma-separated numbers, e.g. 1e-4,3e-4,1e-3") from None


def run_options(args):
    """RunOptions from the command line; ValueError (`error: ...`) on a bad value."""
    from .representations import parse_representations
    from .run import RunOptions

    try:
        representations = parse_representations(args.representations)
    except ValueError as err:
        raise ValueError(f"error: --representations {args.representations}: {err}") from None
    overrides = {}
    if args.repeats is not None:
        overrides["repeats"] = args.repeats
    if args.trans_max_length is not None:
        overrides["trans_max_length"] = args.trans_max_length
    for kind in ("mlp", "trans", "finetune"):
        lrs = getattr(args, f"{kind}_lrs")
        if lrs is not None:
            overrides[f"{kind}_lrs"] = _numbers(lrs, f"--{kind}-lrs")
        if getattr(args, f"{kind}_max_epochs") is not None:
            overrides[f"{kind}_max_epochs"] = getattr(args, f"{kind}_max_epochs")
    if args.models is not None:
        overrides["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    overrides.update(first_seed=args.first_seed, finetune=args.finetune, threads=args.threads, device=args.device,
                     max_users=args.max_users, representations=representations)
    return RunOptions.quick(**overrides) if args.quick else RunOptions(**overrides)


def _option_names(message: str) -> str:
    """check_options names RunOptions fields (mlp_lrs); the command line's are options (--mlp-lrs)."""
    import dataclasses
    import re

    from .run import RunOptions

    fields = "|".join(f.name for f in dataclasses.fields(RunOptions))
    return re.sub(rf"^error: ({fields}) ", lambda m: f"error: --{m.group(1).replace('_', '-')} ", message)


def run_command(args, argv) -> int:
    """`run`: every option checked before any work (exit 2), then the run (exit 1 on a runtime fault)."""
    from .run import prepare_run, protocol_description, read_models, run

    known = task_names()
    tasks = list(known) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        unknown = [t for t in tasks if t not in known]
        if unknown or not tasks:
            raise ValueError(f"error: unknown tasks {unknown or args.tasks!r}; choose from {list(known)}")
        options = run_options(args)
        checkpoints = read_models(args.model)
        prepare_run(checkpoints, Path(args.data), tasks, Path(args.out), options, resume=args.resume,
                    overwrite=args.overwrite)
    except ValueError as err:
        message = _option_names(str(err))
        print(message if message.startswith("error:") else f"error: {message}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        results = run(checkpoints, Path(args.data), tasks, out, options, command=command_line(argv),
                      resume=args.resume, overwrite=args.overwrite)
        report(results, out, args.model_card)
    except Exception as err:  # noqa: BLE001  (one `error:` line; --debug shows the traceback)
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {err} (results.json in {out} keeps what finished; --resume continues; "
              "--debug shows the traceback)", file=sys.stderr)
        return 1
    print(f"\nprotocol: {protocol_description(options)}")
    print(f"wrote {out / 'results.json'} and tables in {out}/ ({results['seconds']:.0f} s)")
    return 0


def report(results: dict, out: Path, model_card: str | None) -> None:
    from .report import write_tables

    tables = write_tables(results, out)
    print("\n## Table 4 analogue\n\n" + tables["table4.md"])
    print("\n## The paper's headline, task by task\n\n" + tables["headline.md"])
    if model_card:
        from .model_card import update_model_card

        update_model_card(Path(model_card), results, out)
        print(f"updated {model_card}")


if __name__ == "__main__":
    raise SystemExit(main())
