"""Find a GPT-2 checkpoint folder: a local folder, a folder URL, or a Hugging Face hub id.

Remote checkpoints are downloaded once into a cache (`cache_dir`, else `$WEBGPT2_CACHE`, else
`~/.cache/webgpt2`), one folder per source and revision (`hub/<owner>/<name>/<revision>`,
`hub/_/<name>/<revision>` for a legacy bare id, `url/<host-path>-<hash>` for a folder URL).
Each file is streamed to a temporary `.part` file in the same folder and renamed into place
only once verified: its size against Content-Length and the hub's `X-Linked-Size`, its
sha256 against an ETag that is one, and its contents parsed (JSON files, config.json as a
GPT-2 config, safetensors headers against the file's size, merges.txt). So the cache never
holds a partial or wrong file, and a retry downloads again whatever failed. A folder is
marked complete once every file is in, and a complete folder is returned without touching
the network. A cached revision is not refreshed: delete its folder to fetch a moved branch
again. One process at a time downloads into a folder (a lock file); `.part` files left by a
killed process are removed by the next download. Credentials in a URL (`user:password@`)
are sent as HTTP basic auth and never appear in messages. Uses urllib only.
"""

from __future__ import annotations

import base64
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
from webgpt2.io.jsonsafe import excerpt, loads
from webgpt2.io.progress import ProgressBar
from webgpt2.io.safetensors import read_safetensors

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows, Pyodide: no lock, parts are removed anyway
    fcntl = None  # type: ignore[assignment]

__all__ = ["DEFAULT_ENDPOINT", "DownloadError", "cache_root", "check_file", "redact",
           "resolve_checkpoint"]

DEFAULT_ENDPOINT = "https://huggingface.co"
# Downloaded when present; a 404 is fine. vocab.json and merges.txt are checked together
# with tokenizer.json afterwards: one of the two tokenizer forms must arrive.
_OPTIONAL_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "generation_config.json")
_COMPLETE_MARKER = ".webgpt2-complete"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_CHUNK = 1 << 20
_SHA256 = re.compile(r'^"?([0-9a-f]{64})"?$')
# Query parameters whose values are secrets (signed CDN URLs, tokens): redacted in messages.
_SECRET_PARAM = re.compile(r"token|key|sig|signature|secret|password|auth|credential",
                           re.IGNORECASE)

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
    root = cache_root(cache_dir)
    if re.match(r"^https?://", source, re.IGNORECASE):
        hub_id = _hub_id_from_url(source)
        if hub_id is None:
            base, headers = _without_credentials(source)
            return _fetch(base, _url_cache_folder(base, root), root, headers, progress,
                          timeout)
        source = hub_id
    local = Path(source).expanduser()
    if local.exists() or not _HUB_ID.match(source):
        return _local_folder(local)
    if (not isinstance(revision, str) or revision in ("", ".", "..")
            or any(ord(c) < 32 for c in revision)):
        raise CheckpointError(f"revision {excerpt(revision)} is not a branch, tag or commit "
                              "name")
    endpoint, headers = _without_credentials(_endpoint())
    base = f"{endpoint}/{source}/resolve/{urllib.parse.quote(revision, safe='')}"
    owner, _, name = source.rpartition("/")
    # "_" cannot begin a hub owner, so legacy bare ids get a folder no owner can have; the
    # revision is %-escaped (so "/" cannot nest) and a leading "." too (so ".." cannot climb).
    folder = root / "hub" / (owner or "_") / name / _escape_revision(revision)
    token = os.environ.get("HF_TOKEN")
    if token:
        headers = {"Authorization": f"Bearer {token}"}
    return _fetch(base, folder, root, headers, progress, timeout, hub_id=source)


def _endpoint() -> str:
    endpoint = os.environ.get("WEBGPT2_HUB_ENDPOINT") or os.environ.get("HF_ENDPOINT")
    return (endpoint or DEFAULT_ENDPOINT).rstrip("/")


