// The web page: upload images, follow their jobs live (Server-Sent Events), compare before/after, download.
// No build step. One image is one job; several images (or a folder) are a batch.
"use strict";

const $ = (id) => document.getElementById(id);
const PREFER_WAIT_S = 1; // a quick job comes back finished with the upload's answer
const TERMINAL = new Set(["succeeded", "failed", "canceled", "aborted"]);
const IMAGE_TYPES = /\.(png|jpe?g|webp|bmp|tiff?|avif|heic|heif)$/i;
const HISTORY_KEY = "srgan-history";
const HISTORY_MAX = 50;
let current = null; // { url, file, stopped, abort }

function headers(extra = {}) {
  const key = $("api-key").value.trim();
  if (key) localStorage.setItem("srgan-api-key", key);
  return key ? { "X-API-Key": key, ...extra } : { ...extra };
}

function show(id, visible) { $(id).hidden = !visible; }

function newKey() {  // an Idempotency-Key; crypto.randomUUID exists only on https and localhost
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function showError(message) {
  $("error").textContent = message;
  show("error", true);
  show("cancel", false);
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error.message;
  } catch (_) { /* not JSON */ }
  return `the server answered ${response.status} ${response.statusText}`;
}

let offered = []; // the active versions of /v1/models, in the picker's order
let defaultModel = null; // the one a job naming no model runs

async function loadModels() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (!response.ok) { $("model-info").textContent = await errorMessage(response); return; }
    const models = (await response.json()).models;
    const active = models.find((m) => m.default) || models.find((m) => m.active);
    $("model-info").textContent = active
      ? `Model: ${active.name}${active.version ? ":" + active.version : ""}, ×${active.scale ?? "?"}`
      : "No model is offered.";
    offered = models.filter((m) => m.active);
    defaultModel = active;
    const picker = $("model");
    const picked = picker.value;  // a reload keeps the user's choice while it is still offered
    const keep = offered.some((m) => m.name === picked) ? picked : "";
    // auto sends no model: the default, or for another size the smallest model whose scale reaches it
    const auto = new Option(active ? `auto: ${active.name} (×${active.scale ?? "?"}), or the model for the size`
      : "auto", "", false, keep === "");
    picker.replaceChildren(auto, ...offered.map((m) => {
      const option = document.createElement("option");
      option.value = m.name;
      const knobs = [m.detail_base ? "detail" : "", m.denoise_base ? "denoise" : ""].filter(Boolean);
      option.textContent = `${m.name} (×${m.scale ?? "?"}${knobs.map((k) => ", " + k).join("")})`;
      option.selected = m.name === keep;
      return option;
    }));
    updateDetail();
  } catch (err) {
    $("model-info").textContent = `Cannot reach the server: ${err.message}`;
  }
}

function chosenModel() {
  return $("model").value ? offered.find((m) => m.name === $("model").value) : defaultModel;
}

function updateDetail() {
  const model = chosenModel();
  show("detail-row", Boolean(model && model.detail_base));
  $("detail-value").textContent = Number($("detail").value).toFixed(2);
  show("denoise-row", Boolean(model && model.denoise_base));
  $("denoise").disabled = $("denoise-auto").checked;
  $("denoise-value").textContent = $("denoise-auto").checked ? "auto" : Number($("denoise").value).toFixed(2);
}

