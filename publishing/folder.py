"""Writing the Hub-ready folder (to a temporary folder, checked, then renamed into place) and checking a folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .model_index import check_card
from .sources import (CARD_FILE, DATA_FILES, DOWNSTREAM_RESULTS_FILE, KNOWN_FILES, PROCESSOR_FILE, REQUIRED_FILES,
                      REQUIRED_METADATA, PublishError, Sources, _safetensors_files, check_finite_weights, log,
                      read_json)


def check_published_folder(folder: Path) -> list[str]:
    """Problems that would stop the folder from working on its own (empty list: ready to push)."""
    from modeling_shopperbert.modeling_shopperbert import AUTO_MAP

    folder = Path(folder)
    problems = [f"{name} is missing" for name in REQUIRED_FILES if not (folder / name).is_file()]
    if (folder / "config.json").is_file():
        auto_map = read_json(folder / "config.json").get("auto_map", {})
        missing = {k: v for k, v in AUTO_MAP.items() if auto_map.get(k) != v}
        if missing:
            problems.append(f"config.json auto_map lacks {missing}")
        for target in auto_map.values():
            module = target.split(".")[0]
            if not (folder / f"{module}.py").is_file():
                problems.append(f"auto_map names {target} but {module}.py is missing")
    problems += _missing_relative_imports(folder)
    problems += _processor_problems(folder)
    if (folder / "metadata.json").is_file():
        missing = [k for k in REQUIRED_METADATA if k not in read_json(folder / "metadata.json")]
        if missing:
            problems.append(f"metadata.json lacks {missing}")
    if (folder / CARD_FILE).is_file():
        problems += [f"README.md: {p}" for p in check_card((folder / CARD_FILE).read_text())]
    return problems


def _processor_problems(folder: Path) -> list[str]:
    """What `AutoProcessor` and `pipeline("feature-extraction", ...)` need from a folder that ships the processor
    (folders published before the processor existed have no processor_config.json and are not checked)."""
    if not (folder / PROCESSOR_FILE).is_file():
        return []
    problems = []
    if "AutoProcessor" not in read_json(folder / PROCESSOR_FILE).get("auto_map", {}):
        problems.append(f"{PROCESSOR_FILE} auto_map lacks AutoProcessor")
    if (folder / "config.json").is_file():
        if "feature-extraction" not in read_json(folder / "config.json").get("custom_pipelines", {}):
            problems.append("config.json custom_pipelines lacks feature-extraction")
    return problems


def _missing_relative_imports(folder: Path) -> list[str]:
    """The remote-code files' relative imports (`from .contract import ...`) that the folder lacks: transformers'
    loader copies exactly these next to the file it loads."""
    from transformers.dynamic_module_utils import get_relative_imports

    problems = []
    for path in sorted(folder.glob("*.py")):
        for module in sorted(get_relative_imports(path)):
            if not (folder / f"{module}.py").is_file():
                problems.append(f"{path.name} imports .{module} but {module}.py is missing")
    return problems


def compare_weights(source: Path, published: Path) -> int:
    """Check tensor by tensor that the published weights are the checkpoint's; returns the number of tensors."""
    import torch
    from safetensors import safe_open

    def tensors(folder):
        handles = {}
        for path in _safetensors_files(folder):
            handle = safe_open(str(path), framework="pt")
            handles.update({key: handle for key in handle.keys()})
        return handles

    ours, theirs = tensors(source), tensors(published)
    if ours.keys() != theirs.keys():
        missing, extra = sorted(ours.keys() - theirs.keys())[:5], sorted(theirs.keys() - ours.keys())[:5]
        raise PublishError(f"published weights have different tensors than {source}: missing {missing}, extra {extra}")
    for key, handle in ours.items():
        a, b = handle.get_tensor(key), theirs[key].get_tensor(key)
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            raise PublishError(f"published tensor {key} differs from the checkpoint's")
    return len(ours)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_published_folder(folder: Path) -> bool:
    names = {p.name for p in folder.iterdir()}
    return not names or ({"config.json", CARD_FILE} <= names and names <= KNOWN_FILES)


