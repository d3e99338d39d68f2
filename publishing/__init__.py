"""Publishing: the one model-card generator and the Hub folder.

    model_index    the card's model-index metadata (MPP and downstream U-MLP entries) and its offline check
    pretraining    the pre-training prose and the MPP-vs-rules paragraph of both cards
    downstream     the downstream results section (Tables 4-6, headline, source files and commands)
    repo_card      the repository's model_card.md: sections regenerated in place (`python -m eval_suite model-card`)
    hub_card       the Hub folder's README.md, one function per section
    sources        the inputs of a published folder (checkpoint, corpus files, results) and their checks
    folder         writing and checking the Hub-ready folder
    push           uploading it with huggingface_hub
    cli            `python -m modeling_shopperbert.publish` / `shopperbert-publish`

Every module imports torch, transformers and huggingface_hub lazily, inside functions, so that the command lines
answer `--help` at once.
"""