// --- Server-Sent Events over fetch (EventSource cannot send the API key header) -----------------
// Yields {event, id, data}; a dropped connection is resumed with Last-Event-ID until the server ends it.
async function* events(url, state, resume = true) {
  let lastId = null;
  for (let attempt = 0; attempt < 5 && !state.stopped; attempt++) {
    const controller = new AbortController();
    state.abort = () => controller.abort();
    let response;
    try {
      const extra = resume && lastId !== null ? { "Last-Event-ID": lastId } : {};
      response = await fetch(url, { headers: headers(extra), signal: controller.signal });
    } catch (err) {
      if (state.stopped) return;
      await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
      continue;
    }
    if (!response.ok) throw new Error(await errorMessage(response));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { event: "message", id: null, data: [] };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return; // the server ended the stream: everything has been sent
        buffer += value;
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline).replace(/\r$/, "");
          buffer = buffer.slice(newline + 1);
          if (line === "") {
            if (event.data.length) {
              if (event.id !== null) lastId = event.id;
              yield { event: event.event, id: event.id, data: JSON.parse(event.data.join("\n")) };
            }
            event = { event: "message", id: null, data: [] };
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "data") event.data.push(text);
            else if (field === "event") event.event = text;
            else if (field === "id") event.id = text;
          }
        }
      }
    } catch (err) {
      if (state.stopped) return;
      await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
    }
  }
}

// The size control: a scale (1 to 8, fractional too) or a number of pixels for the side chosen.
function updateSize() {
  const by = $("size-by").value, input = $("size");
  input.hidden = !by;
  if (by === "scale") Object.assign(input, { max: 8, step: "any", placeholder: "1 to 8" });
  else Object.assign(input, { max: "", step: 1, placeholder: "pixels" });
  input.value = by === "scale" ? "2" : "";
  if (by && by !== "scale") input.focus();
}

// --- one image -----------------------------------------------------------------------------------
function formFor(files) {
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  for (const name of ["format", "model"]) if ($(name).value) form.append(name, $(name).value);
  if ($("size-by").value && $("size").value) form.append($("size-by").value, $("size").value);
  if (!$("detail-row").hidden) form.append("detail", $("detail").value);
  if (!$("denoise-row").hidden) form.append("denoise", $("denoise-auto").checked ? "auto" : $("denoise").value);
  if ($("quality").value && $("quality").value !== "95") form.append("quality", $("quality").value);
  return form;
}

function stopCurrent() {
  if (!current) return;
  current.stopped = true;
  if (current.abort) current.abort();
}

async function submit(files) {
  files = files.filter((f) => IMAGE_TYPES.test(f.name) || files.length === 1);
  if (!files.length) return showError("No images found in what was dropped.");
  stopCurrent();
  loadModels();  // the header names what is offered now, not what was offered when the page was loaded
  show("error", false); show("result", false); show("batch", false);
  if (files.length > 1) return submitBatch(files);
  const file = files[0];
  show("job", true); show("cancel", false);
  $("progress").value = 0;
  $("status").textContent = `Uploading ${file.name}…`;
  const state = { stopped: false, abort: null, file };
  current = state;
  let response;
  try {
    response = await fetch("/v1/jobs", {
      method: "POST", body: formFor([file]),
      headers: headers({ "Prefer": `wait=${PREFER_WAIT_S}`, "Idempotency-Key": newKey() }),
    });
  } catch (err) {
    show("job", false);
    return showError(`Upload failed: ${err.message}`);
  }
  if (!response.ok) { show("job", false); return showError(await errorMessage(response)); }
  let job = await response.json();
  remember(job.id, file.name, null);
  state.url = job.links.self;
  if (!TERMINAL.has(job.status)) {
    show("cancel", true);
    showProgress(job);
    try {
      for await (const { data } of events(job.links.events, state)) {
        if (state.stopped) return;
        showProgress(data);
      }
    } catch (err) {
      return showError(`Lost contact with the server: ${err.message}`);
    }
    if (state.stopped) return;
    const latest = await fetch(state.url, { headers: headers() });
    if (!latest.ok) return showError(await errorMessage(latest));
    job = await latest.json();
  }
  finish(state, job);
}

// "about 40 s left", "about 3 min left": the worker's estimate (eta_s), measured on this job's tiles
function timeLeft(etaS) {
  if (etaS === null || etaS === undefined) return "";
  if (etaS < 1) return "less than a second left";
  if (etaS < 90) return `about ${Math.round(etaS)} s left`;
  if (etaS < 5400) return `about ${Math.round(etaS / 60)} min left`;
  return `about ${(etaS / 3600).toFixed(1)} h left`;
}

