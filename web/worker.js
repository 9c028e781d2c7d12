// The page's Python: Pyodide in a module worker, so the page never freezes while a model
// loads or generates. WebGPU is available here too (navigator.gpu in a dedicated worker).
//
// Messages in:  {id, type: "init", stopBuffer} | {id, type: "load", source, backend}
//               | {id, type: "generate", prompt, options} | {id, type: "backends"}
//               | {id, type: "model"} | {id, type: "clearCache"} | {id, type: "run", code}
//               | {type: "stop"}
//               | {type: "cancel", target} (the id of a load)
// Messages out: {id, type: "result", value} | {id, type: "error", error}
//               | {id, type: "progress", phase, label, loaded, total}
//               | {id, type: "text", text, tokenIds, elapsedMs} | {type: "status", text}

const here = new URL("./", import.meta.url);
let pyodide = null;
let session = null; // the Python module webgpt2_page (web/session.py)
let stopView = null; // Int32Array over the page's SharedArrayBuffer, when cross-origin isolated
let stopRequested = false;
let modelCount = 0;
let manifest = null; // web/wheels/manifest.json, written by `python -m webgpt2.web --build-only`
let queue = Promise.resolve(); // Python calls run one at a time
const cancelledLoads = new Set(); // ids of loads the page cancelled (by message)
// Downloaded model files, by URL: a second visit loads them without the network. Only
// complete files go in, and a load that fails takes its files out again.
const MODEL_CACHE = "webgpt2-models-v1";

function status(text) {
  self.postMessage({ type: "status", text });
}

// The hooks Python calls between tokens: was Stop pressed, and let the event loop run once.
const hooks = {
  get shared() {
    return stopView !== null;
  },
  stop_requested() {
    return stopView ? Atomics.load(stopView, 0) !== 0 : stopRequested;
  },
  tick() {
    return new Promise((resolve) => {
      const channel = new MessageChannel();
      channel.port1.onmessage = () => resolve();
      channel.port2.postMessage(null);
    });
  },
};

async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new Error(`cannot fetch ${what} from ${url}: ${error.message}`);
  }
  if (!response.ok) {
    throw new Error(`${what} was not found at ${url} (HTTP ${response.status})`);
  }
  return response;
}

async function boot(stopBuffer) {
  stopView = stopBuffer ? new Int32Array(stopBuffer) : null;
  status("Loading the page manifest");
  const manifestUrl = new URL("wheels/manifest.json", here);
  manifest = await (await fetchOk(manifestUrl, "the page's build manifest (run " +
    "`python -m webgpt2.web --build-only`)")).json();
  const indexURL = new URL(manifest.pyodide, here).href;
  status(`Loading Pyodide ${manifest.pyodideVersion}`);
  const local = !manifest.pyodide.startsWith("http");
  try {
    const { loadPyodide } = await import(indexURL + "pyodide.mjs");
    pyodide = await loadPyodide({
      indexURL,
      // A local runtime has no package wheels: NumPy for the cpu backend comes from the CDN.
      ...(local ? { packageBaseUrl: manifest.pyodideCdn } : {}),
      stdout: (line) => console.log(line),
      stderr: (line) => console.warn(line),
    });
  } catch (error) {
    const fix = local ? "run npm ci, then `python -m webgpt2.web --build-only`"
      : "offline or CDN unreachable: run npm ci, so that the page serves its own copy";
    const failure = new Error(`Pyodide could not be loaded from ${indexURL} (${fix})`);
    failure.detail = error.stack || String(error);
    throw failure;
  }
  status("Installing webgpt2");
  const sitePackages = pyodide.runPython("import site; site.getsitepackages()[0]");
  const wheel = await fetchOk(new URL("wheels/" + manifest.webgpt2, here), "webgpt2's wheel");
  pyodide.unpackArchive(await wheel.arrayBuffer(), "wheel", { extractDir: sitePackages });
  const code = await (await fetchOk(new URL("session.py", here), "web/session.py")).text();
  pyodide.FS.writeFile(`${sitePackages}/webgpt2_page.py`, code);
  status("Starting webgpt2");
  session = pyodide.pyimport("webgpt2_page");
  const info = await call("boot", hooks);
  return {
    ...info,
    pyodide: pyodide.version,
    webgpu: Boolean(self.navigator.gpu),
    adapter: await adapterInfo(),
    crossOriginIsolated: self.crossOriginIsolated,
    numpyWheels: manifest.packages,
    manifest,
  };
}

