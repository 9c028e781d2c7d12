"""webgpt2.io.hub (resolve_checkpoint), webgpt2.io.progress and the GPT-2 presets.

Downloads are tested against a `ThreadingHTTPServer` on 127.0.0.1 serving a folder that holds
transformers-written checkpoints, in the layouts of a plain folder URL and of the hub's
`/{id}/resolve/{revision}/{file}`.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from webgpt2.io import (
    CheckpointError,
    DownloadError,
    ProgressBar,
    cache_root,
    resolve_checkpoint,
)
from webgpt2.models.gpt2 import gpt2_weight_shapes, load_gpt2_weights
from webgpt2.models.gpt2.gpt2_presets import GPT2_PRESETS, resolve_preset

CHECKPOINT_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt",
                    "generation_config.json")


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the server's folder, records requests, and misbehaves on request:
    server.behaviour maps a URL path to "drop" (cut the body off halfway), "hang" (no
    response), "stall" (half the body, then nothing), an HTTP status, or ("redirect", url)."""

    def log_message(self, *args):
        pass

    def _misbehave(self) -> bool:
        server = self.server
        with server.lock:
            server.requests.append((self.command, self.path))
            server.auth.append(self.headers.get("Authorization"))
        action = server.behaviour.get(self.path)
        if action is None:
            return False
        if isinstance(action, int):
            self.send_error(action)
        elif isinstance(action, tuple):
            self.send_response(302)
            self.send_header("Location", action[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif action == "hang":
            time.sleep(3)
        elif action in ("drop", "stall"):
            path = Path(self.translate_path(self.path))
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if action == "stall":
                time.sleep(3)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        return True

    def do_GET(self):
        if not self._misbehave():
            super().do_GET()

    def do_HEAD(self):
        if not self._misbehave():
            super().do_HEAD()


def start_server(root: Path):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    server.lock = threading.Lock()
    server.requests, server.auth, server.behaviour = [], [], {}
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def copy_checkpoint(src: Path, dst: Path, names=CHECKPOINT_FILES) -> Path:
    dst.mkdir(parents=True)
    for name in names:
        os.symlink(src / name, dst / name)
    return dst


@pytest.fixture
def server(tiny_checkpoint, tmp_path):
    root = tmp_path / "served"
    copy_checkpoint(tiny_checkpoint, root / "tiny")
    copy_checkpoint(tiny_checkpoint, root / "openai-community" / "gpt2" / "resolve" / "main")
    copy_checkpoint(tiny_checkpoint, root / "gpt2" / "resolve" / "v1")
    s = start_server(root)
    s.root = root
    yield s
    s.shutdown()
    s.server_close()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in ("WEBGPT2_HUB_ENDPOINT", "HF_ENDPOINT", "HF_TOKEN", "WEBGPT2_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*.part")]


# ---- downloads ----------------------------------------------------------------------------

def test_folder_url_downloads_once_then_uses_the_cache(server, tiny_checkpoint, tmp_path,
                                                       capsys):
    cache = tmp_path / "cache"
    folder = resolve_checkpoint(f"{server.url}/tiny/", cache_dir=cache)
    assert folder.is_relative_to(cache / "url")
    assert files_of(folder) == {n: (tiny_checkpoint / n).read_bytes() for n in CHECKPOINT_FILES}
    assert not leftovers(cache)
    fetched = {path for method, path in server.requests if method == "GET"}
    assert {f"/tiny/{n}" for n in CHECKPOINT_FILES} <= fetched
    # stderr is not a terminal under pytest: one summary line per downloaded file.
    err = capsys.readouterr().err
    assert "model.safetensors: 13.3 MB in " in err and "\r" not in err

    count = len(server.requests)
    assert resolve_checkpoint(f"{server.url}/tiny", cache_dir=cache) == folder
    assert len(server.requests) == count
    weights = load_gpt2_weights(folder)
    assert list(weights) == list(gpt2_weight_shapes(
        {"vocabulary_size": 50257, "num_layers": 2, "hidden_dim": 64, "intermediate_dim": 256,
         "max_sequence_length": 128}))


def test_hub_id_through_the_endpoint_with_token(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WEBGPT2_HUB_ENDPOINT", server.url + "/")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    cache = tmp_path / "cache"
    folder = resolve_checkpoint("openai-community/gpt2", cache_dir=cache, progress=False)
    assert folder == cache / "hub" / "openai-community" / "gpt2" / "main"
    assert (folder / "model.safetensors").is_file()
    assert all(path.startswith("/openai-community/gpt2/resolve/main/")
               for _, path in server.requests)
    assert set(server.auth) == {"Bearer hf_secret"}
    assert capsys.readouterr().err == ""
    # A repository page URL on the endpoint's host is the same hub id, already cached.
    count = len(server.requests)
    assert resolve_checkpoint(f"{server.url}/openai-community/gpt2", cache_dir=cache) == folder
    assert len(server.requests) == count


def test_legacy_id_revision_hf_endpoint_and_cache_env(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("WEBGPT2_CACHE", str(tmp_path / "env-cache"))
    folder = resolve_checkpoint("gpt2", revision="v1", progress=False)
    assert folder == tmp_path / "env-cache" / "hub" / "_" / "gpt2" / "v1"
    assert server.auth and set(server.auth) == {None}  # no token, no header
    monkeypatch.delenv("WEBGPT2_CACHE")
    assert cache_root() == tmp_path / "home" / ".cache" / "webgpt2"


def test_connection_dropped_mid_file_leaves_nothing_behind(server, tmp_path):
    cache = tmp_path / "cache"
    url = f"{server.url}/tiny/model.safetensors"
    server.behaviour["/tiny/model.safetensors"] = "drop"
    with pytest.raises(DownloadError, match=f"{url} was cut off: got 6650788 of 13301576"):
        resolve_checkpoint(f"{server.url}/tiny", cache_dir=cache, progress=False)
    folder = next((cache / "url").iterdir())
    assert not leftovers(cache) and not (folder / "model.safetensors").exists()
    assert not (folder / ".webgpt2-complete").exists()
    # The next try fetches what is missing only.
    del server.behaviour["/tiny/model.safetensors"]
    server.requests.clear()
    assert resolve_checkpoint(f"{server.url}/tiny", cache_dir=cache, progress=False) == folder
    assert ("GET", "/tiny/config.json") not in server.requests
    assert ("GET", "/tiny/model.safetensors") in server.requests


def test_stalled_and_hung_servers_time_out(server, tmp_path):
    server.behaviour["/tiny/model.safetensors"] = "stall"
    with pytest.raises(DownloadError, match=r"model.safetensors stalled: no data for 0.5 s"):
        resolve_checkpoint(f"{server.url}/tiny", cache_dir=tmp_path / "c", progress=False,
                           timeout=0.5)
    assert not leftovers(tmp_path / "c")
    server.behaviour["/tiny/config.json"] = "hang"
    with pytest.raises(DownloadError, match=r"tiny/config.json: no response within 0.5 s"):
        resolve_checkpoint(f"{server.url}/tiny", cache_dir=tmp_path / "d", progress=False,
                           timeout=0.5)


def test_http_errors_name_url_and_status(server, tmp_path, monkeypatch):
    server.behaviour["/tiny/config.json"] = 500
    with pytest.raises(DownloadError, match=f"HTTP 500 .* for {server.url}/tiny/config.json"):
        resolve_checkpoint(f"{server.url}/tiny", cache_dir=tmp_path, progress=False)
    server.behaviour["/tiny/config.json"] = 401
    with pytest.raises(DownloadError, match="HTTP 401 .*set HF_TOKEN"):
        resolve_checkpoint(f"{server.url}/tiny", cache_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=f"{server.url}/nothing/config.json was not found"):
        resolve_checkpoint(f"{server.url}/nothing", cache_dir=tmp_path, progress=False)
    monkeypatch.setenv("WEBGPT2_HUB_ENDPOINT", server.url)
    with pytest.raises(CheckpointError, match="is 'someone/missing' a hub model id"):
        resolve_checkpoint("someone/missing", cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "hub" / "someone").exists()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(DownloadError, match=f"cannot reach http://127.0.0.1:{port}/x/config"):
        resolve_checkpoint(f"http://127.0.0.1:{port}/x", cache_dir=tmp_path, progress=False)


def test_pickle_only_repository_is_refused(server, tiny_checkpoint, tmp_path):
    folder = copy_checkpoint(tiny_checkpoint, server.root / "pickled",
                             ("config.json", "vocab.json", "merges.txt"))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 never unpickled")
    with pytest.raises(CheckpointError, match="refusing to load pickled checkpoint "
                       f"{server.url}/pickled/pytorch_model.bin.*convert it to model.safetensors"):
        resolve_checkpoint(f"{server.url}/pickled", cache_dir=tmp_path, progress=False)
    assert ("GET", "/pickled/pytorch_model.bin") not in server.requests
    assert ("HEAD", "/pickled/pytorch_model.bin") in server.requests
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match="neither .*/pickled/model.safetensors nor"):
        resolve_checkpoint(f"{server.url}/pickled", cache_dir=tmp_path, progress=False)


def test_missing_tokenizer_and_refused_config(server, tiny_checkpoint, tmp_path):
    copy_checkpoint(tiny_checkpoint, server.root / "notok", ("config.json", "model.safetensors"))
    with pytest.raises(CheckpointError,
                       match=r"/notok is missing: vocab.json \+ merges.txt \(or tokenizer.json\)"):
        resolve_checkpoint(f"{server.url}/notok", cache_dir=tmp_path, progress=False)
    bad = copy_checkpoint(tiny_checkpoint, server.root / "bad", CHECKPOINT_FILES[1:])
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(CheckpointError, match="bad/config.json: activation_function is 'relu'"):
        resolve_checkpoint(f"{server.url}/bad", cache_dir=tmp_path, progress=False)
    assert ("GET", "/bad/model.safetensors") not in server.requests


def test_sharded_repository(server, tiny_checkpoint, tmp_path):
    from test_io import write_sharded

    sharded = write_sharded(tiny_checkpoint, server.root / "sharded")
    for name in ("vocab.json", "merges.txt"):
        os.symlink(tiny_checkpoint / name, sharded / name)
    folder = resolve_checkpoint(f"{server.url}/sharded", cache_dir=tmp_path, progress=False)
    assert ("GET", "/sharded/model.safetensors") in server.requests  # 404 first
    assert files_of(folder) == files_of(sharded)
    expected = load_gpt2_weights(tiny_checkpoint)
    got = load_gpt2_weights(folder)
    assert {k: bytes(v.data) for k, v in got.items()} == {
        k: bytes(v.data) for k, v in expected.items()}


def test_token_is_not_forwarded_to_another_host(server, tiny_checkpoint, tmp_path, monkeypatch):
    other_root = tmp_path / "cdn"
    copy_checkpoint(tiny_checkpoint, other_root / "blob")
    other = start_server(other_root)
    try:
        # "localhost" is another host name than the endpoint's 127.0.0.1.
        cdn = other.url.replace("127.0.0.1", "localhost")
        server.behaviour["/openai-community/gpt2/resolve/main/model.safetensors"] = (
            "redirect", f"{cdn}/blob/model.safetensors")
        server.behaviour["/openai-community/gpt2/resolve/main/vocab.json"] = (
            "redirect", "/tiny/vocab.json")
        monkeypatch.setenv("WEBGPT2_HUB_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        folder = resolve_checkpoint("openai-community/gpt2", cache_dir=tmp_path / "c",
                                    progress=False)
        assert (folder / "model.safetensors").read_bytes() == \
            (tiny_checkpoint / "model.safetensors").read_bytes()
        assert other.requests == [("GET", "/blob/model.safetensors")]
        assert other.auth == [None]
        same_host = server.auth[server.requests.index(("GET", "/tiny/vocab.json"))]
        assert same_host == "Bearer hf_secret"
    finally:
        other.shutdown()
        other.server_close()


# ---- local folders ------------------------------------------------------------------------

def test_local_folders(tiny_checkpoint, tmp_path, monkeypatch):
    assert resolve_checkpoint(tiny_checkpoint) == tiny_checkpoint
    assert resolve_checkpoint(str(tiny_checkpoint)) == tiny_checkpoint
    monkeypatch.chdir(tiny_checkpoint.parent)
    assert resolve_checkpoint(tiny_checkpoint.name) == tiny_checkpoint  # local beats hub id
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"is missing: config.json; model.safetensors "
                       r"\(or model.safetensors.index.json with its shards\); vocab.json"):
        resolve_checkpoint(empty)
    tokenizer_json_only = copy_checkpoint(tiny_checkpoint, tmp_path / "tj",
                                          ("config.json", "model.safetensors"))
    (tokenizer_json_only / "tokenizer.json").write_text("{}")
    assert resolve_checkpoint(tokenizer_json_only) == tokenizer_json_only
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "model.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="refusing to load pickled checkpoint"):
        resolve_checkpoint(pickled)
    with pytest.raises(CheckpointError, match="is a file; expected a checkpoint folder"):
        resolve_checkpoint(tiny_checkpoint / "config.json")
    for missing in ("./no-such-folder", "a/b/c", str(tmp_path / "gone")):
        with pytest.raises(CheckpointError, match="does not exist; expected a checkpoint"):
            resolve_checkpoint(missing)


# ---- progress -----------------------------------------------------------------------------

class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_forms():
    log = io.StringIO()
    with ProgressBar("w.bin", total=3_000_000, stream=log) as bar:
        bar(1_000_000, 3_000_000)
        bar(3_000_000, 3_000_000)
    assert log.getvalue().startswith("w.bin: 3.0 MB in ") and log.getvalue().count("\n") == 1

    failed = io.StringIO()
    with pytest.raises(RuntimeError), ProgressBar("x", total=10, stream=failed):
        raise RuntimeError
    assert failed.getvalue() == ""

    quiet = FakeTerminal()
    with ProgressBar("x", total=10, stream=quiet, enabled=False) as bar:
        bar.update(10)
    assert quiet.getvalue() == "" and bar.done == 10

    own = FakeTerminal()
    with ProgressBar("model.safetensors", total=2_000_000, stream=own, use_tqdm=False,
                     min_interval=0) as bar:
        bar.update(1_000_000)
        bar.update(1_000_000)
    lines = own.getvalue().split("\r")
    assert "[############............]  50.0% 1.0/2.0 MB" in lines[1]
    assert "100.0% 2.0/2.0 MB" in lines[-1] and own.getvalue().endswith("\n")
    unknown = FakeTerminal()
    with ProgressBar("f", stream=unknown, use_tqdm=False, min_interval=0) as bar:
        bar.update(500_000)
    assert "f 0.5 MB" in unknown.getvalue()


def test_progress_bar_uses_tqdm_on_a_terminal():
    pytest.importorskip("tqdm")
    term = FakeTerminal()
    with ProgressBar("weights", total=4_000_000, stream=term) as bar:
        assert bar._tqdm is not None
        bar.update(4_000_000)
    assert "weights" in term.getvalue() and "100%" in term.getvalue()


# ---- presets ------------------------------------------------------------------------------

def test_presets_are_consistent_data():
    hub_ids = {"gpt2_base_en": "openai-community/gpt2",
               "gpt2_medium_en": "openai-community/gpt2-medium",
               "gpt2_large_en": "openai-community/gpt2-large",
               "gpt2_extra_large_en": "openai-community/gpt2-xl"}
    for name, hub_id in hub_ids.items():
        preset = GPT2_PRESETS[name]
        assert resolve_preset(name) == hub_id
        assert preset["description"]
        shapes = gpt2_weight_shapes(preset["config"])
        count = sum(functools.reduce(lambda a, b: a * b, s, 1) for s in shapes.values())
        assert count == preset["params"], name
        cfg = preset["config"]
        assert cfg["hidden_dim"] % cfg["num_heads"] == 0
        assert cfg["intermediate_dim"] == 4 * cfg["hidden_dim"]
    folder = resolve_preset("gpt2_shakespeare_en")
    import webgpt2

    assert folder == Path(webgpt2.__file__).resolve().parent / "assets" / "gpt2_shakespeare"


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown preset 'gpt2_tiny'; known presets: "
                       "gpt2_base_en, gpt2_medium_en"):
        resolve_preset("gpt2_tiny")


def test_shakespeare_folder_resolves_when_shipped():
    folder = resolve_preset("gpt2_shakespeare_en")
    if not (folder / "config.json").is_file():
        pytest.skip("the gpt2_shakespeare checkpoint is not in the package yet")
    assert resolve_checkpoint(folder) == folder

