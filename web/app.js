// The demo page: wires the form to window.webgpt2 (web/api.js). No framework.

import { createClient } from "./api.js";

const webgpt2 = createClient();
window.webgpt2 = webgpt2;

const $ = (id) => document.getElementById(id);
const ui = {
  boot: $("boot-status"),
  backend: $("backend"),
  load: $("load"),
  cancelLoad: $("cancel-load"),
  modelInfo: $("model-info"),
  modelUrl: $("model-url"),
  modelFiles: $("model-files"),
  progress: $("progress"),
  progressBar: $("progress-bar"),
  progressLabel: $("progress-label"),
  prompt: $("prompt"),
  sampler: $("sampler"),
  temperature: $("temperature"),
  topK: $("top-k"),
  contrastiveK: $("contrastive-k"),
  topP: $("top-p"),
  maxNewTokens: $("max-new-tokens"),
  seed: $("seed"),
  alpha: $("penalty-alpha"),
  numBeams: $("num-beams"),
  samplerNote: $("sampler-note"),
  repetitionPenalty: $("repetition-penalty"),
  noRepeatNgramSize: $("no-repeat-ngram-size"),
  minNewTokens: $("min-new-tokens"),
  stopStrings: $("stop-strings"),
  generate: $("generate"),
  stop: $("stop"),
  outputPrompt: $("output-prompt"),
  outputText: $("output-text"),
  stats: $("stats"),
  announcer: $("announcer"),
  errors: { boot: $("boot-error"), load: $("load-error"), generate: $("generate-error") },
};

let ready = false;
let busy = false; // loading or generating
let generating = false;
let loadController = null; // the running load's AbortController
let loaded = null; // {key, info} of the model on the device; another key makes Generate load
let pendingKey = null; // the key of the form's own load while it runs
let readyStatus = null; // [text, kind] of the status line once started

function setStatus(text, kind = "busy") {
  ui.boot.textContent = text;
  ui.boot.className = `status ${kind}`;
}

// The page's label of each option, so that an error names the field the visitor sees.
const OPTION_FIELDS = {
  temperature: "temperature", k: "topK", p: "topP", alpha: "alpha", numBeams: "numBeams",
  maxNewTokens: "maxNewTokens", seed: "seed", repetitionPenalty: "repetitionPenalty",
  noRepeatNgramSize: "noRepeatNgramSize", minNewTokens: "minNewTokens",
  stopStrings: "stopStrings",
};

function fieldName(input) {
  const label = input.labels?.[0];
  return (label?.firstChild?.textContent || input.getAttribute("aria-label") || input.id).trim();
}

// An error naming a field: it is marked invalid (until edited) and named by its label.
function fieldError(input, message) {
  const error = new Error(`${fieldName(input)} ${message}`);
  error.field = input;
  return error;
}

// webgpt2's errors name the API's option ("numBeams is 0; ..."): say the field's label.
function withFieldName(error) {
  if (error.field) return error;
  const match = /^(\w+) (is |must |has )/.exec(error.message || "");
  const name = match?.[1];
  const key = name === "k" && ui.sampler.value === "contrastive" ? "contrastiveK" : OPTION_FIELDS[name];
  const input = key && ui[key];
  if (!input) return error;
  const renamed = new Error(`${fieldName(input)}${error.message.slice(match[1].length)}`);
  Object.assign(renamed, { name: error.name, detail: error.detail, field: input });
  return renamed;
}

function showError(error, title, where) {
  const panel = ui.errors[where];
  error = withFieldName(error);
  // The exception's type is for developers: it stays in the details, under the traceback.
  panel.querySelector(".error-title").textContent = title;
  panel.querySelector(".error-message").textContent = error.message || String(error);
  panel.querySelector(".error-detail").textContent = error.detail || error.stack
    || `${error.name}: ${error.message}`;
  panel.hidden = false;
  if (error.field) {
    error.field.setAttribute("aria-invalid", "true");
    error.field.focus();
  }
}

function clearErrors() {
  for (const panel of Object.values(ui.errors)) panel.hidden = true;
}