function showProgress(job) {
  $("progress").value = job.progress;
  const pct = Math.round(job.progress * 100);
  const left = timeLeft(job.eta_s);
  $("status").textContent = job.status === "running" ? `Upscaling… ${pct}%${left ? ", " + left : ""}`
    : job.status === "queued" ? "Waiting for a worker…" : `Job ${job.status}.`;
}

function finish(state, job) {
  show("cancel", false);
  renderHistory();
  loadModels();  // a deploy or rollback since the page was loaded shows in the header
  showProgress(job);
  if (job.status === "succeeded") return showResult(job, state.file);
  if (job.status === "failed") return showError(`The job failed: ${job.error ? job.error.message : "unknown error"}`);
  if (job.status === "aborted") return showError(`The job was not started before its deadline.`);
}

async function showResult(job, file) {
  const response = await fetch(job.links.result, { headers: headers() });
  if (!response.ok) return showError(await errorMessage(response));
  const blob = await response.blob();
  const afterUrl = URL.createObjectURL(blob);
  const after = $("after");
  await new Promise((resolve, reject) => { after.onload = resolve; after.onerror = reject; after.src = afterUrl; });
  const drawn = await drawBefore(file, after.naturalWidth, after.naturalHeight);
  $("download").href = afterUrl;
  $("download").download = job.output.filename;
  const ran = job.model || {};
  const detail = ran.detail !== null && ran.detail !== undefined ? `, detail ${ran.detail.toFixed(2)}` : "";
  const denoise = ran.denoise ? `, denoise ${ran.denoise.value.toFixed(2)} (${ran.denoise.from})` : "";
  const resample = job.resample ? `, its ×${job.resample.model_scale} output resized (${job.resample.filter})` : "";
  $("result-info").textContent =
    `${job.input.width}×${job.input.height} → ${job.output.width}×${job.output.height}, ` +
    `${(blob.size / 1024).toFixed(0)} KiB, ${ran.name ?? "?"}${ran.version ? ":" + ran.version : ""}${detail}` +
    denoise + resample + (job.output.bit_depth === 16 ? ", 16 bits per channel" : "") +
    (drawn ? "" : " (this browser cannot show the original, so \"before\" is blank)");
  setSlider(50);
  setZoom(false);
  show("result", true);
  $("status").textContent = "Done.";
}

// The "before" is the original enlarged to the result's size with a smooth filter (not nearest-neighbour,
// which would make the result look better than it is).
async function drawBefore(file, width, height) {
  const canvas = $("before");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  if (!file) return true;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (_) {
    return false;  // e.g. HEIC, which the service reads and the browser does not
  }
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  return true;
}

function setSlider(value) {
  $("before-clip").style.clipPath = `inset(0 ${100 - value}% 0 0)`;
  $("divider").style.left = `${value}%`;
  $("slider").value = value;
  $("split").value = value;
}

// --- zoom to 100% and pan ----------------------------------------------------------------------------
function setZoom(on) {
  const viewport = $("viewport");
  viewport.classList.toggle("zoomed", on);
  $("zoom").setAttribute("aria-pressed", String(on));
  $("zoom").textContent = on ? "Fit to page" : "Zoom to 100%";
  show("zoom-hint", on);
  $("after").style.width = on ? `${$("after").naturalWidth}px` : "";
  if (on) {  // start at the middle of the picture
    viewport.scrollLeft = (viewport.scrollWidth - viewport.clientWidth) / 2;
    viewport.scrollTop = (viewport.scrollHeight - viewport.clientHeight) / 2;
  }
}

function enablePanning() {
  const viewport = $("viewport");
  let start = null;
  viewport.addEventListener("pointerdown", (e) => {
    if (!viewport.classList.contains("zoomed")) return;
    start = { x: e.clientX, y: e.clientY, left: viewport.scrollLeft, top: viewport.scrollTop };
    viewport.classList.add("panning");
    viewport.setPointerCapture(e.pointerId);
    e.preventDefault();
  });
  viewport.addEventListener("pointermove", (e) => {
    if (!start) return;
    viewport.scrollLeft = start.left - (e.clientX - start.x);
    viewport.scrollTop = start.top - (e.clientY - start.y);
  });
  viewport.addEventListener("dragstart", (e) => e.preventDefault());  // an <img> would start a drag-and-drop
  const end = () => { start = null; viewport.classList.remove("panning"); };
  viewport.addEventListener("pointerup", end);
  viewport.addEventListener("pointercancel", end);
}

