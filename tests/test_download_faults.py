"""Fault injection for the download cache (webgpt2.io.hub): a server on 127.0.0.1 that
truncates, lies about sizes and hashes, serves HTML, stalls or dies mid-file. After each
fault nothing wrong is cached, and a retry succeeds once the server is fixed."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from test_hub import clean_environment  # noqa: F401  (autouse: no hub settings, a fresh HOME)

from webgpt2.io import CheckpointError, DownloadError, resolve_checkpoint

FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
HTML = b"<!doctype html><html><body>Sign in to continue</body></html>"


class FaultyHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.files (URL path -> bytes); server.faults maps a path to a fault."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            server.requests.append(self.path)
            server.auth.append(self.headers.get("Authorization"))
        path = self.path.split("?", 1)[0]
        fault = server.faults.get(path)
        body = server.files.get(path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        half = body[: len(body) // 2]
        if fault == "html":
            self._send(HTML, {"Content-Type": "text/html"})
        elif fault == "short":  # Content-Length says all, half arrives, then a clean close
            self._send(half, {"Content-Length": str(len(body))}, length=False)
        elif fault == "small-length":  # Content-Length agrees with a half body
            self._send(half)
        elif fault == "no-length":  # no Content-Length, an early close ends the body
            self._send(half, length=False)
        elif fault == "chunked-cut":  # chunked, closed before the last chunk
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(half), half))
            self._close()
        elif fault == "stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(half)
            self.wfile.flush()
            time.sleep(2)
            self._close()
        elif fault == "reset":  # dies mid-file: a TCP reset, not a clean close
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(half)
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            self.connection.close()
            self.close_connection = True
        elif fault == "bad-linked-size":
            self._send(body, {"X-Linked-Size": str(len(body) + 1)})
        elif fault == "bad-etag":
            self._send(body, {"ETag": f'"{hashlib.sha256(b"other").hexdigest()}"'})
        elif fault == "good-etag":
            self._send(body, {"ETag": f'"{hashlib.sha256(body).hexdigest()}"'})
        elif fault == "redirect-bad-size":  # the hub's way: size on the redirect, data on a CDN
            self.send_response(302)
            self.send_header("Location", "/cdn" + path)
            self.send_header("X-Linked-Size", str(len(body) - 1))
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(body)

    def _send(self, body: bytes, headers: dict | None = None, length: bool = True) -> None:
        self.send_response(200)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if length and "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        if not length:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if not length:
            self._close()

    def _close(self) -> None:
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


@pytest.fixture
def server(tiny_checkpoint):
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FaultyHandler)
    s.daemon_threads = True
    s.lock = threading.Lock()
    s.requests, s.auth, s.faults = [], [], {}
    s.files = {}
    for name in FILES:
        data = (tiny_checkpoint / name).read_bytes()
        for prefix in ("/m", "/cdn/m", "/a--b/c/resolve/main", "/a/b--c/resolve/main"):
            s.files[f"{prefix}/{name}"] = data
    s.url = f"http://127.0.0.1:{s.server_address[1]}"
    threading.Thread(target=s.serve_forever, daemon=True).start()
    yield s
    s.shutdown()
    s.server_close()


def cached_files(cache: Path) -> dict[str, bytes]:
    """Every file under the cache except the lock files, by path relative to it."""
    return {str(p.relative_to(cache)): p.read_bytes() for p in cache.rglob("*")
            if p.is_file() and ".locks" not in p.parts}


def assert_nothing_wrong_cached(cache: Path, tiny_checkpoint: Path) -> None:
    for relative, data in cached_files(cache).items():
        name = Path(relative).name
        assert not name.endswith(".part"), relative
        assert name != ".webgpt2-complete", "a failed download was marked complete"
        assert data == (tiny_checkpoint / name).read_bytes(), f"{relative} is wrong"


FAULTS = [
    ("model.safetensors", "short", DownloadError, "cut off: got 6650788 of 13301576"),
    ("model.safetensors", "small-length", CheckpointError, "truncated"),
    ("model.safetensors", "no-length", CheckpointError, "truncated"),
    ("config.json", "no-length", CheckpointError, "config.json is not valid JSON"),
    ("vocab.json", "short", DownloadError, "cut off"),
    ("merges.txt", "chunked-cut", DownloadError, "merges.txt failed: IncompleteRead"),
    ("model.safetensors", "reset", DownloadError, "model.safetensors"),
    ("config.json", "html", CheckpointError, r"config.json is not valid JSON \(an HTML page"),
    ("vocab.json", "html", CheckpointError, "vocab.json is not valid JSON"),
    ("model.safetensors", "html", CheckpointError, "not a safetensors file"),
    ("model.safetensors", "bad-linked-size", DownloadError, "contradicts"),
    ("model.safetensors", "bad-etag", DownloadError, "corrupt: its sha256"),
    ("model.safetensors", "redirect-bad-size", DownloadError, "X-Linked-Size"),
    ("model.safetensors", "stall", DownloadError, "stalled: no data for 0.5 s"),
]


@pytest.mark.parametrize("name,fault,error,message", FAULTS,
                         ids=[f"{f[0]}-{f[1]}" for f in FAULTS])
def test_a_fault_caches_nothing_wrong_and_a_retry_succeeds(server, tiny_checkpoint, tmp_path,
                                                           name, fault, error, message):
    cache = tmp_path / "cache"
    server.faults[f"/m/{name}"] = fault
    with pytest.raises(error, match=message):
        resolve_checkpoint(f"{server.url}/m", cache_dir=cache, progress=False, timeout=0.5)
    assert_nothing_wrong_cached(cache, tiny_checkpoint)
    server.faults.clear()
    server.requests.clear()
    folder = resolve_checkpoint(f"{server.url}/m", cache_dir=cache, progress=False, timeout=5)
    assert f"/m/{name}" in server.requests or f"/cdn/m/{name}" in server.requests
    for each in FILES:
        assert (folder / each).read_bytes() == (tiny_checkpoint / each).read_bytes()
    assert (folder / ".webgpt2-complete").is_file()
    assert not list(cache.rglob("*.part"))


def test_a_matching_etag_is_accepted(server, tiny_checkpoint, tmp_path):
    server.faults["/m/model.safetensors"] = "good-etag"
    folder = resolve_checkpoint(f"{server.url}/m", cache_dir=tmp_path, progress=False)
    assert (folder / "model.safetensors").read_bytes() == \
        (tiny_checkpoint / "model.safetensors").read_bytes()


def test_bad_files_from_an_unverified_cache_and_killed_downloads_are_replaced(
        server, tiny_checkpoint, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError):
        server.faults["/m/model.safetensors"] = "html"
        resolve_checkpoint(f"{server.url}/m", cache_dir=cache, progress=False)
    folder = next((cache / "url").iterdir())
    # What an older, unchecking version or a killed process would have left behind.
    (folder / "config.json").write_bytes(HTML)
    part = folder / ".model.safetensors.abc123.part"
    part.write_bytes(b"\0" * 1000)
    server.faults.clear()
    assert resolve_checkpoint(f"{server.url}/m", cache_dir=cache, progress=False) == folder
    assert not part.exists()
    assert (folder / "config.json").read_bytes() == (tiny_checkpoint / "config.json").read_bytes()


def test_failed_lookups_leave_no_folders(server, tmp_path, monkeypatch):
    monkeypatch.setenv("WEBGPT2_HUB_ENDPOINT", server.url)
    with pytest.raises(CheckpointError, match="was not found"):
        resolve_checkpoint("someone/missing", cache_dir=tmp_path, progress=False)
    # A repository page URL on the endpoint is a hub id (a legacy bare one here).
    with pytest.raises(CheckpointError, match="was not found"):
        resolve_checkpoint(f"{server.url}/nothing", cache_dir=tmp_path, progress=False)
    monkeypatch.delenv("WEBGPT2_HUB_ENDPOINT")
    with pytest.raises(CheckpointError, match="was not found"):
        resolve_checkpoint(f"{server.url}/nothing", cache_dir=tmp_path, progress=False)
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                  if p.is_dir() and ".locks" not in p.parts)
    assert left == ["hub", "url"]


def test_cache_keys_do_not_collide_and_revisions_stay_inside(server, tmp_path, monkeypatch):
    monkeypatch.setenv("WEBGPT2_HUB_ENDPOINT", server.url)
    one = resolve_checkpoint("a--b/c", cache_dir=tmp_path, progress=False)
    two = resolve_checkpoint("a/b--c", cache_dir=tmp_path, progress=False)
    assert one != two and one.is_dir() and two.is_dir()
    for revision in ("..", ".", ""):
        with pytest.raises(CheckpointError, match="is not a branch, tag or commit name"):
            resolve_checkpoint("a/b--c", revision=revision, cache_dir=tmp_path, progress=False)
    # Other revisions stay one folder below the repository's, whatever they hold.
    server.files.update({k.replace("/resolve/main/", "/resolve/..%2Fx/"): v
                         for k, v in server.files.items() if k.startswith("/a/b--c/")})
    server.files.update({k.replace("/resolve/main/", "/resolve/refs%2Fpr%2F1/"): v
                         for k, v in server.files.items() if k.startswith("/a/b--c/")})
    for revision in ("../x", "refs/pr/1"):
        folder = resolve_checkpoint("a/b--c", revision=revision, cache_dir=tmp_path,
                                    progress=False)
        assert folder.parent == two.parent, revision
        assert folder.resolve().parent == (tmp_path / "hub" / "a" / "b--c").resolve()


def test_query_and_fragment_follow_the_file_name(server, tmp_path):
    folder = resolve_checkpoint(f"{server.url}/m?rev=7#top", cache_dir=tmp_path,
                                progress=False)
    assert "/m/config.json?rev=7" in server.requests
    assert all(r.endswith("?rev=7") for r in server.requests)
    # Another query is another source: another folder.
    other = resolve_checkpoint(f"{server.url}/m?rev=8", cache_dir=tmp_path, progress=False)
    assert other != folder


def test_credentials_never_appear_in_errors(server, tiny_checkpoint, tmp_path):
    host = server.url.removeprefix("http://")
    secret = "hunter2-very-secret"
    server.faults["/m/model.safetensors"] = "short"
    with pytest.raises(DownloadError) as info:
        resolve_checkpoint(f"http://me:{secret}@{host}/m?token={secret}&x=1", cache_dir=tmp_path,
                           progress=False)
    assert secret not in str(info.value) and "me:" not in str(info.value)
    assert "x=1" in str(info.value)
    # The credentials went to the server as basic auth, not into the URL or the cache.
    assert any(a and a.startswith("Basic ") for a in server.auth)
    server.faults.clear()
    folder = resolve_checkpoint(f"http://me:{secret}@{host}/m?token={secret}&x=1",
                                cache_dir=tmp_path, progress=False)
    assert secret not in str(folder)
    assert secret not in (folder / ".webgpt2-complete").read_text()
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(f"http://me:{secret}@{host}/nothing", cache_dir=tmp_path,
                           progress=False)
    assert secret not in str(info.value)
    assert json.loads((folder / ".webgpt2-complete").read_text())["source"] == \
        f"http://{host}/m?token=***&x=1"
    assert os.listdir(tmp_path / "url") == [folder.name]
