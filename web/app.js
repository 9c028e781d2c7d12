// The demo page: wires the form to window.webgpt2 (web/api.js). No framework.

import { createClient } from "./api.js";

const webgpt2 = createClient();
window.webgpt2 = webgpt2;

const $ = (id) => document.getElementById(id);
const ui = {
  boot: $("boot-status"),
  backend: $("backend"),
  load: $("load"),
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
  errorPanel: $("error-panel"),
  errorTitle: $("error-title"),
  errorMessage: $("error-message"),
  errorDetail: $("error-detail"),
};

let ready = false;
let busy = false; // loading or generating
let loaded = null; // {key, info} of the model on the device; another key makes Generate load

function setStatus(text, kind = "busy") {
  ui.boot.textContent = text;
  ui.boot.className = `status ${kind}`;
}

function showError(error, title = "Something went wrong") {
  ui.errorTitle.textContent = `${title}: ${error.name || "Error"}`;
  ui.errorMessage.textContent = error.message || String(error);
  ui.errorDetail.textContent = error.detail || error.stack || "";
  ui.errorPanel.hidden = false;
}

function clearError() {
  ui.errorPanel.hidden = true;
}

function megabytes(n) {
  return (n / 1e6).toFixed(n < 1e7 ? 2 : 1);
}

function showProgress({ phase, label, loaded: done, total }) {
  ui.progress.hidden = false;
  ui.progressBar.max = total || 1;
  ui.progressBar.value = total ? done : 0;
  const verb = phase === "upload" ? `Loading ${label} to ${ui.backend.value}` : `Downloading ${label}`;
  ui.progressLabel.textContent = total
    ? `${verb}: ${megabytes(done)} / ${megabytes(total)} MB`
    : `${verb}: ${megabytes(done)} MB`;
}