// Call a function of web/session.py through callPromising (JSPI: run_sync works inside).
async function call(name, ...args) {
  const fn = session[name];
  try {
    const reply = JSON.parse(await fn.callPromising(...args));
    if (reply && reply.error) {
      const error = new Error(reply.error.message);
      error.name = reply.error.type;
      error.detail = reply.error.detail;
      throw error;
    }
    return reply;
  } finally {
    fn.destroy();
  }
}

// The WebGPU adapter this browser gives (null when none), for the page's automatic choice
// of backend: a software adapter (SwiftShader) is slower than the wasm backend.
async function adapterInfo() {
  if (!self.navigator.gpu) return null;
  try {
    const adapter = await self.navigator.gpu.requestAdapter();
    if (!adapter) return null;
    const info = adapter.info || {};
    return {
      vendor: info.vendor || "", architecture: info.architecture || "",
      description: info.description || "", device: info.device || "",
      isFallbackAdapter: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
    };
  } catch {
    return null;
  }
}

// NumPy for the cpu backend: wheels shipped with the build, else Pyodide's CDN.
async function ensureNumpy() {
  if (pyodide.runPython("import importlib.util; importlib.util.find_spec('numpy') is not None")) {
    return;
  }
  const started = performance.now();
  status("Loading NumPy for the cpu backend");
  const errors = [];
  const names = manifest.packages.length
    ? manifest.packages.map((name) => new URL("wheels/" + name, here).href)
    : ["numpy"];
  await pyodide.loadPackage(names, { errorCallback: (message) => errors.push(message) });
  if (!pyodide.runPython("import importlib.util; importlib.util.find_spec('numpy') is not None")) {
    throw new Error("the cpu backend needs NumPy for Pyodide, which could not be loaded " +
      `(${errors.join("; ") || "no package found"}); build the page with ` +
      "WEBGPT2_PYODIDE_NUMPY naming a Pyodide NumPy wheel, or use a machine with internet");
  }
  console.log(`NumPy loaded in ${(performance.now() - started).toFixed(0)} ms`);
  await call("backends"); // the cpu backend failed without NumPy: try it again
}

// ---- checkpoint files into the Pyodide file system, with byte progress ----

function loadCancelled(id) {
  return cancelledLoads.has(id) || (stopView !== null && Atomics.load(stopView, 1) === id);
}

function cancelError() {
  const error = new Error("loading was cancelled");
  error.name = "AbortError";
  return error;
}

async function streamToFile(stream, path, label, total, id, phase = "download") {
  const file = pyodide.FS.open(path, "w");
  // Sizing the file once spares MEMFS from growing (and copying) it chunk by chunk.
  if (total) pyodide.FS.ftruncate(file.fd, total);
  let loaded = 0;
  let lastReport = 0;
  try {
    const reader = stream.getReader();
    for (;;) {
      if (loadCancelled(id)) {
        reader.cancel().catch(() => {});
        throw cancelError();
      }
      const { done, value } = await reader.read();
      if (done) break;
      pyodide.FS.write(file, value, 0, value.length);
      loaded += value.length;
      const now = performance.now();
      if (now - lastReport > 50) {
        lastReport = now;
        self.postMessage({ id, type: "progress", phase, label, loaded, total });
      }
    }
  } finally {
    pyodide.FS.close(file);
  }
  if (loaded < total) {
    throw new Error(`the download of ${label} was cut off: got ${loaded} of ${total} bytes`);
  }
  self.postMessage({ id, type: "progress", phase, label, loaded, total: loaded });
  return loaded;
}

async function openModelCache() {
  try {
    return self.caches ? await self.caches.open(MODEL_CACHE) : null;
  } catch {
    return null; // no Cache Storage (an insecure origin, a private window): no caching
  }
}