async function cancel() {
  if (!current || !current.url) return;
  const response = await fetch(current.url, { method: "DELETE", headers: headers() });
  if (!response.ok) showError(await errorMessage(response));
}

// --- batches -------------------------------------------------------------------------------------------
async function submitBatch(files) {
  show("job", true); show("cancel", false);
  $("progress").value = 0;
  $("status").textContent = `Uploading ${files.length} images…`;
  const state = { stopped: false, abort: null, files };
  current = state;
  let response;
  try {
    response = await fetch("/v1/batches", {
      method: "POST", body: formFor(files), headers: headers({ "Idempotency-Key": newKey() }),
    });
  } catch (err) {
    show("job", false);
    return showError(`Upload failed: ${err.message}`);
  }
  if (!response.ok) { show("job", false); return showError(await errorMessage(response)); }
  const batch = await response.json();
  show("job", false);
  state.jobs = new Map();
  batch.jobs.forEach((job, i) => { remember(job.id, files[i].name, batch.id); });
  renderBatch(state, batch);
  show("batch", true);
  try {
    for await (const { event, data } of events(batch.links.events, state, false)) {
      if (state.stopped) return;
      if (event === "snapshot") renderBatch(state, data);
      else if (event === "job") updateRow(state, data.job_id, data);
    }
  } catch (err) {
    return showError(`Lost contact with the server: ${err.message}`);
  }
  renderHistory();
}

function renderBatch(state, batch) {
  state.batch = batch;
  const body = $("batch-list").tBodies[0];
  body.textContent = "";
  batch.jobs.forEach((job, i) => {
    const row = body.insertRow();
    row.dataset.job = job.id;
    row.insertCell().textContent = job.input ? job.input.filename : `file ${i + 1}`;
    row.insertCell().className = "status";
    const bar = document.createElement("progress");
    bar.max = 1;
    row.insertCell().append(bar);
    const view = document.createElement("button");
    view.type = "button";
    view.textContent = "View";
    view.hidden = true;
    view.addEventListener("click", async () => {
      const latest = await fetch(job.links.self, { headers: headers() });
      if (latest.ok) showResult(await latest.json(), state.files[i]);
    });
    row.insertCell().append(view);
    state.jobs.set(job.id, { index: i, progress: job.progress, status: job.status });
    updateRow(state, job.id, job);
  });
}

function updateRow(state, jobId, change) {
  const row = [...$("batch-list").tBodies[0].rows].find((r) => r.dataset.job === jobId);
  const entry = state.jobs.get(jobId);
  if (!row || !entry) return;
  entry.status = change.status;
  entry.progress = change.progress;
  const status = row.querySelector(".status");
  const left = change.status === "running" ? timeLeft(change.eta_s) : "";
  status.textContent = change.status === "failed" && change.error ? `failed: ${change.error.message}`
    : left ? `${change.status}, ${left}` : change.status;
  const ended = TERMINAL.has(change.status);
  row.classList.toggle("failed", ended && change.status !== "succeeded");
  const bar = row.querySelector("progress");
  bar.value = ended ? 1 : change.progress;
  bar.hidden = ended && change.status !== "succeeded";  // a full bar would read as done
  row.querySelector("button").hidden = change.status !== "succeeded";
  const all = [...state.jobs.values()];
  const done = all.filter((j) => TERMINAL.has(j.status));
  const overall = all.reduce((sum, j) => sum + (TERMINAL.has(j.status) ? 1 : j.progress), 0) / all.length;
  $("batch-progress").value = overall;
  const ok = all.filter((j) => j.status === "succeeded").length;
  $("batch-summary").textContent = `${done.length} of ${all.length} done` +
    (done.length - ok ? `, ${done.length - ok} failed` : "");
  $("archive").hidden = ok === 0;
  $("archive").dataset.url = state.batch.links.archive;
}