function megabytes(n) {
  return (n / 1e6).toFixed(n < 1e7 ? 2 : 1);
}

function showProgress({ phase, label, loaded: done, total }) {
  ui.progress.hidden = false;
  ui.progressBar.max = total || 1;
  ui.progressBar.value = total ? done : 0;
  const verb = phase === "upload" ? `Loading ${label} to ${ui.backend.value}`
    : phase === "cache" ? `Reading ${label} from the browser's cache` : `Downloading ${label}`;
  ui.progressLabel.textContent = total
    ? `${verb}: ${megabytes(done)} / ${megabytes(total)} MB`
    : `${verb}: ${megabytes(done)} MB`;
}

function refreshButtons() {
  ui.load.disabled = !ready || busy;
  ui.generate.disabled = !ready || busy;
  ui.backend.disabled = !ready || busy;
  ui.cancelLoad.hidden = loadController === null;
}

function selectedSource() {
  const kind = document.querySelector('input[name="source"]:checked').value;
  if (kind === "url") {
    const url = ui.modelUrl.value.trim();
    if (!url) throw new Error("enter the URL of a Hugging Face-style model folder");
    return { source: url, key: `url:${url}` };
  }
  if (kind === "files") {
    const files = Array.from(ui.modelFiles.files);
    if (!files.length) throw new Error("choose the model's files (config.json, model.safetensors, vocab.json, merges.txt)");
    return { source: files, key: `files:${files.map((f) => `${f.name}/${f.size}/${f.lastModified}`).join("|")}` };
  }
  return { source: "gpt2_shakespeare_en", key: "builtin:" };
}

// The automatic backend: webgpu on a hardware adapter; wasm when there is no adapter or only
// a software one (a fallback adapter, or SwiftShader, which runs WebGPU on the CPU and is
// many times slower than the wasm kernels). Returns {name, why}.
function automaticBackend(status, adapter) {
  const usable = (name) => status[name] === "available";
  const software = adapter && (adapter.isFallbackAdapter ||
    /swiftshader/i.test(`${adapter.description} ${adapter.architecture} ${adapter.vendor}`));
  if (usable("webgpu") && adapter && !software) {
    const name = adapter.description || adapter.vendor || "hardware";
    return { name: "webgpu", why: `the WebGPU adapter is a GPU (${name})` };
  }
  const gpu = !adapter ? "this browser gives no WebGPU adapter"
    : /swiftshader/i.test(`${adapter.description} ${adapter.architecture}`)
      ? "WebGPU here is SwiftShader, a software fallback" : "the WebGPU adapter is a software fallback";
  if (usable("wasm")) return { name: "wasm", why: `${gpu}: the CPU kernels are faster` };
  const other = ["webgpu", "cpu"].find(usable);
  return other ? { name: other, why: `the wasm backend does not start here` } : null;
}

function fillBackends(status, adapter) {
  ui.backend.replaceChildren();
  const first = ["webgpu", "wasm", "cpu"];
  const order = [...first, ...Object.keys(status).filter((n) => !first.includes(n))];
  for (const name of order) {
    if (!(name in status)) continue;
    const option = document.createElement("option");
    option.value = name;
    const available = status[name] === "available";
    // cpu can still become available: the worker fetches NumPy for it on demand.
    option.textContent = available ? name : `${name} (${name === "cpu" ? "needs NumPy" : "unavailable"})`;
    option.title = status[name];
    option.disabled = !available && name !== "cpu";
    ui.backend.append(option);
  }
  const chosen = automaticBackend(status, adapter);
  const firstUsable = [...ui.backend.options].find((o) => !o.disabled);
  if (chosen) ui.backend.value = chosen.name;
  else if (firstUsable) ui.backend.value = firstUsable.value;
  let note = document.getElementById("backend-choice");
  if (!note) {
    note = document.createElement("small");
    note.id = "backend-choice";
    (ui.backend.closest("label") || ui.backend).after(note);
  }
  note.textContent = chosen ? ` Automatic choice: ${chosen.name} (${chosen.why}).` : "";
  document.body.dataset.autoBackend = chosen ? chosen.name : "";
}