def check_output(out: Path, overwrite: bool, protected: list[Path]) -> None:
    """Refuse an existing --out (unless --overwrite, and then only a folder this command wrote)."""
    resolved = out.resolve()
    for folder in protected:
        folder = folder.resolve()
        if resolved == folder or resolved in folder.parents:
            raise PublishError(f"--out {out} is, or contains, the input folder {folder}; choose another folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise PublishError(f"--out {out} exists and is not a folder")
    if not overwrite:
        raise PublishError(f"--out {out} already exists; pass --overwrite to replace it")
    if not _is_published_folder(out):
        raise PublishError(f"--out {out} holds files this command does not write "
                           f"({sorted(p.name for p in out.iterdir() if p.name not in KNOWN_FILES)[:5]}); "
                           "refusing to replace it even with --overwrite")


def build_folder(sources: Sources, out: Path, repo_id: str | None = None, model_name: str | None = None,
                 license: str = "apache-2.0", overwrite: bool = False) -> Path:
    """Write the Hub-ready folder: temporary folder next to `out`, checked, then renamed into place."""
    from .hub_card import render_model_card

    out = Path(out)
    check_output(out, overwrite, sources.inputs())
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else out.name)
    model_class = _model_class(sources.model_dir)
    check_finite_weights(sources.model_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        num_parameters = _write_weights(model_class, sources.model_dir, tmp)
        _copy_files(sources, tmp)
        files = sorted(p.name for p in tmp.iterdir()) + [CARD_FILE]
        card = render_model_card(sources, read_json(tmp / "config.json"), num_parameters, files, repo_id,
                                 model_name, license)
        (tmp / CARD_FILE).write_text(card)
        problems = check_published_folder(tmp)
        if problems:
            raise PublishError("the published folder is incomplete:\n  " + "\n  ".join(problems))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the published folder gets the usual mode
        for path in tmp.iterdir():  # atomic writers (safetensors) make files 0600: give them the usual mode too
            path.chmod(0o666 & ~_umask())
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _model_class(model_dir: Path) -> type:
    """The ShopperBERT class config.json's `architectures` names (the pre-training model when it names none)."""
    from modeling_shopperbert import modeling_shopperbert as modeling

    config = read_json(model_dir / "config.json")
    architecture = (config.get("architectures") or ["ShopperBertForMaskedPurchasePrediction"])[0]
    model_class = getattr(modeling, architecture, None)
    if not (isinstance(model_class, type) and issubclass(model_class, modeling.ShopperBertPreTrainedModel)):
        raise PublishError(f"{model_dir}/config.json names architecture {architecture!r}, not a ShopperBERT "
                           "model class")
    return model_class


def _write_weights(model_class: type, model_dir: Path, tmp: Path) -> dict:
    """Load the checkpoint, `save_pretrained` it into `tmp`, check every tensor; returns the parameter counts."""
    log(f"loading {model_class.__name__} from {model_dir}")
    model = model_class.from_pretrained(model_dir)
    encoder = getattr(model, model.base_model_prefix, model)
    num_parameters = {"total": sum(p.numel() for p in model.parameters()),
                      "encoder": sum(p.numel() for p in encoder.parameters())}
    log(f"writing {tmp} ({num_parameters['total']:,} parameters)")
    model.save_pretrained(tmp)
    del model
    count = compare_weights(model_dir, tmp)
    log(f"checked {count} tensors against the checkpoint")
    return num_parameters


def _copy_files(sources: Sources, tmp: Path) -> None:
    """The corpus files, the processor and pipeline code, and the result files the card is generated from."""
    from modeling_shopperbert.pipeline_shopperbert import save_pipeline_files

    for name in DATA_FILES:
        shutil.copy2(sources.data_file(name), tmp / name)
    save_pipeline_files(tmp)  # processor (vocabularies, date settings) + pipeline code, named in config.json
    if (sources.model_dir / "training_info.json").is_file():
        shutil.copy2(sources.model_dir / "training_info.json", tmp / "training_info.json")
    if sources.run_config is not None:
        shutil.copy2(sources.run_dir / "run_config.json", tmp / "run_config.json")
    if sources.run_dir is not None and (sources.run_dir / "loss_curve.png").is_file():
        shutil.copy2(sources.run_dir / "loss_curve.png", tmp / "loss_curve.png")
    if sources.results is not None:
        (tmp / DOWNSTREAM_RESULTS_FILE).write_text(json.dumps(sources.results, indent=2, default=str))


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` is moved aside first and removed after."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