async function downloadArchive(e) {
  e.preventDefault();
  const response = await fetch($("archive").dataset.url, { headers: headers() });
  if (!response.ok) return showError(await errorMessage(response));
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = (response.headers.get("content-disposition") || "").match(/filename="([^"]+)"/)?.[1] || "batch.zip";
  document.body.append(link);
  link.click();
  link.remove();
}

// --- history of the jobs made from this browser -------------------------------------------------------
function history() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]"); } catch (_) { return []; }
}

function remember(id, name, batchId) {
  const list = [{ id, name, batch: batchId, at: Date.now() }, ...history().filter((h) => h.id !== id)];
  localStorage.setItem(HISTORY_KEY, JSON.stringify(list.slice(0, HISTORY_MAX)));
  renderHistory();
}

async function renderHistory() {
  const list = history();
  show("history-section", list.length > 0);
  const ul = $("history");
  ul.textContent = "";
  for (const entry of list) {
    const li = document.createElement("li");
    li.dataset.job = entry.id;
    li.textContent = `${entry.name} · ${new Date(entry.at).toLocaleString()} · `;
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = "…";
    li.append(status);
    ul.append(li);
  }
  await Promise.all(list.map(async (entry) => {
    const li = [...ul.children].find((el) => el.dataset.job === entry.id);
    const status = li.querySelector(".status");
    try {
      const response = await fetch(`/v1/jobs/${entry.id}`, { headers: headers() });
      if (response.status === 404) { status.textContent = "expired"; return; }
      if (!response.ok) { status.textContent = "?"; return; }
      const job = await response.json();
      status.textContent = job.status;
      li.classList.toggle("failed", job.status === "failed");
      if (job.status === "succeeded" && job.links.share) {
        const link = document.createElement("a");
        link.href = job.links.share;  // signed: works without the API key, until it expires
        link.textContent = " download";
        link.download = job.output.filename;
        li.append(link);
      }
    } catch (_) { status.textContent = "?"; }
  }));
}

// --- dropping a folder ---------------------------------------------------------------------------------
async function filesFromDrop(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return [...dataTransfer.files];
  const files = [];
  async function walk(entry) {
    if (entry.isFile) {
      files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
  }
  for (const entry of entries) await walk(entry);
  return files.sort((a, b) => a.name.localeCompare(b.name));
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = localStorage.getItem("srgan-api-key") || "";
  const drop = $("drop");
  drop.addEventListener("click", (e) => { if (e.target.tagName !== "LABEL") $("file").click(); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const files = await filesFromDrop(e.dataTransfer);
    if (files.length) submit(files);
  });
  $("file").addEventListener("change", () => { if ($("file").files.length) submit([...$("file").files]); });
  $("folder").addEventListener("change", () => { if ($("folder").files.length) submit([...$("folder").files]); });
  $("slider").addEventListener("input", () => setSlider(Number($("slider").value)));
  $("split").addEventListener("input", () => setSlider(Number($("split").value)));
  $("zoom").addEventListener("click", () => setZoom(!$("viewport").classList.contains("zoomed")));
  $("cancel").addEventListener("click", cancel);
  $("model").addEventListener("change", updateDetail);
  $("size-by").addEventListener("change", updateSize);
  $("detail").addEventListener("input", updateDetail);
  $("denoise").addEventListener("input", updateDetail);
  $("denoise-auto").addEventListener("change", updateDetail);
  $("archive").addEventListener("click", downloadArchive);
  $("clear-history").addEventListener("click", () => { localStorage.removeItem(HISTORY_KEY); renderHistory(); });
  enablePanning();
  loadModels();
  document.addEventListener("visibilitychange", () => { if (!document.hidden) loadModels(); });
  renderHistory();
});
