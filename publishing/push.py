"""Uploading a published folder to the Hub with huggingface_hub, after the checks that can stop a push."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .sources import PublishError, check_repo_id, log


@dataclass
class HubTarget:
    repo_id: str
    token: str
    endpoint: str
    user: str


def preflight_push(repo_id: str | None) -> HubTarget:
    """Everything that can stop a push, checked before the weights are loaded or any file is sent: the repo id,
    HF_HUB_OFFLINE, a token, and (one request) that the Hub at HF_ENDPOINT is reachable and accepts the token."""
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if not repo_id:
        raise PublishError("--push needs --repo-id ORG/NAME (the Hub repository to upload to)")
    check_repo_id(repo_id)
    if constants.HF_HUB_OFFLINE:
        raise PublishError(
            "HF_HUB_OFFLINE is set, so huggingface_hub sends no request: nothing was uploaded. Unset it (or set "
            "HF_HUB_OFFLINE=0) for this command to push; the Makefile and the tests set it.")
    endpoint = constants.ENDPOINT
    token = get_token()
    if not token:
        raise PublishError(
            f"no Hugging Face token: nothing was uploaded. Set HF_TOKEN to a token with write access to {repo_id} "
            f"(create one at {endpoint}/settings/tokens) or run `hf auth login`.")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        who = api.whoami(token=token)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status == 401:
            raise PublishError(f"the Hub at {endpoint} rejected the token (401): nothing was uploaded. Check HF_TOKEN "
                               "(it takes precedence over `hf auth login`).") from None
        raise PublishError(f"the Hub at {endpoint} answered {status} to the token check: nothing was uploaded "
                           f"({err})") from None
    except Exception as err:  # noqa: BLE001  (connection refused, DNS, TLS, timeouts: all mean "no network")
        raise PublishError(f"cannot reach the Hub at {endpoint} ({type(err).__name__}: {err}): nothing was uploaded. "
                           "Check the network connection, or HF_ENDPOINT if you use a mirror.") from None
    return HubTarget(repo_id=repo_id, token=token, endpoint=endpoint, user=str(who.get("name", "?")))


def push_folder(folder: Path, target: HubTarget, private: bool = False, commit_message: str | None = None):
    """`create_repo` (exist_ok) + `upload_folder`; returns the `CommitInfo`."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=target.endpoint, token=target.token)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    log(f"pushing {len(files)} files ({size / 1e6:.1f} MB) from {folder} to {target.endpoint}/{target.repo_id} "
        f"as {target.user}")
    try:
        url = api.create_repo(target.repo_id, private=private or None, exist_ok=True, repo_type="model")
        log(f"repository {url} ready{' (private)' if private else ''}")
        return api.upload_folder(repo_id=target.repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=commit_message or f"Upload {Path(folder).name} (ShopperBERT)")
    except Exception as err:  # noqa: BLE001  (HTTP errors, lost connection, invalid card metadata, ...)
        raise PublishError(f"the upload to {target.endpoint}/{target.repo_id} failed ({type(err).__name__}: {err}). "
                           f"{folder} is complete: retry with `python -m modeling_shopperbert.publish --out {folder} "
                           f"--repo-id {target.repo_id} --push`") from None