function describeModel(info) {
  return `Loaded: ${info.source} — ${info.layers} layers, ${info.hidden} wide, ` +
    `${(info.parameters / 1e6).toFixed(1)}M parameters, context ${info.maxSequenceLength}, ` +
    `on ${info.backend} (${info.device}), loaded in ${(info.loadMs / 1000).toFixed(1)} s`;
}

// After every load, through the form or the API: what is really loaded now.
function showModel({ model, changed }) {
  if (changed) loaded = { key: pendingKey, info: model };
  else if (!model) loaded = null;
  ui.modelInfo.textContent = model ? describeModel(model)
    : "No model loaded yet: Generate loads the chosen one.";
  if (readyStatus) setStatus(...readyStatus); // not a leftover "Loading NumPy…"
}

async function loadSelected() {
  const { source, key } = selectedSource();
  const backend = ui.backend.value;
  loadController = new AbortController();
  pendingKey = `${key}@${backend}`;
  refreshButtons();
  try {
    const info = await webgpt2.loadModel(source, {
      backend, onProgress: showProgress, signal: loadController.signal,
    });
    return info;
  } catch (error) {
    if (error.name === "AbortError") {
      ui.modelInfo.textContent = `Loading was cancelled. ${ui.modelInfo.textContent}`;
    }
    throw error;
  } finally {
    pendingKey = null;
    loadController = null;
    ui.progress.hidden = true;
    refreshButtons();
  }
}

async function withBusy(task, errorTitle, where) {
  clearErrors();
  busy = true;
  refreshButtons();
  try {
    return await task();
  } catch (error) {
    ui.progress.hidden = true;
    if (error.name !== "AbortError") showError(error, error.title || errorTitle, where);
    return null;
  } finally {
    busy = false;
    refreshButtons();
  }
}

// A number field's value; null when it is empty and optional (the option is off).
// A field that is not a number, or a required one left empty, is an error naming it.
function numberField(input, { required = true } = {}) {
  if (input.validity.badInput) throw fieldError(input, "is not a number");
  const value = input.value.trim();
  if (value === "") {
    if (required) throw fieldError(input, "is empty");
    return null;
  }
  return Number(value);
}

function numberOrNull(input) {
  return numberField(input, { required: false });
}

// The stop strings field: one per line or comma-separated, surrounding spaces trimmed;
// "\n", "\t", "\," and "\\" stand for a newline, a tab, a comma and a backslash.
export function parseStopStrings(field) {
  const escapes = { n: "\n", t: "\t", ",": ",", "\\": "\\" };
  const strings = [];
  let current = "";
  const flush = () => {
    const trimmed = current.replace(/^[ ]+|[ ]+$/g, "");
    if (trimmed) strings.push(trimmed);
    current = "";
  };
  for (let i = 0; i < field.length; i++) {
    const c = field[i];
    if (c === "\\" && i + 1 < field.length && field[i + 1] in escapes) {
      current += escapes[field[++i]];
    } else if (c === "," || c === "\n") {
      flush();
    } else {
      current += c;
    }
  }
  flush();
  return strings;
}

// The fields the chosen sampler uses: the rest are disabled and not sent.
function samplerOptions() {
  const sampler = ui.sampler.value;
  const used = (input) => !input.disabled && !input.closest("label").hidden;
  const value = (input) => (used(input) ? numberField(input) : null);
  return {
    sampler,
    temperature: value(ui.temperature),
    k: sampler === "contrastive" ? value(ui.contrastiveK) : value(ui.topK),
    p: value(ui.topP),
    alpha: value(ui.alpha),
    numBeams: value(ui.numBeams),
    maxNewTokens: numberField(ui.maxNewTokens),
    seed: used(ui.seed) ? numberOrNull(ui.seed) : null,
    repetitionPenalty: numberOrNull(ui.repetitionPenalty),
    noRepeatNgramSize: numberOrNull(ui.noRepeatNgramSize),
    minNewTokens: numberOrNull(ui.minNewTokens),
    stopStrings: parseStopStrings(ui.stopStrings.value),
  };
}

