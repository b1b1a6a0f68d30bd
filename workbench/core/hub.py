"""Hugging Face Hub models: the checks before a download, the download with byte progress, the cache.

A hub model is fetched as its own stage before anything loads it: only the files a run needs (safetensors
weights, config, tokenizer; pickle weights only when the run allows them), each check a one-line refusal
before the first byte is written. Downloads go through huggingface_hub (its cache, locks and resume of a
dropped connection); its progress-bar hook gives the bytes for `download` events.
huggingface_hub (no torch) is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from workbench.core.errors import UserError

# Root-level files transformers reads for a causal LM; subfolders (onnx/, original/) are never needed.
SUPPORT_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "spiece.model",
    "sentencepiece.bpe.model", "chat_template.jinja", "chat_template.json", "*.tiktoken",
)
SAFE_WEIGHTS = ("*.safetensors", "*.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")
# Left free after a download: a full disk breaks checkpoints and the run itself, not only the download.
DISK_RESERVE_BYTES = 1 << 30
PROGRESS_INTERVAL_S = 0.5
LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"

ProgressCallback = Callable[[dict[str, Any]], None]


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def token_present() -> bool:
    from huggingface_hub import get_token

    return bool(get_token())


def free_bytes(path: Path) -> int:
    """Free space where `path` is or will be created (its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def format_bytes(count: float | None) -> str:
    if count is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def select_files(names: list[str], allow_pickle: bool) -> list[str]:
    """The files of a repo that loading it needs; pickle weights only if allowed and no safetensors exist."""
    root = [name for name in names if "/" not in name]

    def matching(patterns: tuple[str, ...]) -> list[str]:
        return [name for name in root if any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]

    weights = matching(SAFE_WEIGHTS)
    if not weights and allow_pickle:
        weights = matching(PICKLE_WEIGHTS)
    return sorted(set(matching(SUPPORT_FILES) + weights))


@dataclass
class HubFile:
    name: str
    size: int | None
    cached: bool = False


@dataclass
class DownloadPlan:
    repo: str
    revision: str
    commit: str
    cache: Path
    files: list[HubFile] = field(default_factory=list)

    @property
    def missing(self) -> list[HubFile]:
        return [f for f in self.files if not f.cached]

    @property
    def bytes_missing(self) -> int:
        return sum(f.size or 0 for f in self.missing)

    @property
    def bytes_total(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def folder(self) -> str:
        from huggingface_hub.file_download import repo_folder_name

        return repo_folder_name(repo_id=self.repo, repo_type="model")

    @property
    def snapshot(self) -> Path:
        return self.cache / self.folder / "snapshots" / self.commit


def remove_stale_partials(plan: DownloadPlan) -> int:
    """Delete the partial files that a killed download left behind (huggingface_hub names each attempt
    `<etag>.<random>.incomplete` and cannot reuse it); a partial whose blob lock another process holds is
    in progress and stays. Returns the bytes freed."""
    from filelock import FileLock, Timeout

    freed = 0
    for partial in (plan.cache / plan.folder / "blobs").glob("*.incomplete"):
        lock = plan.cache / ".locks" / plan.folder / f"{partial.name.split('.', 1)[0]}.lock"
        try:
            with FileLock(lock, timeout=0):
                freed += partial.stat().st_size
                partial.unlink()
        except (Timeout, FileNotFoundError):
            continue
    return freed


def _refusal(repo: str, error: Exception, hub: str) -> UserError:
    """One line for what went wrong asking the Hub about `repo`."""
    import httpx2
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    if isinstance(error, (httpx2.TransportError, OfflineModeIsEnabled)):
        return UserError(f"model {repo!r}: cannot reach {hub} ({type(error).__name__}) and it is not in the "
                         f"cache; a local model directory or a model already in the cache works offline")
    status = getattr(getattr(error, "response", None), "status_code", None)
    token = token_present()
    if isinstance(error, GatedRepoError):
        if token:
            return UserError(f"model {repo!r} is gated and your token has no access: accept its terms at {hub}/{repo}")
        return UserError(f"model {repo!r} is gated: accept its terms at {hub}/{repo}, then {LOGIN_HINT}")
    if isinstance(error, RevisionNotFoundError):
        return UserError(f"model {repo!r}: revision not found on {hub} (check model.revision)")
    if isinstance(error, RepositoryNotFoundError) or status in (401, 403, 404):
        if status == 404:
            return UserError(f"model {repo!r} does not exist on {hub}: check the id (org/name)")
        if token:
            return UserError(f"model {repo!r}: not found or your token has no access to it on {hub} "
                             f"(HTTP {status}); check the id and the token's permissions")
        return UserError(f"model {repo!r} is private or gated (HTTP {status}) or does not exist: "
                         f"if you have access, {LOGIN_HINT}")
    if isinstance(error, HfHubHTTPError):
        return UserError(f"model {repo!r}: {hub} answered HTTP {status}; try again later")
    return UserError(f"model {repo!r}: {type(error).__name__}: {str(error).strip().splitlines()[0][:200]}")


def _is_offline_error(error: UserError) -> bool:
    return "works offline" in str(error)


def plan_download(repo: str, revision: str | None = None, allow_pickle: bool = False, *,
                  hub: str | None = None, cache: Path | None = None) -> DownloadPlan:
    """Ask the Hub for the repo's file list and sizes; refuse (UserError) before anything is written."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    hub, cache = hub or endpoint(), cache or cache_dir()
    revision = revision or "main"
    try:
        info = HfApi(endpoint=hub).model_info(repo, revision=revision, files_metadata=True)
    except Exception as error:  # noqa: BLE001 - every failure becomes one line (see _refusal)
        raise _refusal(repo, error, hub) from None
    siblings = {s.rfilename: s.size for s in info.siblings or []}
    names = select_files(list(siblings), allow_pickle)
    if not any(fnmatch.fnmatch(n, p) for n in names for p in SAFE_WEIGHTS + PICKLE_WEIGHTS):
        has_pickle = any(fnmatch.fnmatch(n, p) for n in siblings for p in PICKLE_WEIGHTS)
        raise UserError(
            f"model {repo!r} has no safetensors weights; its pickle-based .bin weights load only with "
            f"--set model.allow_pickle_weights=true" if has_pickle else
            f"model {repo!r} has no model weights at the root of the repo ({len(siblings)} files)")
    if "config.json" not in names:
        raise UserError(f"model {repo!r} has no config.json (not a transformers model repo)")
    plan = DownloadPlan(repo, revision, info.sha or revision, cache)
    for name in names:
        cached = try_to_load_from_cache(repo, name, cache_dir=cache, revision=plan.commit)
        plan.files.append(HubFile(name, siblings[name], cached=isinstance(cached, str)))
    free = free_bytes(cache)
    if plan.bytes_missing + DISK_RESERVE_BYTES > free:
        raise UserError(
            f"model {repo!r}: not enough free disk in {cache}: the download needs {format_bytes(plan.bytes_missing)} "
            f"(+{format_bytes(DISK_RESERVE_BYTES)} reserve), {format_bytes(free)} free; free space or point "
            f"HF_HOME at a bigger disk")
    return plan


class _Progress:
    """Bytes of a plan's download, reported at most every PROGRESS_INTERVAL_S and at each file's end."""

    def __init__(self, plan: DownloadPlan, report: ProgressCallback):
        self.plan, self.report = plan, report
        self.total = plan.bytes_missing
        self.done = 0
        self.file: HubFile | None = None
        self.started = time.monotonic()
        self.last_report = 0.0
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            self.done += count
            if time.monotonic() - self.last_report >= PROGRESS_INTERVAL_S:
                self.emit()

    def emit(self) -> None:
        self.last_report = now = time.monotonic()
        elapsed = now - self.started
        speed = self.done / elapsed if elapsed > 0 and self.done else None
        remaining = max(self.total - self.done, 0)
        self.report({
            "repo": self.plan.repo, "file": self.file.name if self.file else None,
            "bytes_done": self.done, "bytes_total": self.total,
            "bytes_per_s": round(speed, 1) if speed else None,
            "eta_s": round(remaining / speed, 1) if speed else None,
            "files_done": sum(1 for f in self.plan.files if f.cached),
            "files_total": len(self.plan.files),
        })

    def tqdm_class(self):
        """A silent huggingface_hub progress bar whose byte updates feed this tracker."""
        from huggingface_hub.utils import tqdm

        progress = self

        class Bar(tqdm):
            def __init__(self, *args, **kwargs):
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)

            def update(self, n=1):
                if n:
                    progress.add(int(n))
                return super().update(n)

        return Bar


def download(plan: DownloadPlan, report: ProgressCallback | None = None, *, hub: str | None = None) -> Path:
    """Fetch the plan's missing files into the cache, one at a time; returns the snapshot directory."""
    from huggingface_hub import hf_hub_download

    remove_stale_partials(plan)
    progress = _Progress(plan, report or (lambda event: None))
    progress.emit()
    for hub_file in plan.missing:
        progress.file = hub_file
        before = progress.done
        try:
            # The user's revision (not the commit) so that refs/<revision> is written for offline use later.
            hf_hub_download(plan.repo, hub_file.name, revision=plan.revision, cache_dir=plan.cache,
                            endpoint=hub or endpoint(), tqdm_class=progress.tqdm_class())
        except Exception as error:  # noqa: BLE001 - one line; the files completed so far stay in the cache
            reason = (str(error).strip().splitlines() or [""])[0][:200]
            raise UserError(f"model {plan.repo!r}: downloading {hub_file.name} failed ({type(error).__name__}: "
                            f"{reason}); run it again to continue (finished files are kept)") from None
        with progress.lock:
            if hub_file.size is not None:  # exact, whatever the bar saw (a retry may count bytes twice)
                progress.done = before + hub_file.size
            hub_file.cached = True
            progress.emit()
    return plan.snapshot


def snapshot_complete(directory: Path, allow_pickle: bool = False) -> bool:
    """A snapshot directory a model loads from: config.json and every weight file (all index shards)."""
    if not (directory / "config.json").is_file():
        return False
    patterns = SAFE_WEIGHTS + (PICKLE_WEIGHTS if allow_pickle else ())
    for index in [p for p in directory.glob("*.index.json") if any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]:
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (OSError, ValueError):
            return False
        return all((directory / shard).is_file() for shard in shards)
    return any(p.is_file() for pattern in patterns for p in directory.glob(pattern))


def cached_snapshot(repo: str, revision: str | None = None, allow_pickle: bool = False, *,
                    cache: Path | None = None) -> Path | None:
    """The cached snapshot of `repo` at `revision` if it holds a loadable model, without any network."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo, revision=revision or "main", cache_dir=cache or cache_dir(),
                                      local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or a torn cache): the caller decides what to say
        return None
    return path if snapshot_complete(path, allow_pickle) else None


def ensure_model(repo: str, revision: str | None = None, allow_pickle: bool = False, *,
                 log: Callable[[str], None] = print, report: ProgressCallback | None = None,
                 hub: str | None = None, cache: Path | None = None, fetch: bool = True) -> Path:
    """The local snapshot directory of a hub model, downloading what is missing (with progress) first;
    fetch=False only runs the checks (a run's preflight) and downloads nothing.

    Offline (HF_HUB_OFFLINE, or the Hub unreachable) a complete cached snapshot is used as it is."""
    from huggingface_hub import constants

    cache = cache or cache_dir()
    if constants.is_offline_mode():
        cached = cached_snapshot(repo, revision, allow_pickle, cache=cache)
        if cached is None:
            raise UserError(f"model {repo!r} is not in the cache ({cache}) and HF_HUB_OFFLINE is set; "
                            f"a local model directory or a model already in the cache works offline")
        return cached
    try:
        plan = plan_download(repo, revision, allow_pickle, hub=hub, cache=cache)
    except UserError as error:
        cached = cached_snapshot(repo, revision, allow_pickle, cache=cache) if _is_offline_error(error) else None
        if cached is None:
            raise
        log(f"{hub or endpoint()} unreachable: using the cached {repo}")
        return cached
    if plan.missing and fetch:
        log(f"downloading {repo} ({len(plan.missing)} of {len(plan.files)} files, "
            f"{format_bytes(plan.bytes_missing)}) into {cache}")
        download(plan, report, hub=hub)
        log(f"downloaded {repo}")
    return plan.snapshot


def describe_progress(event: dict[str, Any]) -> str:
    """One line for a `download` event: file, bytes, speed, ETA."""
    done, total = event.get("bytes_done") or 0, event.get("bytes_total") or 0
    percent = f"{100 * done / total:.0f}%" if total else "?%"
    speed = f"{format_bytes(event['bytes_per_s'])}/s" if event.get("bytes_per_s") else "-"
    eta = f"ETA {event['eta_s']:.0f}s" if event.get("eta_s") is not None else ""
    parts = ["downloading", event.get("repo"), event.get("file"), percent,
             f"({format_bytes(done)}/{format_bytes(total)}, {speed})", eta]
    return " ".join(str(part) for part in parts if part)


def hub_status() -> dict[str, Any]:
    """For `doctor`: whether a token is set (never its value), the endpoint, the cache and its free space."""
    cache = cache_dir()
    return {"token": token_present(), "endpoint": endpoint(), "cache_dir": str(cache),
            "cache_free_gb": round(free_bytes(cache) / 1e9, 1),
            "offline": bool(os.environ.get("HF_HUB_OFFLINE"))}
