"""Find a GPT-2 checkpoint folder: a local folder, a folder URL, or a Hugging Face hub id.

Remote checkpoints are downloaded once into a cache (`cache_dir`, else `$WEBGPT2_CACHE`, else
`~/.cache/webgpt2`), one folder per source and revision. Each file is streamed to a temporary
file in the same folder, checked against its Content-Length, fsynced and renamed into place,
so the cache never holds a partial file; a folder is marked complete once every file is in,
and a complete folder is returned without touching the network. A cached revision is not
refreshed: delete its folder to fetch a moved branch again. Uses urllib only.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from webgpt2.io.checkpoint import (
    INDEX_FILE,
    SINGLE_FILE,
    CheckpointError,
    gpt2_config_from_dict,
    missing_checkpoint_files,
    pickle_refusal,
    shard_names,
)
from webgpt2.io.progress import ProgressBar

__all__ = ["DEFAULT_ENDPOINT", "DownloadError", "cache_root", "resolve_checkpoint"]

DEFAULT_ENDPOINT = "https://huggingface.co"
# Downloaded when present; a 404 is fine. vocab.json and merges.txt are checked together
# with tokenizer.json afterwards: one of the two tokenizer forms must arrive.
_OPTIONAL_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "generation_config.json")
_COMPLETE_MARKER = ".webgpt2-complete"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_CHUNK = 1 << 20

SourceLike = str | os.PathLike


class DownloadError(OSError):
    """A file could not be downloaded: an HTTP error, a timeout or a cut-off transfer."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The download cache's root: cache_dir, else $WEBGPT2_CACHE, else ~/.cache/webgpt2.

    Example:
        >>> cache_root("/tmp/some-cache").as_posix()
        '/tmp/some-cache'
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("WEBGPT2_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "webgpt2"


def resolve_checkpoint(
    source: SourceLike,
    *,
    revision: str = "main",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """A local folder holding config.json, the safetensors weights and the tokenizer files.

    source:
      - an existing folder: returned as it is, once checked for the files it needs;
      - an http(s):// URL of a folder: each file is fetched from `URL/<file>`;
      - a hub id (`openai-community/gpt2`, or a legacy bare id like `gpt2`): files come from
        `{endpoint}/{id}/resolve/{revision}/{file}`, the endpoint from $WEBGPT2_HUB_ENDPOINT,
        else $HF_ENDPOINT, else https://huggingface.co; $HF_TOKEN, when set, is sent as a
        bearer token (to the endpoint's host only).
    revision: the hub branch, tag or commit (ignored for folders and URLs). progress: a
    progress bar per download on stderr (a one-line summary when stderr is not a terminal).
    timeout: seconds to wait for a connection or for more data.

    The config is checked (`gpt2_config_from_dict`) before any weights are fetched. Raises
    CheckpointError for missing files, an unsupported config or a pickle-only checkpoint, and
    DownloadError (URL and status) for network failures.

    Example:
        >>> import json, os, tempfile
        >>> d = tempfile.mkdtemp()
        >>> for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
        ...     open(os.path.join(d, name), "w").close()
        >>> resolve_checkpoint(d) == Path(d).resolve()
        True
    """
    if not isinstance(source, str):
        return _local_folder(Path(source))
    if re.match(r"^https?://", source, re.IGNORECASE):
        hub_id = _hub_id_from_url(source)
        if hub_id is None:
            base = source.rstrip("/")
            return _fetch(base, _url_cache_folder(base, cache_dir), {}, progress, timeout)
        source = hub_id
    local = Path(source).expanduser()
    if local.exists() or not _HUB_ID.match(source):
        return _local_folder(local)
    endpoint = _endpoint()
    base = f"{endpoint}/{source}/resolve/{urllib.parse.quote(revision, safe='')}"
    folder = (cache_root(cache_dir) / "hub" / source.replace("/", "--")
              / urllib.parse.quote(revision, safe=""))
    token = os.environ.get("HF_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return _fetch(base, folder, headers, progress, timeout, hub_id=source)


def _endpoint() -> str:
    endpoint = os.environ.get("WEBGPT2_HUB_ENDPOINT") or os.environ.get("HF_ENDPOINT")
    return (endpoint or DEFAULT_ENDPOINT).rstrip("/")


def _hub_id_from_url(url: str) -> str | None:
    """`https://huggingface.co/openai-community/gpt2` (a repository page) -> its hub id."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.netloc.lower() != urllib.parse.urlsplit(_endpoint()).netloc.lower():
        return None
    path = parsed.path.strip("/")
    return path if path and _HUB_ID.match(path) and not parsed.query else None


def _local_folder(folder: Path) -> Path:
    if not folder.exists():
        raise CheckpointError(
            f"{folder} does not exist; expected a checkpoint folder, an http(s) URL of one, "
            "or a hub id like 'openai-community/gpt2'"
        )
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; expected a checkpoint folder")
    missing = missing_checkpoint_files(folder)
    if missing:
        raise CheckpointError(f"checkpoint folder {folder} is missing: {'; '.join(missing)}")
    return folder.resolve()


def _url_cache_folder(base: str, cache_dir: str | os.PathLike | None) -> Path:
    parsed = urllib.parse.urlsplit(base)
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", parsed.netloc + parsed.path).strip("_")[:80]
    digest = hashlib.sha256(base.encode("utf-8")).hexdigest()[:12]
    return cache_root(cache_dir) / "url" / f"{readable}-{digest}"


def _fetch(base: str, folder: Path, headers: dict[str, str], progress: bool, timeout: float,
           hub_id: str | None = None) -> Path:
    """Download what is not cached yet of the checkpoint at base into folder."""
    marker = folder / _COMPLETE_MARKER
    if marker.is_file() and not missing_checkpoint_files(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _fetch_into(_Fetcher(base, folder, headers, progress, timeout), hub_id)
    except BaseException:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when nothing arrived: no empty folders for typos
        raise
    marker.write_text(json.dumps({"source": base}) + "\n", encoding="utf-8")
    return folder


def _fetch_into(fetcher: _Fetcher, hub_id: str | None) -> None:
    folder, base = fetcher.folder, fetcher.base
    if not fetcher.get("config.json"):
        hint = (f"; is {hub_id!r} a hub model id? (no local folder of that name exists)"
                if hub_id else "")
        raise CheckpointError(f"{fetcher.url('config.json')} was not found (HTTP 404){hint}")
    try:
        gpt2_config_from_dict(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    except (ValueError, AttributeError) as error:
        raise CheckpointError(f"{fetcher.url('config.json')}: {error}") from None
    if not fetcher.get(SINGLE_FILE):
        if fetcher.get(INDEX_FILE):
            for shard in shard_names(folder / INDEX_FILE):
                if not fetcher.get(shard):
                    raise CheckpointError(
                        f"{fetcher.url(shard)} (a shard named by {INDEX_FILE}) was not found "
                        "(HTTP 404)"
                    )
        elif fetcher.exists("pytorch_model.bin"):
            raise CheckpointError(pickle_refusal(fetcher.url("pytorch_model.bin")))
        else:
            raise CheckpointError(
                f"neither {fetcher.url(SINGLE_FILE)} nor {INDEX_FILE} was found (HTTP 404)"
            )
    for name in _OPTIONAL_FILES:
        fetcher.get(name)
    missing = missing_checkpoint_files(folder)
    if missing:
        raise CheckpointError(f"the checkpoint at {base} is missing: {'; '.join(missing)}")


class _Fetcher:
    """Downloads `base/<name>` into a folder, atomically, skipping files already there."""

    def __init__(self, base: str, folder: Path, headers: dict[str, str], progress: bool,
                 timeout: float) -> None:
        self.base, self.folder, self.headers = base, folder, headers
        self.progress, self.timeout = progress, timeout
        self._opener = urllib.request.build_opener(_SameHostAuthRedirect())

    def url(self, name: str) -> str:
        return f"{self.base}/{urllib.parse.quote(name)}"

    def exists(self, name: str) -> bool:
        """Whether the server has the file (a HEAD request; errors count as absent)."""
        try:
            with self._open(self.url(name), "HEAD"):
                return True
        except DownloadError:
            return False

    def get(self, name: str) -> bool:
        """Download name unless cached; False when the server says 404."""
        target = self.folder / name
        if target.is_file():
            return True
        url = self.url(name)
        try:
            response = self._open(url, "GET")
        except DownloadError as error:
            if getattr(error, "status", None) == 404:
                return False
            raise
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{name}.", suffix=".part")
        try:
            with response, os.fdopen(fd, "wb") as f:
                length_header = response.headers.get("Content-Length")
                length = int(length_header) if length_header and length_header.isdigit() else None
                with ProgressBar(name, total=length, enabled=self.progress) as bar:
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
                        bar.update(len(chunk))
                    if length is not None and bar.done != length:
                        raise DownloadError(
                            f"download of {url} was cut off: got {bar.done} of {length} bytes"
                        )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except DownloadError:
            Path(tmp).unlink(missing_ok=True)
            raise
        except (OSError, http.client.HTTPException) as error:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(error, TimeoutError):
                raise DownloadError(
                    f"download of {url} stalled: no data for {self.timeout} s"
                ) from None
            raise DownloadError(f"download of {url} failed: {error!r}") from error
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def _open(self, url: str, method: str) -> Any:
        request = urllib.request.Request(url, method=method,
                                         headers={"User-Agent": "webgpt2"})
        for key, value in self.headers.items():
            # Unredirected: a redirect to another host (a CDN) must not receive the token.
            request.add_unredirected_header(key, value)
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            error.close()
            hint = ""
            if error.code in (401, 403):
                hint = ("; the repository may be private or gated (set HF_TOKEN) or not exist"
                        if "Authorization" not in self.headers
                        else "; check that HF_TOKEN may read this repository")
            failure = DownloadError(f"HTTP {error.code} {error.reason} for {url}{hint}")
            failure.status = error.code  # type: ignore[attr-defined]
            raise failure from None
        except TimeoutError:
            raise DownloadError(f"{url}: no response within {self.timeout} s") from None
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, TimeoutError):
                raise DownloadError(f"{url}: no response within {self.timeout} s") from None
            raise DownloadError(f"cannot reach {url}: {reason}") from None
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(f"request for {url} failed: {error!r}") from None


class _SameHostAuthRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects, keeping the Authorization header only on the same host (the hub
    redirects renamed repositories on its own host, and large files to a CDN)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        same_host = (urllib.parse.urlsplit(newurl).netloc.lower()
                     == urllib.parse.urlsplit(req.full_url).netloc.lower())
        if new is not None and same_host:
            for key, value in req.unredirected_hdrs.items():
                new.add_unredirected_header(key, value)
        return new
