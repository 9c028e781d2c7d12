"""`pip install .` (not editable) gives a working `webgpt2 serve` from any folder: a wheel is
built, installed into a fresh venv, and served from folders outside the repository; the page,
its worker, the wheel the worker installs (shaders and kernels.wasm inside) and Pyodide are
served, and the page becomes ready in Chromium when it can run here. Also the server's own
error handling: a bad --port is one line, an undecodable path is a 400."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from browser_util import ROOT, chromium, missing_requirements, open_page

from webgpt2.web import PYODIDE_VERSION, check_port, start_server

WHEEL_LIMIT = 12 * 1024 * 1024


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv (system site-packages for numpy) with webgpt2 installed from a wheel."""
    base = tmp_path_factory.mktemp("install")
    command = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w",
               str(base / "dist"), "--quiet"]
    try:
        import hatchling  # noqa: F401  (build without downloading the build backend)

        command.append("--no-build-isolation")
    except ImportError:
        pass
    subprocess.run(command, check=True, timeout=300)
    (wheel,) = (base / "dist").glob("webgpt2-*.whl")
    assert wheel.stat().st_size < WHEEL_LIMIT, f"{wheel.name} is {wheel.stat().st_size} bytes"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(base / "venv")],
                   check=True, timeout=120)
    python = base / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                    str(wheel)], check=True, timeout=300)
    return base, python, wheel


def environment(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(WEBGPT2_CACHE=str(base / "cache"), HOME=str(base / "home"))
    return env


def test_the_wheel_holds_the_page_and_the_installed_package_is_used(venv):
    base, python, wheel = venv
    names = set(zipfile.ZipFile(wheel).namelist())
    page = ["index.html"] + [f"web/{p.name}" for p in (ROOT / "web").iterdir()
                             if p.suffix in (".js", ".css") or p.name == "session.py"]
    missing = [name for name in page if f"webgpt2/page/{name}" not in names]
    assert not missing, f"add these to pyproject.toml's force-include: {missing}"
    assert "webgpt2/backends/wasm/kernels.wasm" in names
    assert any(n.startswith("webgpt2/shaders/") and n.endswith(".wgsl") for n in names)
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import webgpt2.web as w; print(w.page_root())"],
                           cwd=elsewhere, env=environment(base), capture_output=True,
                           text=True, timeout=60, check=True).stdout.strip()
    assert "site-packages" in where and where.endswith("webgpt2/page"), where


def serve(python: Path, cwd: Path, base: Path) -> tuple[subprocess.Popen, str, list[str]]:
    """Start `webgpt2 serve --port 0` in cwd; returns the process, its URL and its lines."""
    process = subprocess.Popen([str(python.parent / "webgpt2"), "serve", "--port", "0"],
                               cwd=cwd, env=environment(base), stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip())
        match = re.search(r"webgpt2 page: (http://\S+)", line)
        if match:
            # Keep reading: the server logs each request, and a full pipe would block it.
            threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
            return process, match.group(1), lines
    process.kill()
    raise AssertionError(f"webgpt2 serve did not start: {lines}")


@pytest.mark.slow
def test_installed_serve_works_from_any_folder(venv):
    base, python, _ = venv
    empty = base / "empty"
    empty.mkdir()
    process, url, lines = serve(python, empty, base)
    try:
        cdn = [line for line in lines if "Pyodide will come from the CDN" in line]
        assert len(cdn) == 1, lines
        for path in ("", "index.html", "web/app.js", "web/api.js", "web/worker.js",
                     "web/style.css", "web/session.py"):
            status, body = get(url + path)
            assert status == 200 and body, path
        assert get(url + "pyproject.toml")[0] == 404
        manifest = json.loads(get(url + "web/wheels/manifest.json")[1])
        assert manifest["pyodide"].startswith("https://")
        status, wheel = get(url + "web/wheels/" + manifest["webgpt2"])
        names = zipfile.ZipFile(io.BytesIO(wheel)).namelist()
        assert "webgpt2/backends/wasm/kernels.wasm" in names
        assert any(n.startswith("webgpt2/shaders/") for n in names)
        assert "webgpt2/__init__.py" in names and "webgpt2/io/hub.py" in names
    finally:
        process.terminate()
        process.wait(timeout=30)

    with_pyodide = base / "with-pyodide"
    (with_pyodide / "node_modules").mkdir(parents=True)
    if not (ROOT / "node_modules" / "pyodide" / "pyodide.mjs").is_file():
        pytest.skip("node_modules/pyodide is missing (npm ci): the offline page is not tested")
    os.symlink(ROOT / "node_modules" / "pyodide", with_pyodide / "node_modules" / "pyodide")
    process, url, lines = serve(python, with_pyodide, base)
    try:
        assert not [line for line in lines if "CDN" in line], lines
        manifest = json.loads(get(url + "web/wheels/manifest.json")[1])
        assert manifest["pyodide"] == f"pyodide/v{PYODIDE_VERSION}/"
        for name in ("pyodide.mjs", "pyodide.asm.wasm", "python_stdlib.zip"):
            status, body = get(f"{url}web/{manifest['pyodide']}{name}")
            assert status == 200 and body, name
        why = missing_requirements()
        if why:
            pytest.skip(f"the page is served; not opened in a browser: {why}")
        with chromium() as context:
            page = open_page(context, url)
            info = page.evaluate("webgpt2.ready")
            assert info, info
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_bad_port_is_one_line():
    with pytest.raises(ValueError, match="--port 70000 is out of range"):
        check_port(70000)
    result = subprocess.run([sys.executable, "-c", "import sys; from webgpt2.cli import main; "
                             "sys.exit(main(['serve', '--port', '70000']))"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "webgpt2: error: --port 70000 is out of range; expected 0 (any free port) to 65535"]


def test_undecodable_paths_are_answered_400():
    server = start_server("127.0.0.1", 0, root=ROOT)
    try:
        for path in ("/%00", "/web/%00.js", "/%ff", "/web/a%c3"):
            connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
            connection.request("GET", path)
            response = connection.getresponse()
            assert response.status == 400, path
            connection.close()
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        connection.request("HEAD", "/%00")
        assert connection.getresponse().status == 400
    finally:
        server.shutdown()
        server.server_close()