const SAMPLER_NOTES = {
  contrastive: "Contrastive search runs k candidates through the model at each step " +
    "(k times the work of greedy); a small k such as 4 to 8 is usual.",
  beam: "Beam search cannot stream: the text appears when the search finishes, and Stop " +
    "cannot end it early.",
};
const TEMPERATURE_SAMPLERS = ["random", "top_k", "top_p"];

// Disable (and dim) the fields the chosen sampler ignores, hide those only one sampler
// has, and say what is special about it. Temperature 0 is greedy, as in transformers.
function showSamplerFields() {
  const sampler = ui.sampler.value;
  const greedy = TEMPERATURE_SAMPLERS.includes(sampler) && ui.temperature.value.trim() !== ""
    && Number(ui.temperature.value) === 0;
  for (const label of document.querySelectorAll(".settings label[data-for]")) {
    const input = label.querySelector("input, select, textarea");
    const used = label.dataset.for.split(" ").includes(sampler)
      && (!greedy || input === ui.temperature);
    if (label.hasAttribute("data-only")) label.hidden = !used;
    label.classList.toggle("unused", !used);
    input.disabled = !used;
  }
  const note = greedy ? "Temperature 0 is greedy search (as in transformers): the most " +
    "likely token every step, so top-k, top-p and the seed do not apply." : SAMPLER_NOTES[sampler];
  ui.samplerNote.textContent = note || "";
  ui.samplerNote.hidden = !note;
}

const END_REASONS = {
  limit: "ended at the token limit",
  "end-of-text": "ended with end-of-text",
  "stop-string": "ended with a stop string",
  stopped: "stopped",
};

function formatStats(result) {
  const parts = [`backend ${result.backend ?? loaded?.info.backend}`];
  const t = result.timings;
  parts.push(`${t.generatedTokens} tokens`);
  parts.push(`first token ${t.timeToFirstTokenMs.toFixed(0)} ms`);
  if (result.streamed === false) parts.push(`${result.sampler} search, ${(t.totalMs / 1000).toFixed(1)} s, not streamed`);
  if (t.tokensPerSecond) parts.push(`${t.tokensPerSecond.toFixed(1)} tokens/s (${t.decodeMsPerToken.toFixed(1)} ms/token)`);
  parts.push(END_REASONS[result.endReason] || result.endReason);
  if (result.seed !== null && result.seed !== undefined) parts.push(`seed ${result.seed}`);
  return parts.join(" · ");
}

// The live region hears each completed line once, and the rest at the end.
function announcer() {
  let pending = "";
  return {
    add(text) {
      pending += text;
      const end = pending.lastIndexOf("\n");
      if (end >= 0) {
        const lines = pending.slice(0, end).trim();
        pending = pending.slice(end + 1);
        if (lines) ui.announcer.textContent = lines;
      }
    },
    finish(summary) {
      ui.announcer.textContent = `${pending.trim()} ${summary}`.trim();
      pending = "";
    },
  };
}

async function generate() {
  await withBusy(async () => {
    const options = samplerOptions(); // a bad field fails before anything is loaded
    // The prompt is echoed with the first text, so a prompt that fails shows no output.
    ui.outputPrompt.textContent = "";
    ui.outputText.textContent = "";
    ui.stats.textContent = "";
    const wanted = `${selectedSource().key}@${ui.backend.value}`;
    if (!loaded || loaded.key !== wanted) {
      try {
        await loadSelected();
      } catch (error) {
        error.title = "Loading the model failed";
        throw error;
      }
    }
    const prompt = ui.prompt.value;
    const streams = options.sampler !== "beam";
    let count = 0;
    let first = null; // [count, elapsedMs] at the first token, for the live rate
    const speech = announcer();
    const begin = () => {
      if (first === null) ui.outputPrompt.textContent = prompt;
    };
    ui.stats.textContent = streams ? "Generating…"
      : `beam search with ${options.numBeams} beams: the text appears when it finishes…`;
    ui.stop.disabled = !streams;
    generating = true;
    try {
      const result = await webgpt2.generate(prompt, {
        ...options,
        onToken: ({ text, tokenIds, elapsedMs }) => {
          begin();
          count += tokenIds.length;
          first ??= [count, elapsedMs];
          ui.outputText.textContent += text;
          speech.add(text);
          const seconds = (elapsedMs - first[1]) / 1000;
          const rate = seconds > 0 ? ` · ${((count - first[0]) / seconds).toFixed(1)} tokens/s` : "";
          ui.stats.textContent = `generating · ${count} tokens${rate}`;
        },
        onProgress: ({ loaded: step, total }) => {
          ui.stats.textContent = `beam search with ${options.numBeams} beams: token ${step}` +
            `${total ? ` of at most ${total}` : ""}…`;
        },
      });
      begin();
      ui.outputText.textContent = result.text;
      ui.stats.textContent = formatStats(result);
      speech.finish(`Generation ${END_REASONS[result.endReason] || "ended"}.`);
    } catch (error) {
      if (first === null) ui.stats.textContent = "";
      throw error;
    } finally {
      generating = false;
      ui.stop.disabled = true;
    }
  }, "Generation failed", "generate");
}