function refreshButtons() {
  ui.load.disabled = !ready || busy;
  ui.generate.disabled = !ready || busy;
  ui.backend.disabled = !ready || busy;
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

function fillBackends(status) {
  ui.backend.replaceChildren();
  const order = ["webgpu", "wasm", ...Object.keys(status).filter((n) => n !== "webgpu" && n !== "wasm")];
  for (const name of order) {
    if (!(name in status)) continue;
    const option = document.createElement("option");
    option.value = name;
    const available = status[name] === "available";
    // wasm can still become available: the worker fetches NumPy for it on demand.
    option.textContent = available ? name : `${name} (${name === "wasm" ? "needs NumPy" : "unavailable"})`;
    option.title = status[name];
    option.disabled = !available && name !== "wasm";
    ui.backend.append(option);
  }
  const firstUsable = [...ui.backend.options].find((o) => !o.disabled);
  if (firstUsable) ui.backend.value = firstUsable.value;
}

async function loadSelected() {
  const { source, key } = selectedSource();
  const backend = ui.backend.value;
  ui.modelInfo.textContent = "";
  const info = await webgpt2.loadModel(source, { backend, onProgress: showProgress });
  loaded = { key: `${key}@${backend}`, info };
  ui.progress.hidden = true;
  ui.modelInfo.textContent = `${info.source} — ${info.layers} layers, ${info.hidden} wide, ` +
    `${(info.parameters / 1e6).toFixed(1)}M parameters, context ${info.maxSequenceLength}, ` +
    `on ${info.backend} (${info.device}), loaded in ${(info.loadMs / 1000).toFixed(1)} s`;
  return info;
}

async function withBusy(task, errorTitle) {
  clearError();
  busy = true;
  refreshButtons();
  try {
    return await task();
  } catch (error) {
    ui.progress.hidden = true;
    showError(error, errorTitle);
    return null;
  } finally {
    busy = false;
    refreshButtons();
  }
}

// A number field's value, or null when it is empty (the option is off).
function numberOrNull(input) {
  const value = input.value.trim();
  return value === "" ? null : Number(value);
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

function samplerOptions() {
  return {
    sampler: ui.sampler.value,
    temperature: Number(ui.temperature.value),
    k: Number(ui.topK.value),
    p: Number(ui.topP.value),
    alpha: Number(ui.alpha.value),
    numBeams: Number(ui.numBeams.value),
    maxNewTokens: Number(ui.maxNewTokens.value),
    seed: numberOrNull(ui.seed),
    repetitionPenalty: numberOrNull(ui.repetitionPenalty),
    noRepeatNgramSize: numberOrNull(ui.noRepeatNgramSize),
    minNewTokens: numberOrNull(ui.minNewTokens),
    stopStrings: parseStopStrings(ui.stopStrings.value),
  };
}

const SAMPLER_NOTES = {
  contrastive: "Contrastive search runs top-k candidates through the model at each step " +
    "(k times the work of greedy); a small top-k such as 4 to 8 is usual.",
  beam: "Beam search cannot stream: the text appears when the search finishes, and Stop " +
    "cannot end it early.",
};

// Dim the fields the chosen sampler ignores (hide those only one sampler has); say what
// is special about it.
function showSamplerFields() {
  const sampler = ui.sampler.value;
  for (const label of document.querySelectorAll(".settings label[data-for]")) {
    const used = label.dataset.for.split(" ").includes(sampler);
    if (label.hasAttribute("data-only")) label.hidden = !used;
    else label.classList.toggle("unused", !used);
  }
  ui.samplerNote.textContent = SAMPLER_NOTES[sampler] || "";
  ui.samplerNote.hidden = !SAMPLER_NOTES[sampler];
}

function formatStats(result, count, elapsedMs) {
  const parts = [`backend ${result?.backend ?? loaded?.info.backend}`];
  const t = result?.timings;
  if (t) {
    parts.push(`${t.generatedTokens} tokens`);
    parts.push(`first token ${t.timeToFirstTokenMs.toFixed(0)} ms`);
    if (result.streamed === false) parts.push(`${result.sampler} search, ${(t.totalMs / 1000).toFixed(1)} s, not streamed`);
    if (t.tokensPerSecond) parts.push(`${t.tokensPerSecond.toFixed(1)} tokens/s (${t.decodeMsPerToken.toFixed(1)} ms/token)`);
    if (result.stopped) parts.push("stopped");
  } else {
    parts.push(`${count} tokens`, `${(elapsedMs / 1000).toFixed(1)} s`);
  }
  return parts.join(" · ");
}

async function generate() {
  await withBusy(async () => {
    const wanted = `${selectedSource().key}@${ui.backend.value}`;
    if (!loaded || loaded.key !== wanted) await loadSelected();
    const prompt = ui.prompt.value;
    ui.outputPrompt.textContent = prompt;
    ui.outputText.textContent = "";
    ui.stats.textContent = "";
    const options = samplerOptions();
    const streams = options.sampler !== "beam";
    ui.stop.disabled = !streams;
    if (!streams) ui.stats.textContent = `beam search with ${options.numBeams} beams: the text appears when it finishes…`;
    let count = 0;
    try {
      const result = await webgpt2.generate(prompt, {
        ...options,
        onToken: ({ text, tokenIds, elapsedMs }) => {
          ui.outputText.textContent += text;
          count += tokenIds.length;
          ui.stats.textContent = formatStats(null, count, elapsedMs);
        },
      });
      ui.outputText.textContent = result.text;
      ui.stats.textContent = formatStats(result);
    } finally {
      ui.stop.disabled = true;
    }
  }, "Generation failed");
}

ui.load.addEventListener("click", () => withBusy(loadSelected, "Loading the model failed"));
ui.generate.addEventListener("click", generate);
ui.stop.addEventListener("click", () => webgpt2.stop());
ui.sampler.addEventListener("change", showSamplerFields);
showSamplerFields();
$("error-dismiss").addEventListener("click", clearError);
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !ui.generate.disabled) generate();
});

webgpt2.on("status", (text) => setStatus(text));
refreshButtons();
webgpt2.ready.then(
  (info) => {
    ready = true;
    fillBackends(info.backends);
    const gpu = info.backends.webgpu === "available" ? "WebGPU available" : `no WebGPU (${info.backends.webgpu})`;
    setStatus(`Ready — Python ${info.python} (Pyodide ${info.pyodide}), webgpt2 ${info.webgpt2}; ${gpu}`, "ok");
    document.body.dataset.ready = "true";
    refreshButtons();
  },
  (error) => {
    setStatus("webgpt2 could not start", "bad");
    showError(error, "Start-up failed");
  },
);