// load: {id, signal, cache, urls}; every URL read or stored is added to load.urls.
async function download(base, name, folder, load, { optional = false } = {}) {
  const { id, cache } = load;
  const url = `${base}/${name}`;
  const path = `${folder}/${name}`;
  const cached = cache ? await cache.match(url) : null;
  if (cached) {
    load.urls.push(url);
    await streamToFile(cached.body, path, name, Number(cached.headers.get("Content-Length")) || 0,
      id, "cache");
    return true;
  }
  if (loadCancelled(id)) throw cancelError();
  let response;
  try {
    response = await fetch(url, { signal: load.signal });
  } catch (error) {
    if (loadCancelled(id)) throw cancelError();
    throw new Error(`cannot reach ${url}: ${error.message} (is the URL right, and does the ` +
      "server allow cross-origin requests?)");
  }
  if (response.status === 404 && optional) return false;
  if (!response.ok) {
    throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`.trim());
  }
  const total = Number(response.headers.get("Content-Length")) || 0;
  let body = response.body;
  let stored = null;
  if (cache) {
    // One branch to the file, the other to the cache: a body that breaks off fails both.
    const [toFile, toCache] = body.tee();
    body = toFile;
    load.urls.push(url);
    const headers = total ? { "Content-Length": String(total) } : {};
    stored = cache.put(url, new Response(toCache, { headers }))
      .catch((error) => console.warn(`${url} was not cached: ${error.message}`));
  }
  try {
    await streamToFile(body, path, name, total, id);
  } catch (error) {
    if (loadCancelled(id)) throw cancelError();
    throw error;
  } finally {
    await stored;
  }
  return true;
}

function newFolder() {
  const folder = `/models/${++modelCount}`;
  pyodide.FS.mkdirTree(folder);
  return folder;
}

// Once a model is loaded its files are not needed (the weights are on the backend, in the
// WebAssembly heap or on the GPU, never in these JavaScript-side MEMFS buffers): free them.
function removeModelFolders() {
  if (!pyodide.FS.analyzePath("/models").exists) return;
  for (const name of pyodide.FS.readdir("/models")) {
    const folder = `/models/${name}`;
    if (name === "." || name === "..") continue;
    for (const file of pyodide.FS.readdir(folder)) {
      if (file !== "." && file !== "..") pyodide.FS.unlink(`${folder}/${file}`);
    }
    pyodide.FS.rmdir(folder);
  }
}

// A Hugging Face-style folder URL: config, weights (single or sharded), tokenizer files.
async function fetchFolder(url, load) {
  const base = url.replace(/\/+$/, "");
  const folder = newFolder();
  await download(base, "config.json", folder, load);
  if (!(await download(base, "model.safetensors", folder, load, { optional: true }))) {
    if (!(await download(base, "model.safetensors.index.json", folder, load, { optional: true }))) {
      throw new Error(`${base}/model.safetensors was not found (HTTP 404), nor a sharded ` +
        "model.safetensors.index.json; webgpt2 reads safetensors checkpoints only");
    }
    const index = JSON.parse(pyodide.FS.readFile(`${folder}/model.safetensors.index.json`,
      { encoding: "utf8" }));
    for (const shard of [...new Set(Object.values(index.weight_map || {}))]) {
      await download(base, shard, folder, load);
    }
  }
  const vocab = await download(base, "vocab.json", folder, load, { optional: true });
  const merges = await download(base, "merges.txt", folder, load, { optional: true });
  if (!(vocab && merges) && !(await download(base, "tokenizer.json", folder, load, { optional: true }))) {
    throw new Error(`${base} has neither vocab.json + merges.txt nor tokenizer.json`);
  }
  return folder;
}

async function copyFiles(files, id) {
  const names = files.map((f) => f.name);
  const missing = [];
  if (!names.includes("config.json")) missing.push("config.json");
  if (!names.some((n) => n.endsWith(".safetensors"))) missing.push("model.safetensors");
  if (!names.includes("tokenizer.json")) {
    missing.push(...["vocab.json", "merges.txt"].filter((n) => !names.includes(n)));
  }
  if (missing.length) {
    throw new Error(`the chosen files lack ${missing.join(", ")}; choose config.json, ` +
      "model.safetensors, vocab.json and merges.txt (or tokenizer.json) together");
  }
  const folder = newFolder();
  for (const file of files) {
    await streamToFile(file.stream(), `${folder}/${file.name}`, file.name, file.size, id);
  }
  return folder;
}

// ---- requests ----

const handlers = {
  async init({ stopBuffer }) {
    return boot(stopBuffer);
  },
  async backends() {
    return call("backends");
  },
  async model() {
    return call("model_info");
  },
  async clearCache() {
    return self.caches ? self.caches.delete(MODEL_CACHE) : false;
  },
  async load({ id, source, backend }) {
    const known = (await call("backends")).backends;
    if (!(backend in known)) {
      throw new Error(`Backend is "${backend}"; expected one of ${Object.keys(known).join(", ")}`);
    }
    if (backend === "cpu") await ensureNumpy();
    const controller = new AbortController();
    const cancelWatch = setInterval(() => {
      if (loadCancelled(id)) controller.abort();
    }, 50);
    const load = { id, signal: controller.signal, cache: null, urls: [] };
    let loaded = false;
    try {
      let request;
      if (typeof source === "string" && /^https?:\/\//.test(source)) {
        load.cache = await openModelCache();
        request = { folder: await fetchFolder(source, load), label: source };
      } else if (Array.isArray(source)) {
        request = { folder: await copyFiles(source, id), label: source.map((f) => f.name).join(", ") };
      } else if (typeof source === "string") {
        request = { preset: source };
      } else {
        throw new Error("loadModel takes a built-in model name, a folder URL or an array of files");
      }
      request.backend = backend;
      const progress = (phase, done, total) => {
        // Thrown into Python, which then keeps the model it had.
        if (loadCancelled(id)) throw cancelError();
        self.postMessage({ id, type: "progress", phase, label: "weights", loaded: done, total });
      };
      if (loadCancelled(id)) throw cancelError();
      const info = await call("load_model", JSON.stringify(request), progress);
      loaded = true;
      return info;
    } catch (error) {
      throw loadCancelled(id) ? cancelError() : error;
    } finally {
      const cancelled = loadCancelled(id);
      clearInterval(cancelWatch);
      cancelledLoads.delete(id);
      removeModelFolders();
      // A file that did not load may be what was wrong with it: fetch it afresh next time.
      // Cancelled loads keep theirs (each file in the cache is complete).
      if (!loaded && !cancelled && load.cache) {
        await Promise.all(load.urls.map((url) => load.cache.delete(url)));
      }
    }
  },
  async generate({ id, prompt, options }) {
    const onText = (text, tokenIds, elapsedMs) => {
      self.postMessage({ id, type: "text", text, tokenIds: JSON.parse(tokenIds), elapsedMs });
    };
    const onProgress = (step, total) => {
      self.postMessage({ id, type: "progress", phase: "search", label: "tokens", loaded: step, total });
    };
    return call("generate", prompt, JSON.stringify(options || {}), onText, onProgress);
  },
  async run({ code }) {
    const result = await pyodide.runPythonAsync(code);
    const value = result && typeof result.toJs === "function"
      ? result.toJs({ dict_converter: Object.fromEntries }) : result;
    if (result && typeof result.destroy === "function") result.destroy();
    return value;
  },
};

self.onmessage = (event) => {
  const message = event.data;
  if (message.type === "stop") {
    stopRequested = true;
    return;
  }
  if (message.type === "cancel") {
    cancelledLoads.add(message.target);
    return;
  }
  // Reset on arrival, not when the call runs: a stop sent after this message must count.
  // (The page resets the shared flag itself before it sends a generate.)
  if (message.type === "generate") stopRequested = false;
  const task = queue.then(() => handlers[message.type](message));
  queue = task.catch(() => {});
  const fail = (error) => self.postMessage({
    id: message.id,
    type: "error",
    error: { name: error.name || "Error", message: error.message || String(error), detail: error.detail || error.stack || "" },
  });
  task.then(
    (value) => {
      // A value the structured clone cannot copy (a Python object from runPython, say) makes
      // postMessage throw: answer with that error, or the page's promise would never settle.
      try {
        self.postMessage({ id: message.id, type: "result", value });
      } catch (error) {
        fail({ name: error.name, message: `the ${message.type} result cannot be sent to the page: ${error.message}` });
      }
    },
    fail,
  );
};
