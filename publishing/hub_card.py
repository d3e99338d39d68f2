"""The Hub folder's README.md: YAML metadata, then one function per section, every number read from the files the
folder ships (training_info.json, run_config.json, metadata.json, downstream_results.json)."""

from __future__ import annotations

from .downstream import results_for_checkpoint, results_section
from .model_index import dataset_id, downstream_eval_results, hub_card_labels, mpp_eval_results
from .pretraining import fmt_int, hub_pretraining_section
from .sources import DOWNSTREAM_RESULTS_FILE, PROCESSOR_FILE, Sources

TAGS = ["shopperbert", "user-representation", "user-embedding", "recommendation", "e-commerce", "purchase-history",
        "masked-purchase-prediction", "custom_code"]
PAPER = "One4all User Representation for Recommender Systems in E-commerce"
PAPER_AUTHORS = "Kyuyong Shin, Hanock Kwak, Kyung-Min Kim, Minkyu Kim, Young-Jin Park, Jisu Jeong, Seungjae Jung"
# The "Files" table: what each file a published folder may hold is for (listed when the folder holds it).
FILE_DESCRIPTIONS = {
    "config.json": "model configuration; `auto_map` names the Auto classes for `trust_remote_code`",
    "model.safetensors": "weights (encoder and MPP heads)",
    "configuration_shopperbert.py": "remote code: the configuration class",
    "modeling_shopperbert.py": "remote code: the model classes",
    "modeling_shopperbert_layers.py": "remote code: the model's building blocks (embedding, layers, heads)",
    "contract.py": "remote code: the data contract (special ids, field names) the configuration imports",
    "processing_shopperbert.py": "remote code: the processor (raw purchase logs -> padded model inputs)",
    "row_encoding.py": "remote code: category and date ids (the processor's, shared with `data_prep`)",
    "collator.py": "remote code: padding and truncation (the processor's, shared with training)",
    "pipeline_shopperbert.py": "remote code: the `feature-extraction` pipeline (user id -> embedding)",
    PROCESSOR_FILE: "the processor: vocabularies, date settings, text model name (`AutoProcessor`)",
    "metadata.json": "pre-training corpus: vocabulary sizes, date base, text model, splits",
    "vocab.json": "category vocabularies (id order)",
    "training_info.json": "this checkpoint's step, validation MPP metrics and arguments",
    "run_config.json": "the run's model config and resolved training arguments",
    DOWNSTREAM_RESULTS_FILE: "eval_suite results (per task, model and seed)",
    "loss_curve.png": "MPP loss curve",
}