def _escape_revision(revision: str) -> str:
    escaped = urllib.parse.quote(revision, safe="")
    return "%2E" + escaped[1:] if escaped.startswith(".") else escaped


def _hub_id_from_url(url: str) -> str | None:
    """`https://huggingface.co/openai-community/gpt2` (a repository page) -> its hub id."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.netloc.lower() != urllib.parse.urlsplit(_endpoint()).netloc.lower():
        return None
    path = parsed.path.strip("/")
    return path if path and _HUB_ID.match(path) and not parsed.query else None


def _without_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without `user:password@` and a trailing "/", and the basic-auth header that
    carries the credentials."""
    parts = urllib.parse.urlsplit(url)
    parts = parts._replace(path=parts.path.rstrip("/"))
    if "@" not in parts.netloc:
        return urllib.parse.urlunsplit(parts), {}
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(
        f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()).decode()
    return (urllib.parse.urlunsplit(parts._replace(netloc=host)),
            {"Authorization": f"Basic {token}"})


def redact(url: str) -> str:
    """A URL fit for a message: no `user:password@`, no values of secret-looking parameters.

    Example:
        >>> redact("https://me:pw@host/m?X-Amz-Signature=abc&rev=2")
        'https://***@host/m?X-Amz-Signature=***&rev=2'
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{key}=***" if _SECRET_PARAM.search(key) else (f"{key}={value}" if sep else key)
        for key, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


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


def _url_cache_folder(base: str, root: Path) -> Path:
    parsed = urllib.parse.urlsplit(base)
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", parsed.netloc + parsed.path).strip("_.")[:80]
    # The hash covers the whole URL (query included), so distinct sources never share a
    # folder however the readable part was cut.
    digest = hashlib.sha256(base.encode("utf-8")).hexdigest()[:16]
    return root / "url" / f"{readable}-{digest}"


def _fetch(base: str, folder: Path, root: Path, headers: dict[str, str], progress: bool,
           timeout: float, hub_id: str | None = None) -> Path:
    """Download what is not cached yet of the checkpoint at base into folder."""
    marker = folder / _COMPLETE_MARKER
    if marker.is_file() and not missing_checkpoint_files(folder):
        return folder
    with _download_lock(root, folder):
        if marker.is_file() and not missing_checkpoint_files(folder):
            return folder  # another process finished it while this one waited
        folder.mkdir(parents=True, exist_ok=True)
        fetcher = _Fetcher(base, folder, headers, progress, timeout)
        try:
            fetcher.clean()
            _fetch_into(fetcher, hub_id)
        except BaseException:
            _remove_empty(folder, root)  # no empty folders for typos
            raise
        marker.write_text(json.dumps({"source": redact(base)}) + "\n", encoding="utf-8")
    return folder


@contextlib.contextmanager
def _download_lock(root: Path, folder: Path) -> Any:
    """Held while a process downloads into folder. The lock files live apart (in
    root/.locks), as removing a lock file that another process waits on breaks the lock."""
    if fcntl is None:
        yield
        return
    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(str(folder.relative_to(root)).encode("utf-8")).hexdigest()[:24]
    with open(locks / f"{key}.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _remove_empty(folder: Path, root: Path) -> None:
    """Remove folder and then its parents while they are empty, up to root/hub or root/url."""
    while folder != root and root in folder.parents and len(folder.relative_to(root).parts) > 1:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _fetch_into(fetcher: _Fetcher, hub_id: str | None) -> None:
    folder = fetcher.folder
    if not fetcher.get("config.json"):
        hint = (f"; is {hub_id!r} a hub model id? (no local folder of that name exists)"
                if hub_id else "")
        raise CheckpointError(f"{fetcher.shown('config.json')} was not found (HTTP 404){hint}")
    if not fetcher.get(SINGLE_FILE):
        if fetcher.get(INDEX_FILE):
            for shard in shard_names(folder / INDEX_FILE):
                if not fetcher.get(shard):
                    raise CheckpointError(
                        f"{fetcher.shown(shard)} (a shard named by {INDEX_FILE}) was not found "
                        "(HTTP 404)"
                    )
        elif fetcher.exists("pytorch_model.bin"):
            raise CheckpointError(pickle_refusal(fetcher.shown("pytorch_model.bin")))
        else:
            raise CheckpointError(
                f"neither {fetcher.shown(SINGLE_FILE)} nor {INDEX_FILE} was found (HTTP 404)"
            )
    for name in _OPTIONAL_FILES:
        fetcher.get(name)
    missing = missing_checkpoint_files(folder)
    if missing:
        raise CheckpointError(
            f"the checkpoint at {redact(fetcher.base)} is missing: {'; '.join(missing)}")


def check_file(name: str, path: Path, label: str | None = None) -> None:
    """Raise ValueError when a downloaded file cannot be what its name says: JSON that does
    not parse (an HTML error page served as config.json), a config this runtime refuses, a
    safetensors file whose header does not match its size, a malformed merges.txt. label
    names the file in messages (default: path)."""
    label = label or str(path)
    if name.endswith(".safetensors"):
        read_safetensors(path, skip=lambda _: True)
        return
    if name == "merges.txt":
        from webgpt2.tokenizers.byte_pair_tokenizer import read_merges

        read_merges(path)
        return
    if name == "vocab.json":
        from webgpt2.tokenizers.byte_pair_tokenizer import read_vocabulary

        read_vocabulary(path)
        return
    if name.endswith(".json"):
        value = loads(path.read_bytes(), label, error=CheckpointError)
        if not isinstance(value, dict):
            raise CheckpointError(f"{label} holds {excerpt(value)}; expected a JSON object")
        if name == "config.json":
            try:
                gpt2_config_from_dict(value)
            except CheckpointError as error:
                raise CheckpointError(f"{label}: {error}") from None
        elif name == INDEX_FILE:
            shard_names(label, path.read_text(encoding="utf-8"))


class _Fetcher:
    """Downloads `base/<name>` into a folder, atomically and verified, skipping files
    already there."""

    def __init__(self, base: str, folder: Path, headers: dict[str, str], progress: bool,
                 timeout: float) -> None:
        self.base, self.folder, self.headers = base, folder, headers
        self.progress, self.timeout = progress, timeout
        self._redirects = _SameHostAuthRedirect()
        self._opener = urllib.request.build_opener(self._redirects)

    def url(self, name: str) -> str:
        """base/<name>, with base's query and fragment after the name."""
        parts = urllib.parse.urlsplit(self.base)
        path = parts.path.rstrip("/") + "/" + urllib.parse.quote(name)
        return urllib.parse.urlunsplit(parts._replace(path=path))

    def shown(self, name: str) -> str:
        """url(name) as messages show it (redacted)."""
        return redact(self.url(name))

    def clean(self) -> None:
        """Remove what an interrupted download left (this process holds the folder's lock),
        and cached files that fail their check (from a version that did not check)."""
        for path in self.folder.iterdir():
            if path.name.endswith(".part") and path.name.startswith("."):
                path.unlink(missing_ok=True)
            elif path.is_file() and not path.name.startswith("."):
                try:
                    check_file(path.name, path)
                except (ValueError, OSError):
                    path.unlink(missing_ok=True)

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
        url, shown = self.url(name), self.shown(name)
        try:
            response = self._open(url, "GET")
        except DownloadError as error:
            if getattr(error, "status", None) == 404:
                return False
            raise
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{name}.", suffix=".part")
        try:
            with response, os.fdopen(fd, "wb") as f:
                sizes, digest = self._expected(response, shown)
                length = next(iter(sizes.values()), None)
                sha256 = hashlib.sha256()
                with ProgressBar(name, total=length, enabled=self.progress) as bar:
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
                        sha256.update(chunk)
                        bar.update(len(chunk))
                    for source, size in sizes.items():
                        if bar.done != size:
                            raise DownloadError(f"download of {shown} was cut off: got "
                                                f"{bar.done} of {size} bytes ({source})")
                if digest is not None and sha256.hexdigest() != digest:
                    raise DownloadError(f"download of {shown} is corrupt: its sha256 is "
                                        f"{sha256.hexdigest()}; the server's ETag says {digest}")
                f.flush()
                os.fsync(f.fileno())
            try:
                check_file(name, Path(tmp), shown)
            except ValueError as error:
                raise CheckpointError(str(error).replace(tmp, shown)) from None
            os.replace(tmp, target)
        except (DownloadError, CheckpointError):
            Path(tmp).unlink(missing_ok=True)
            raise
        except (OSError, http.client.HTTPException) as error:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(error, TimeoutError):
                raise DownloadError(
                    f"download of {shown} stalled: no data for {self.timeout} s"
                ) from None
            raise DownloadError(f"download of {shown} failed: {error!r}") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def _expected(self, response: Any, shown: str) -> tuple[dict[str, int], str | None]:
        """What the servers announced: sizes by header, and a sha256 when an ETag is one."""
        linked = self._redirects.linked
        sizes: dict[str, int] = {}
        for header, value in (("Content-Length", response.headers.get("Content-Length")),
                              ("X-Linked-Size", response.headers.get("X-Linked-Size")
                               or linked.get("X-Linked-Size"))):
            if value is not None and value.strip().isdigit():
                sizes[header] = int(value)
        if len(set(sizes.values())) > 1:
            raise DownloadError(f"{shown}: the server announces {sizes} bytes; refusing a file "
                                "whose size it contradicts")
        digest = None
        for value in (response.headers.get("X-Linked-Etag"), linked.get("X-Linked-Etag"),
                      response.headers.get("ETag")):
            match = _SHA256.match((value or "").strip().lower())
            if match:
                digest = match.group(1)
                break
        return sizes, digest

    def _open(self, url: str, method: str) -> Any:
        shown = redact(url)
        request = urllib.request.Request(url, method=method,
                                         headers={"User-Agent": "webgpt2"})
        for key, value in self.headers.items():
            # Unredirected: a redirect to another host (a CDN) must not receive the token.
            request.add_unredirected_header(key, value)
        self._redirects.linked = {}
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            error.close()
            hint = ""
            if error.code in (401, 403):
                hint = ("; the repository may be private or gated (set HF_TOKEN) or not exist"
                        if "Authorization" not in self.headers
                        else "; check that the credentials may read this repository")
            failure = DownloadError(f"HTTP {error.code} {error.reason} for {shown}{hint}")
            failure.status = error.code  # type: ignore[attr-defined]
            raise failure from None
        except TimeoutError:
            raise DownloadError(f"{shown}: no response within {self.timeout} s") from None
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, TimeoutError):
                raise DownloadError(f"{shown}: no response within {self.timeout} s") from None
            raise DownloadError(f"cannot reach {shown}: {reason}") from None
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise DownloadError(f"request for {shown} failed: {type(error).__name__}") from None


class _SameHostAuthRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects, keeping the Authorization header only on the same host (the hub
    redirects renamed repositories on its own host, and large files to a CDN). Remembers
    the hub's X-Linked-Size and X-Linked-Etag, which only its redirect carries."""

    linked: dict[str, str] = {}

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        for key in ("X-Linked-Size", "X-Linked-Etag"):
            if headers.get(key):
                self.linked = {**self.linked, key: headers[key]}
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        same_host = (urllib.parse.urlsplit(newurl).netloc.lower()
                     == urllib.parse.urlsplit(req.full_url).netloc.lower())
        if new is not None and same_host:
            for key, value in req.unredirected_hdrs.items():
                new.add_unredirected_header(key, value)
        return new
