"""Build and serve the demo page (`index.html` and `web/`).

The page's files ship inside the package (`webgpt2/page/`, put there when the wheel is
built) and live at the repository's root in a checkout; `page_root()` finds the installed
copy first, the checkout second. The page runs webgpt2 under Pyodide in a Web Worker. In a
checkout, `build()` puts what the worker loads into two ignored folders, without touching
the internet:

- `web/wheels/`: webgpt2 as a pure-Python wheel (`pip wheel . --no-deps`, shaders included),
  any extra Pyodide wheels named by `$WEBGPT2_PYODIDE_NUMPY` (a NumPy built for Pyodide: a
  wheel, or a folder of wheels), and `manifest.json` saying where everything is;
- `web/pyodide/v<version>/`: the Pyodide runtime copied from `node_modules/pyodide`
  (`npm install`); when that is missing the manifest points at the jsDelivr CDN copy of the
  same version.

Installed (`pip install .`), the package folder may be read-only: the wheel is rebuilt from
the installed package into the download cache (`cache_root()/page/`), and Pyodide is served
straight from `node_modules/pyodide` in the current folder when there is one; both are
mounted beside the page.

`serve()` builds, then serves the repository with `http.server`, sending the headers that make
the page cross-origin isolated (COOP/COEP), so Stop can use a SharedArrayBuffer.

    python -m webgpt2.web                 # build and serve on http://127.0.0.1:8000/
    python -m webgpt2.web --build-only
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
import webbrowser
import zipfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["PYODIDE_VERSION", "PageRequestHandler", "build", "check_port", "page_root",
           "prepare", "serve", "start_server"]

# The Pyodide release the page is written for (Python 3.14); package.json pins the same one.
PYODIDE_VERSION = "314.0.7"
PYODIDE_CDN = f"https://cdn.jsdelivr.net/pyodide/v{PYODIDE_VERSION}/full/"
# What the worker needs from a Pyodide distribution: the loader, the runtime and the stdlib.
PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip",
                 "pyodide-lock.json")
NUMPY_ENV = "WEBGPT2_PYODIDE_NUMPY"


def page_root() -> Path:
    """The folder holding `index.html` and `web/`: the installed package's `webgpt2/page/`
    when there is one, else the repository root of a checkout."""
    package = Path(__file__).resolve().parent
    for root in (package / "page", package.parent):
        if (root / "index.html").is_file() and (root / "web" / "worker.js").is_file():
            return root
    raise FileNotFoundError(
        f"neither {package / 'page'} nor {package.parent} holds index.html and web/: this "
        "webgpt2 was installed without its page; reinstall it from a wheel or a checkout"
    )


def _is_checkout(root: Path) -> bool:
    return (root / "pyproject.toml").is_file() and (root / "webgpt2").is_dir()


def check_port(port: object) -> int:
    """The port as an int, or ValueError naming the option: 0 (any free port) to 65535.

    Example:
        >>> check_port(70000)
        Traceback (most recent call last):
        ...
        ValueError: --port 70000 is out of range; expected 0 (any free port) to 65535
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"--port {port} is out of range; expected 0 (any free port) to 65535")
    return port


