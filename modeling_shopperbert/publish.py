"""`python -m modeling_shopperbert.publish` / `shopperbert-publish`: publish a pre-trained ShopperBERT as a Hub-ready
folder (model card included) and, optionally, push it. The command and the card generator live in the `publishing`
package (`publishing.cli`, whose docstring `--help` shows); this entry module keeps the command's name and the names
other code imports from here."""

from __future__ import annotations

from publishing.cli import build_parser, main
from publishing.folder import build_folder, check_published_folder, compare_weights
from publishing.model_index import check_card
from publishing.push import preflight_push, push_folder
from publishing.sources import (DATA_FILES, REMOTE_CODE_FILES, PublishError, PublishFault, Sources, gather_sources,
                                resolve_checkpoint)

__all__ = ["DATA_FILES", "REMOTE_CODE_FILES", "PublishError", "PublishFault", "Sources", "build_folder",
           "build_parser", "check_card", "check_published_folder", "compare_weights", "gather_sources", "main",
           "preflight_push", "push_folder", "resolve_checkpoint"]

if __name__ == "__main__":
    raise SystemExit(main())
