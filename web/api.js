// window.webgpt2: the page's JavaScript API over the Python worker (see web/README.md).
//
//   await webgpt2.ready;                                   // Pyodide and webgpt2 are up
//   await webgpt2.loadModel("gpt2_shakespeare_en", { backend: "webgpu" });
//   const { text, tokenIds, timings } = await webgpt2.generate("ROMEO:", {
//     maxNewTokens: 32, sampler: "top_k", k: 40, temperature: 0.8, seed: 1,
//     onToken: ({ text }) => console.log(text),
//   });
//   webgpt2.stop();                                        // ends a running generate()

export function createClient(workerUrl = new URL("./worker.js", import.meta.url)) {
  const worker = new Worker(workerUrl, { type: "module" });
  const pending = new Map(); // id -> { resolve, reject, onProgress, onText }
  const listeners = { status: new Set(), progress: new Set(), model: new Set() };
  let nextId = 1;
  let generating = null; // the id of the running generate(), if any

  // With cross-origin isolation (COOP/COEP headers) Stop is a shared flag that Python reads
  // between tokens even while it never yields; without it, a message the worker sees
  // whenever Python waits. Slot 0: stop the generation; slot 1: the id of a load to cancel.
  const stopBuffer = globalThis.crossOriginIsolated ? new SharedArrayBuffer(8) : null;
  const stopView = stopBuffer ? new Int32Array(stopBuffer) : null;

  function toError(error) {
    const result = new Error(error.message);
    result.name = error.name || "Error";
    result.detail = error.detail || "";
    return result;
  }

  worker.onmessage = (event) => {
    const message = event.data;
    if (message.type === "status") {
      for (const listener of listeners.status) listener(message.text);
      return;
    }
    const entry = pending.get(message.id);
    if (!entry) return;
    if (message.type === "progress") {
      entry.onProgress?.(message);
      for (const listener of listeners.progress) listener(message);
    } else if (message.type === "text") {
      entry.onText?.(message);
    } else {
      pending.delete(message.id);
      if (message.type === "result") entry.resolve(message.value);
      else entry.reject(toError(message.error));
    }
  };
  worker.onerror = (event) => {
    const error = new Error(`the webgpt2 worker failed: ${event.message || "unknown error"}`);
    for (const entry of pending.values()) entry.reject(error);
    pending.clear();
  };

  function request(type, payload = {}, handlers = {}) {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject, ...handlers });
      worker.postMessage({ id, type, ...payload });
    });
  }

  const ready = request("init", { stopBuffer });

  return {
    /** Resolves with {python, pyodide, webgpt2, webgpu, backends, crossOriginIsolated}. */
    ready,

    /**
     * Listen to "status" (boot messages), "progress" ({phase, label, loaded, total}) or
     * "model" ({model, changed}: what is loaded after each loadModel, whether it succeeded).
     */
    on(event, listener) {
      listeners[event].add(listener);
      return () => listeners[event].delete(listener);
    },

    /** Each backend and "available" or the reason it is not. */
    async backends() {
      await ready;
      return (await request("backends")).backends;
    },

    /**
     * Load a model: the built-in model's name ("gpt2_shakespeare_en"), the URL of a Hugging
     * Face-style folder, or File objects (config.json, model.safetensors, vocab.json,
     * merges.txt). Resolves with the model's description. Files fetched by URL are kept
     * in Cache Storage for the next visit. Aborting `signal` cancels the load; a load that
     * fails or is cancelled leaves the previous model loaded.
     */
    async loadModel(source, { backend = "webgpu", onProgress, signal } = {}) {
      await ready;
      if (source && typeof source !== "string") source = Array.from(source);
      signal?.throwIfAborted();
      const id = nextId;
      const cancel = () => {
        if (stopView) Atomics.store(stopView, 1, id);
        worker.postMessage({ type: "cancel", target: id });
      };
      signal?.addEventListener("abort", cancel);
      const announce = (model, changed) => {
        for (const listener of listeners.model) listener({ model, changed });
      };
      try {
        const info = await request("load", { source, backend }, { onProgress });
        announce(info, true);
        return info;
      } catch (error) {
        // A failed load leaves the previous model loaded: say which that is.
        const current = await request("model").catch(() => ({ model: null }));
        announce(current.model, false);
        throw error;
      } finally {
        signal?.removeEventListener("abort", cancel);
      }
    },

    /** The loaded model's description (as loadModel resolved with), or null. */
    async modelInfo() {
      await ready;
      return (await request("model")).model;
    },

    /** Forget the model files cached in the browser (Cache Storage); true if there were. */
    async clearCache() {
      await ready;
      return request("clearCache");
    },

    /**
     * Generate from prompt. options: maxNewTokens, sampler ("greedy", "random", "top_k",
     * "top_p", "contrastive", "beam"), temperature, k, p, seed, alpha (contrastive),
     * numBeams, lengthPenalty and earlyStopping (beam), repetitionPenalty,
     * noRepeatNgramSize, minNewTokens, stopStrings (a string or an array): GenerationConfig's
     * options (web/README.md). onToken({text, tokenIds, elapsedMs}) is called per token.
     * Beam search cannot stream: onToken is called once, at the end, and
     * onProgress({phase: "search", loaded, total}) follows its steps (token loaded of total).
     * Resolves with {text, tokenIds, timings, stopped, endReason, seed, streamed, sampler,
     * backend}.
     */
    async generate(prompt, { onToken, onProgress, ...options } = {}) {
      await ready;
      if (generating !== null) throw new Error("a generation is already running; stop it first");
      if (stopView) Atomics.store(stopView, 0, 0);
      const promise = request("generate", { prompt, options }, { onText: onToken, onProgress });
      generating = promise;
      try {
        return await promise;
      } finally {
        generating = null;
      }
    },

    /** Stop the running generation after its current token; generate() resolves, stopped. */
    stop() {
      if (generating === null) return false;
      if (stopView) Atomics.store(stopView, 0, 1);
      worker.postMessage({ type: "stop" });
      return true;
    },

    /** Run Python in the worker (debugging, tests); resolves with the last expression. */
    async runPython(code) {
      await ready;
      return request("run", { code });
    },
  };
}
