"""Publish a pre-trained ShopperBERT as a Hub-ready folder (model card included) and, optionally, push it.

    python -m modeling_shopperbert.publish --model runs/cj-small --out hub/shopperbert-completejourney-small
    python -m modeling_shopperbert.publish --model runs/cj-small --which best --results results/demo \\
        --out hub/shopperbert-completejourney-small --repo-id org/shopperbert-completejourney-small --push --private
    python -m modeling_shopperbert.publish --out hub/shopperbert-completejourney-small --repo-id org/name --push

`--model` is a train.py run folder (its `final/`, or `best/` with `--which best`) or a saved model folder (the
older spelling `--checkpoint` still works). The console script `shopperbert-publish` is the same command.
The folder written to `--out` is complete on its own:

    config.json                    the model config; `auto_map` names every Auto class ShopperBERT registers
    model.safetensors              the weights (checked tensor by tensor against the checkpoint)
    configuration_shopperbert.py   remote code for `trust_remote_code=True` (transformers only, no package needed)
    modeling_shopperbert.py,
    modeling_shopperbert_layers.py
    contract.py                    the data contract the configuration imports (special ids, field names)
    processing_shopperbert.py      the processor (raw logs -> model inputs, `AutoProcessor`) and its relative
    row_encoding.py, collator.py     imports; processor_config.json holds its vocabularies and date settings
    pipeline_shopperbert.py        the custom `feature-extraction` pipeline (named in config.json custom_pipelines)
    metadata.json, vocab.json      the pre-training corpus' vocabularies, date base and text-embedding model: what
                                   encoding new users needs
    training_info.json             the checkpoint's step, validation MPP metrics and training arguments
    run_config.json                the run's model config and resolved arguments (when the run folder is known)
    downstream_results.json        the eval_suite results the card reports (with `--results`; several `--results`
                                   folders, e.g. the Transformers run apart, are merged into one file)
    loss_curve.png                 the MPP loss curve (when the run folder has one)
    README.md                      the model card, generated from the files above: no number is typed in

It is written to a temporary folder next to `--out` and renamed into place (files get the umask's usual mode); an
existing `--out` is refused unless `--overwrite` (and even then only a folder this command wrote is replaced). Also
refused, before anything is written: an invalid `--repo-id` (NAMESPACE/NAME, even without `--push`), a
metadata.json/vocab.json of another vocabulary than the model's (sizes, and content when a `vocab_fingerprint` is
known), and weights holding NaN or inf (exit 1). Errors print `error: ...` (a traceback only with `--debug`).

`--push` uploads the folder with `huggingface_hub` (`create_repo` + `upload_folder`) to `--repo-id`, on the Hub
that `HF_ENDPOINT` names (default https://huggingface.co), with the token in `HF_TOKEN` (or `hf auth login`). It
checks, before loading the weights or sending any file, that HF_HUB_OFFLINE is not set, that a token exists and that
the Hub accepts it. Without `--model`, an existing published `--out` folder is checked and pushed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .folder import build_folder, check_output, check_published_folder
from .push import preflight_push, push_folder
from .sources import PublishError, check_finite_weights, check_repo_id, gather_sources, log


def build_parser() -> argparse.ArgumentParser:
    script = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(prog=script if script == "shopperbert-publish" else
                                     "python -m modeling_shopperbert.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="a train.py run folder or a saved model folder; omit it to push an existing --out")
    parser.add_argument("--checkpoint", dest="model", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old name
    parser.add_argument("--which", choices=["final", "best"], default="final",
                        help="with a run folder: publish final/ (default) or best/ (lowest validation MPP loss)")
    parser.add_argument("--out", required=True, help="the Hub-ready folder to write (e.g. hub/<model name>)")
    parser.add_argument("--results", action="append", default=None,
                        help="an eval_suite run output folder (or its results.json): downstream results for the card; "
                             "repeat it to merge runs of other seeds, tasks or models (FOLDER:A-B keeps seeds A..B)")
    parser.add_argument("--results-model", default=None,
                        help="the checkpoint's name in --results (e.g. MP+A); default: the one whose path matches")
    parser.add_argument("--data", default=None,
                        help="a data_prep folder to take metadata.json/vocab.json from when the checkpoint lacks them")
    parser.add_argument("--repo-id", default=None, help="ORG/NAME on the Hub (used in the card; required by --push)")
    parser.add_argument("--model-name", default=None, help="title of the card (default: the repo or folder name)")
    parser.add_argument("--license", default="apache-2.0", help="license in the card metadata (default apache-2.0)")
    parser.add_argument("--push", action="store_true", help="upload the folder to --repo-id (needs HF_TOKEN)")
    parser.add_argument("--private", action="store_true", help="create the repository private (an existing "
                                                               "repository keeps its visibility)")
    parser.add_argument("--commit-message", default=None, help="commit message of the upload")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out written by this command")
    parser.add_argument("--debug", action="store_true", help="show the traceback of unexpected errors")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        if args.push and not args.repo_id:
            raise PublishError("--push needs --repo-id ORG/NAME (the Hub repository to upload to)")
        check_repo_id(args.repo_id)
        # 1. The local inputs: JSON files only, no weights loaded, no request sent.
        sources = None
        if args.model is None:
            if not args.push:
                raise PublishError("give --model (what to publish), or --push to upload an existing --out")
            if not out.is_dir():
                raise PublishError(f"--out {out}: no such folder to push (publish it first with --model)")
            problems = check_published_folder(out)
            if problems:
                raise PublishError(f"{out} is not a complete published folder:\n  " + "\n  ".join(problems))
            check_finite_weights(out)
        else:
            sources = gather_sources(args.model, args.which, args.data, args.results, args.results_model)
            check_output(out, args.overwrite, sources.inputs())
        # 2. The Hub: HF_HUB_OFFLINE, a token, one whoami request.
        target = preflight_push(args.repo_id) if args.push else None
        if target is not None:
            log(f"token accepted by {target.endpoint} (user {target.user})")
        # 3. The folder.
        if sources is not None:
            build_folder(sources, out, repo_id=args.repo_id, model_name=args.model_name, license=args.license,
                         overwrite=args.overwrite)
            log(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
        # 4. The upload.
        if target is not None:
            commit = push_folder(out, target, private=args.private, commit_message=args.commit_message)
            print(f"pushed {out} to {target.endpoint}/{target.repo_id} (commit {commit.oid})")
            print(f"load it with AutoModel.from_pretrained({target.repo_id!r}, trust_remote_code=True)")
        else:
            print(f"published {out}; push it with: python -m modeling_shopperbert.publish --out {out} "
                  f"--repo-id {args.repo_id or 'ORG/NAME'} --push")
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_status
    except Exception as err:  # noqa: BLE001  (one `error:` line; --debug shows the traceback)
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {err} (--debug shows the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