ui.load.addEventListener("click", () => withBusy(loadSelected, "Loading the model failed", "load"));
ui.cancelLoad.addEventListener("click", () => loadController?.abort());
ui.generate.addEventListener("click", generate);
ui.stop.addEventListener("click", () => webgpt2.stop());
ui.sampler.addEventListener("change", showSamplerFields);
ui.temperature.addEventListener("input", showSamplerFields);
showSamplerFields();
for (const panel of Object.values(ui.errors)) {
  panel.querySelector(".error-dismiss").addEventListener("click", () => { panel.hidden = true; });
}
document.addEventListener("input", (event) => event.target.removeAttribute?.("aria-invalid"));
const chooseSource = (kind) => { document.querySelector(`input[name="source"][value="${kind}"]`).checked = true; };
ui.modelUrl.addEventListener("input", () => chooseSource("url"));
ui.modelFiles.addEventListener("change", () => chooseSource("files"));
ui.modelUrl.addEventListener("keydown", (event) => {
  if (event.key !== "Enter") return;
  event.preventDefault();
  chooseSource("url");
  if (!ui.load.disabled) withBusy(loadSelected, "Loading the model failed", "load");
});
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !ui.generate.disabled) generate();
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (generating) webgpt2.stop();
  else loadController?.abort();
});

webgpt2.on("status", (text) => setStatus(text));
webgpt2.on("model", showModel);
refreshButtons();

// Why a backend cannot run, in plain words (the exception's own words are the option's
// tooltip in the backend picker).
function backendProblem(name, status) {
  const reason = status.replace(/^\w+(Error|Exception): /, "");
  if (name === "webgpu") {
    return /adapter|navigator\.gpu/.test(status) ? "this browser gives no WebGPU adapter"
      : `WebGPU does not start (${reason})`;
  }
  if (/numpy/i.test(status)) return `${name} needs NumPy, which could not be loaded yet`;
  return `${name} does not start (${reason})`;
}

webgpt2.ready.then(
  (info) => {
    ready = true;
    fillBackends(info.backends, info.adapter);
    const versions = `Python ${info.python} (Pyodide ${info.pyodide}), webgpt2 ${info.webgpt2}`;
    const usable = Object.keys(info.backends).filter((n) => info.backends[n] === "available");
    if (usable.length) {
      const gpu = usable.includes("webgpu") ? "WebGPU available"
        : backendProblem("webgpu", info.backends.webgpu);
      readyStatus = [`Ready — ${versions}; ${gpu}`, "ok"];
    } else {
      const pageBackends = ["webgpu", "wasm"].filter((n) => n in info.backends);
      const problems = pageBackends.map((n) => backendProblem(n, info.backends[n]));
      readyStatus = [`No backend can run a model here: ${problems.join(", and ")}. ` +
        `(${versions}.)`, "bad"];
    }
    setStatus(...readyStatus);
    document.body.dataset.ready = "true";
    refreshButtons();
  },
  (error) => {
    setStatus("webgpt2 could not start", "bad");
    showError(error, "Start-up failed", "boot");
  },
);