def render_model_card(sources: Sources, config: dict, num_parameters: dict, files: list[str],
                      repo_id: str | None, model_name: str, license: str = "apache-2.0") -> str:
    """The README.md of a published folder: YAML metadata + the card body, every number read from `sources`."""
    from huggingface_hub import ModelCard

    meta, info = sources.metadata, sources.training_info
    results, others = (results_for_checkpoint(sources.results, sources.results_label)
                       if sources.results is not None else (None, []))
    metadata = card_metadata(meta, info, results, sources.results_label, model_name, license)
    repo = repo_id or f"<your-org>/{model_name}"
    args = (sources.run_config or {}).get("args") or info.get("args") or {}
    lines = [
        *intro_section(model_name, meta, config, num_parameters),
        *usage_section(repo, meta, config["hidden_size"]),
        *vocabulary_section(meta),
        *hub_pretraining_section(meta, info, args, sources.which, files),
        *downstream_section(results, others, sources.results_label, sources.results_dirs),
        *files_section(files),
        *limitations_section(meta),
        *citation_section(),
    ]
    return str(ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


def card_metadata(meta: dict, info: dict, results: dict | None, label: str | None, model_name: str, license: str):
    """The `ModelCardData`: library, pipeline, tags, dataset, metrics and the model-index (validation MPP loss and
    accuracy per head; the U-MLP on this checkpoint per downstream task and metric)."""
    from huggingface_hub import ModelCardData

    eval_results = mpp_eval_results(info, meta)
    if results is not None:
        umlps = {task: f"U-MLP {label}" for task in results["tasks"]}
        eval_results += downstream_eval_results(results, umlps, hub_card_labels(meta))
    metrics = sorted({r.metric_type.split("_at_")[0] for r in eval_results} - {"loss"})
    return ModelCardData(
        library_name="transformers", pipeline_tag="feature-extraction", license=license, tags=list(TAGS),
        datasets=[dataset_id(meta)], metrics=metrics or None, model_name=model_name,
        eval_results=eval_results or None,
    )


def intro_section(model_name: str, meta: dict, config: dict, num_parameters: dict) -> list[str]:
    """Title, what the model is, and its architecture, user embedding, input tokens and objective."""
    from modeling_shopperbert.contract import MPP_HEADS

    hidden = config["hidden_size"]
    return [
        f"# {model_name}",
        "",
        f"A ShopperBERT user encoder: a BERT-style Transformer over a shopper's purchase history, pre-trained with "
        f"masked purchase prediction (MPP) on `{dataset_id(meta)}` purchase logs, whose {hidden}-dimensional user "
        f"embedding feeds downstream models (profiling, targeting, recommendation) without fine-tuning. "
        f"An implementation of \"{PAPER}\" (Shin et al., 2021).",
        "",
        f"- Encoder: H={hidden}, L={config['num_hidden_layers']}, A={config['num_attention_heads']}, feed-forward "
        f"{config['intermediate_size']}, up to {config['max_position_embeddings'] - 1} purchases per user; "
        f"{fmt_int(num_parameters['encoder'])} parameters ({fmt_int(num_parameters['total'])} with the "
        f"{len(MPP_HEADS)} MPP heads in this checkpoint).",
        f"- User embedding: `{config['user_representation']}` "
        + ("(mean of the final purchase-token states, the paper's ShopperBERT-MP)."
           if config["user_representation"] == "mean" else "(the final [CLS] state, the paper's ShopperBERT-CLS)."),
        f"- A purchase token is the mean of a product vector (its four category embeddings and a projection of the "
        f"description's `{meta['text_model']}` vector, {meta['text_embedding_size']}-dim, projected together: the "
        f"paper's eq. 1), "
        + ("five date embeddings (year, month, day, weekday, hour) and a position embedding (a 7-way mean)."
           if config.get("embedding_combination", "mean") == "mean" else
           "the mean of five date embeddings (year, month, day, weekday, hour) and a position embedding (a 3-way "
           "mean: `embedding_combination=\"grouped\"`)."),
        "- Pre-training objective: masked purchase prediction (nine heads)"
        + (f" plus {config['contrastive_weight']:g} x a user-level InfoNCE loss between two Algorithm 1 views of "
           f"each user (temperature {config.get('contrastive_temperature', 0.1):g}, in-batch negatives)."
           if config.get("contrastive_weight", 0) else ".")
        + (f" Plus {config['profile_weight']:g} x a profile loss: a linear head on the user vector predicts which "
           "product categories (category_2) the user bought (multi-label cross-entropy)."
           if config.get("profile_weight", 0) else ""),
        "",
    ]


def usage_section(repo: str, meta: dict, hidden: int) -> list[str]:
    """Loading with `transformers` alone (remote code), the inputs, and encoding raw logs with this package."""
    text_model, text_dim = meta["text_model"], meta["text_embedding_size"]
    return [
        "## Usage",
        "",
        "The modeling code travels with the weights, so `transformers` alone loads the encoder:",
        "",
        "```python",
        "from transformers import AutoModel",
        "",
        f"model = AutoModel.from_pretrained(\"{repo}\", trust_remote_code=True).eval()",
        "out = model(category_ids=category_ids, date_ids=date_ids, text_embeds=text_embeds)",
        f"users = out.user_embedding  # (batch, {hidden})",
        "```",
        "",
        "Inputs, one row per user, [CLS] first (id 2 in every field), then purchases oldest first, padded with 0:",
        "`category_ids` `(batch, length, 4)` and `date_ids` `(batch, length, 5)` (ids from `vocab.json` and the date "
        f"rule below), `text_embeds` `(batch, length, {text_dim})` (`{text_model}` vectors of the product "
        "descriptions; ignored at [CLS] and padding). `AutoModelForPreTraining` gives the MPP heads and "
        "`AutoModelForSequenceClassification` a fine-tuning head on the same encoder.",
        "",
        "With the `shopperbert` package (this repository), raw purchase logs become embeddings directly: categories "
        "are mapped with this model's vocabulary, descriptions embedded with its text model:",
        "",
        "```python",
        "from huggingface_hub import snapshot_download",
        "from modeling_shopperbert import UserEncoder",
        "",
        f"encoder = UserEncoder.from_pretrained(snapshot_download(\"{repo}\"))",
        "embeddings = encoder.encode(logs)  # pandas DataFrame: user_id, timestamp, category_1..4, description",
        "```",
        "",
    ]


def vocabulary_section(meta: dict) -> list[str]:
    """The data contract of metadata.json / vocab.json: corpus, category vocabularies, date ids, text model."""
    levels = meta.get("category_levels", {})
    lines = [
        "## Vocabulary and data contract (`metadata.json`, `vocab.json`)",
        "",
        "| field | value |",
        "|---|---|",
        f"| corpus | `{dataset_id(meta)}`{' (synthetic)' if meta.get('synthetic') else ''} |",
    ]
    for level, size in zip(("category_1", "category_2", "category_3", "category_4"), meta["category_vocab_sizes"]):
        what = f"{levels[level]}: " if levels.get(level) else ""
        lines.append(f"| {level} | {what}{size} ids (incl. 4 reserved: [PAD], [MASK], [CLS], [UNK]) |")
    last_year = meta["date_base_year"] + meta["year_vocab_size"] - 5
    lines += [
        f"| dates | id = 4 + offset: year - {meta['date_base_year']} (years {meta['date_base_year']}-{last_year}; "
        "others [UNK]), month - 1, day - 1, weekday (Monday 0), hour |",
        f"| text model | `{meta['text_model']}`, {meta['text_embedding_size']}-dim vectors |",
    ]
    date_range = meta.get("date_range", {})
    if date_range:
        lines.append(f"| purchases | {date_range.get('first', '?')} to {date_range.get('last', '?')} |")
    return lines + ["", "Unknown categories and years map to [UNK] (id 3): encode users with this vocabulary, not a "
                        "new one.", ""]


def downstream_section(results: dict | None, others: list[str], label: str | None,
                       runs: list[str] | None = None) -> list[str]:
    """The downstream tables of this checkpoint (`results`, other checkpoints' U-MLPs already left out: `others`;
    `runs`: the `--results` specs, named when several runs were merged)."""
    lines = ["## Downstream evaluation", ""]
    if results is None:
        return lines + ["Not evaluated downstream yet: `python -m eval_suite run --model <this folder> ...`, then "
                        "publish again with `--results`.", ""]
    left_out = (f" The run also evaluated {', '.join(f'`{o}`' for o in others)}: left out here, kept in "
                f"`{DOWNSTREAM_RESULTS_FILE}`." if others else "")
    merged = (f" It merges {len(runs)} runs of the same protocol (other seeds, tasks or models): "
              f"{', '.join(f'`{r}`' for r in runs)}." if runs and len(runs) > 1 else "")
    return lines + [
        f"From `{DOWNSTREAM_RESULTS_FILE}` (`python -m eval_suite run`), where this checkpoint is `{label}`: "
        f"`U-MLP {label}` is an MLP on its frozen user embeddings, the model the model-index metadata reports."
        f"{merged}{left_out}",
        "",
        results_section(results, None),
        "",
    ]


def files_section(files: list[str]) -> list[str]:
    lines = ["## Files", "", "| file | content |", "|---|---|"]
    return lines + [f"| `{name}` | {FILE_DESCRIPTIONS[name]} |" for name in files if name in FILE_DESCRIPTIONS]


def limitations_section(meta: dict) -> list[str]:
    return [
        "",
        "## Limitations",
        "",
        f"The encoder knows only the vocabulary and years of `{dataset_id(meta)}`; purchases from another catalogue "
        "lose their category identity ([UNK]) and keep only their description vector. Embeddings reflect the "
        "shoppers of that corpus and period.",
        "",
    ]


def citation_section() -> list[str]:
    return [
        "## Citation",
        "",
        "```bibtex",
        "@misc{shin2021one4all,",
        f"  title  = {{{PAPER}}},",
        f"  author = {{{' and '.join(PAPER_AUTHORS.split(', '))}}},",
        "  year   = {2021}",
        "}",
        "```",
    ]