def prepare(root: Path | None = None, *, numpy: str | None = None,
            quiet: bool = False) -> tuple[Path, dict[str, Path], dict]:
    """Build what the page needs; returns (the folder to serve, mounts, the manifest).

    In a checkout the build goes into `web/` itself and there are no mounts; installed, the
    built wheel and a local Pyodide are mounted at `web/wheels` and `web/pyodide/v<version>`.
    """
    root = root or page_root()
    if _is_checkout(root):
        return root, {}, build(root, numpy=numpy, quiet=quiet)
    out = _installed_build_folder()
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    mounts: dict[str, Path] = {"web/wheels": wheels}
    pyodide = _local_pyodide(Path.cwd() / "node_modules" / "pyodide")
    if pyodide is not None:
        mounts[f"web/pyodide/v{PYODIDE_VERSION}"] = pyodide
    manifest = {
        "webgpt2": _wheel_from_package(wheels, quiet).name,
        "pyodide": f"pyodide/v{PYODIDE_VERSION}/" if pyodide else PYODIDE_CDN,
        "pyodideVersion": PYODIDE_VERSION,
        "pyodideCdn": PYODIDE_CDN,
        "packages": _copy_extra_wheels(wheels, numpy or os.environ.get(NUMPY_ENV)),
    }
    (wheels / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return root, mounts, manifest


def _record_hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _installed_build_folder() -> Path:
    from webgpt2.io.hub import cache_root

    return cache_root() / "page"


def _local_pyodide(source: Path) -> Path | None:
    """node_modules/pyodide when it holds the runtime of the version the page needs."""
    if not all((source / name).is_file() for name in PYODIDE_FILES):
        return None
    version = json.loads((source / "package.json").read_text()).get("version")
    if version != PYODIDE_VERSION:
        raise RuntimeError(f"{source} is Pyodide {version}; the page needs "
                           f"{PYODIDE_VERSION} (run `npm install pyodide@{PYODIDE_VERSION}`)")
    return source


def _wheel_from_package(wheels: Path, quiet: bool) -> Path:
    """A py3-none-any wheel of the installed package itself (there is no source tree to
    build from), rebuilt only when a file of the package changed."""
    from webgpt2 import __version__

    package = Path(__file__).resolve().parent
    files = sorted(p for p in package.rglob("*") if p.is_file()
                   and "__pycache__" not in p.parts and p.suffix != ".pyc"
                   and (package / "page") not in p.parents)
    digest = hashlib.sha256()
    for f in files:
        info = f.stat()
        digest.update(f"{f.relative_to(package)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    name = f"webgpt2-{__version__}-py3-none-any.whl"
    target, stamp_file = wheels / name, wheels / ".webgpt2-sources"
    if target.is_file() and stamp_file.is_file() and stamp_file.read_text() == digest.hexdigest():
        return target
    for old in wheels.glob("webgpt2-*.whl"):
        old.unlink()
    info_dir = f"webgpt2-{__version__}.dist-info"
    entries = [(f"webgpt2/{f.relative_to(package).as_posix()}", f.read_bytes()) for f in files]
    entries += [
        (f"{info_dir}/METADATA", f"Metadata-Version: 2.1\nName: webgpt2\n"
                                 f"Version: {__version__}\n".encode()),
        (f"{info_dir}/WHEEL", b"Wheel-Version: 1.0\nGenerator: webgpt2.web\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
    ]
    record = "".join(f"{path},sha256={_record_hash(data)},{len(data)}\n" for path, data in entries)
    entries.append((f"{info_dir}/RECORD", (record + f"{info_dir}/RECORD,,\n").encode()))
    partial = target.with_suffix(".part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in entries:
            archive.writestr(path, data)
    os.replace(partial, target)
    stamp_file.write_text(digest.hexdigest())
    if not quiet:
        print(f"built {name} ({target.stat().st_size} bytes) from {package}", file=sys.stderr)
    return target


def build(root: Path | None = None, *, numpy: str | None = None, quiet: bool = False) -> dict:
    """Build what the page loads into `web/wheels/` and `web/pyodide/`; return the manifest.

    numpy: a Pyodide NumPy wheel or a folder of Pyodide wheels for the `wasm` backend
    (default `$WEBGPT2_PYODIDE_NUMPY`; without one the page tries Pyodide's CDN on demand).
    """
    root = root or page_root()
    wheels = root / "web" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    manifest = {
        "webgpt2": _build_wheel(root, wheels, quiet).name,
        "pyodide": _copy_pyodide(root),
        "pyodideVersion": PYODIDE_VERSION,
        "pyodideCdn": PYODIDE_CDN,
        "packages": _copy_extra_wheels(wheels, numpy or os.environ.get(NUMPY_ENV)),
    }
    (wheels / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if not quiet:
        print(f"page built: {manifest}", file=sys.stderr)
    return manifest


def _sources(root: Path) -> list[Path]:
    files = [root / "pyproject.toml", root / "README.md"]
    for folder in (root / "webgpt2", root / "shaders"):
        files += [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return [f for f in files if f.exists()]


def _build_wheel(root: Path, wheels: Path, quiet: bool) -> Path:
    """webgpt2's wheel, rebuilt only when a source file was added, removed or changed."""
    existing = sorted(wheels.glob("webgpt2-*-py3-none-any.whl"))
    stamp_file = wheels / ".webgpt2-sources"
    digest = hashlib.sha256()
    for f in sorted(_sources(root)):
        info = f.stat()
        digest.update(f"{f.relative_to(root)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    stamp = digest.hexdigest()
    if len(existing) == 1 and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return existing[0]
    for old in existing:
        old.unlink()
    command = [sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "-w", str(wheels),
               "--quiet"]
    try:
        import hatchling  # noqa: F401  (building in this environment needs no download)

        command.append("--no-build-isolation")
    except ImportError:
        pass
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the webgpt2 wheel failed:\n{result.stdout}{result.stderr}")
    built = sorted(wheels.glob("webgpt2-*-py3-none-any.whl"))
    if len(built) != 1:
        raise RuntimeError(f"pip wheel left {len(built)} webgpt2 wheels in {wheels}")
    stamp_file.write_text(stamp)
    if not quiet:
        print(f"built {built[0].name} ({built[0].stat().st_size} bytes)", file=sys.stderr)
    return built[0]


def _copy_pyodide(root: Path) -> str:
    """The Pyodide index URL, relative to `web/`: the local copy, else the CDN."""
    source = _local_pyodide(root / "node_modules" / "pyodide")
    # One folder per version: the server lets browsers cache these files for good.
    target = root / "web" / "pyodide" / f"v{PYODIDE_VERSION}"
    if source is None:
        return PYODIDE_CDN
    target.mkdir(parents=True, exist_ok=True)
    for name in PYODIDE_FILES:
        src, dst = source / name, target / name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size or \
                dst.stat().st_mtime < src.stat().st_mtime:
            shutil.copy2(src, dst)
    return f"pyodide/v{PYODIDE_VERSION}/"


def _copy_extra_wheels(wheels: Path, spec: str | None) -> list[str]:
    """Copy the Pyodide wheels named by spec (a wheel or a folder of them) next to webgpt2's."""
    for old in wheels.glob("*.whl"):
        if not old.name.startswith("webgpt2-"):
            old.unlink()
    if not spec:
        return []
    path = Path(spec)
    found = sorted(path.glob("*.whl")) if path.is_dir() else [path]
    if not found or not all(p.is_file() and p.suffix == ".whl" for p in found):
        raise FileNotFoundError(f"{NUMPY_ENV}={spec!r}: expected a .whl file or a folder of them")
    for wheel in found:
        shutil.copy2(wheel, wheels / wheel.name)
    return [p.name for p in found]


class PageRequestHandler(http.server.SimpleHTTPRequestHandler):
    """The page (`index.html` and `web/`; nothing else of the repository), plus `mounts`
    (URL prefix -> folder), with the headers that make the page cross-origin isolated and keep
    browsers from caching stale builds."""

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".whl": "application/zip",
        ".json": "application/json",
        ".safetensors": "application/octet-stream",
    }

    def __init__(self, *args, mounts: Mapping[str, Path] | None = None, quiet: bool = True,
                 isolated: bool = True, **kwargs) -> None:
        self.mounts = dict(mounts or {})
        self.quiet = quiet
        self.isolated = isolated
        super().__init__(*args, **kwargs)

    def send_head(self):  # type: ignore[no-untyped-def]
        # A path that does not decode (%00, %ff) would raise inside the file system calls
        # and drop the connection: answer 400 instead.
        raw = self.path.split("?", 1)[0].split("#", 1)[0]
        try:
            decoded = urllib.parse.unquote(raw, errors="strict")
        except UnicodeDecodeError:
            decoded = "\0"
        if "\0" in decoded:
            self.send_error(400, "Bad request path")
            return None
        return super().send_head()

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, folder in self.mounts.items():
            prefix = "/" + prefix.strip("/") + "/"
            if clean.startswith(prefix):
                relative = urllib.parse.unquote(clean[len(prefix):], errors="surrogatepass")
                resolved = (Path(folder) / relative).resolve()
                if Path(folder).resolve() in resolved.parents:
                    return str(resolved)
                return str(Path(folder) / "__outside__")
        translated = super().translate_path(path)
        # Only the page is public: not the rest of the repository (.git, caches, sources).
        root = Path(self.directory).resolve()
        public = (root / "index.html", root / "web")
        target = Path(translated).resolve()
        if target == root or any(target == p or p in target.parents for p in public):
            return translated
        return str(root / "web" / "__not_public__")

    def end_headers(self) -> None:
        if self.isolated:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "cross-origin")
        self.send_header("Access-Control-Allow-Origin", "*")
        if self.path.startswith("/web/pyodide/v"):
            # Versioned and immutable: cached, the wasm's compiled code too (a second visit
            # boots in about half the time).
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
        else:
            self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        if not self.quiet:
            super().log_message(format, *args)


def start_server(host: str = "127.0.0.1", port: int = 0, *, root: Path | None = None,
                 mounts: Mapping[str, Path] | None = None, quiet: bool = True,
                 isolated: bool = True) -> http.server.ThreadingHTTPServer:
    """Serve the page from a background thread; port 0 picks a free one (`server.server_port`).
    isolated=False leaves out the COOP/COEP headers (as a plain static host would), so the
    page runs without SharedArrayBuffer. Stop it with `server.shutdown()`."""
    check_port(port)
    handler = functools.partial(PageRequestHandler, directory=str(root or page_root()),
                                mounts=mounts, quiet=quiet, isolated=isolated)
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as error:
        raise OSError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="webgpt2-page", daemon=True).start()
    return server


def serve(host: str = "127.0.0.1", port: int = 8000, open_browser: bool = False) -> None:
    """Build the page's files, then serve the page until interrupted (Ctrl-C)."""
    check_port(port)
    root, mounts, manifest = prepare()
    server = start_server(host, port, root=root, mounts=mounts, quiet=False)
    url = f"http://{host}:{server.server_port}/"
    if manifest["pyodide"].startswith("http"):
        print(f"Pyodide will come from the CDN ({manifest['pyodide']}): no node_modules/pyodide "
              "here; run `npm ci` for an offline page", file=sys.stderr)
    print(f"webgpt2 page: {url}  (Ctrl-C to stop)", file=sys.stderr)
    if open_browser:
        webbrowser.open(url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webgpt2.web", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--open", action="store_true", help="open the page in a browser")
    parser.add_argument("--build-only", action="store_true", help="build web/wheels and exit")
    args = parser.parse_args(argv)
    if args.build_only:
        prepare()
    else:
        serve(args.host, args.port, args.open)
    return 0


if __name__ == "__main__":
    sys.exit(main())
