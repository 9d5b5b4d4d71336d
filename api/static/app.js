// The web page: upload an image, follow the job, compare before/after, download. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 300;
let current = null; // { url, beforeUrl, stopped }

function headers() {
  const key = $("api-key").value.trim();
  if (key) localStorage.setItem("srgan-api-key", key);
  return key ? { "X-API-Key": key } : {};
}

function show(id, visible) { $(id).hidden = !visible; }

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
    const picker = $("model");
    picker.replaceChildren(...offered.map((m) => {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = `${m.name} (×${m.scale ?? "?"}${m.detail_base ? ", detail" : ""})`;
      option.selected = active && m.name === active.name;
      return option;
    }));
    updateDetail();
  } catch (err) {
    $("model-info").textContent = `Cannot reach the server: ${err.message}`;
  }
}

function chosenModel() { return offered.find((m) => m.name === $("model").value); }

function updateDetail() {
  const model = chosenModel();
  show("detail-row", Boolean(model && model.detail_base));
  $("detail-value").textContent = Number($("detail").value).toFixed(2);
}

async function submit(file) {
  if (current) current.stopped = true;
  show("error", false); show("result", false); show("job", true); show("cancel", false);
  $("progress").value = 0;
  $("status").textContent = `Uploading ${file.name}…`;
  const form = new FormData();
  form.append("file", file, file.name);
  for (const name of ["scale", "format", "model"]) if ($(name).value) form.append(name, $(name).value);
  if (!$("detail-row").hidden) form.append("detail", $("detail").value);
  if ($("quality").value && $("quality").value !== "95") form.append("quality", $("quality").value);
  let response;
  try {
    response = await fetch("/v1/jobs", { method: "POST", body: form, headers: headers() });
  } catch (err) {
    show("job", false);
    return showError(`Upload failed: ${err.message}`);
  }
  if (!response.ok) { show("job", false); return showError(await errorMessage(response)); }
  const job = await response.json();
  current = { url: job.links.self, beforeUrl: URL.createObjectURL(file), stopped: false };
  show("cancel", true);
  follow(current);
}

async function follow(state) {
  while (!state.stopped) {
    let job;
    try {
      const response = await fetch(state.url, { headers: headers() });
      if (!response.ok) return showError(await errorMessage(response));
      job = await response.json();
    } catch (err) {
      return showError(`Lost contact with the server: ${err.message}`);
    }
    $("progress").value = job.progress;
    const pct = Math.round(job.progress * 100);
    $("status").textContent = job.status === "running" ? `Upscaling… ${pct}%`
      : job.status === "queued" ? "Waiting for a worker…" : `Job ${job.status}.`;
    if (job.status === "succeeded") return showResult(state, job);
    if (job.status === "failed") return showError(`The job failed: ${job.error ? job.error.message : "unknown error"}`);
    if (job.status === "canceled") { show("cancel", false); return; }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function showResult(state, job) {
  show("cancel", false);
  const response = await fetch(job.links.result, { headers: headers() });
  if (!response.ok) return showError(await errorMessage(response));
  const blob = await response.blob();
  const afterUrl = URL.createObjectURL(blob);
  $("after").src = afterUrl;
  $("before").src = state.beforeUrl;
  $("download").href = afterUrl;
  $("download").download = job.output.filename;
  const ran = job.model || {};
  const detail = ran.detail !== null && ran.detail !== undefined ? `, detail ${ran.detail.toFixed(2)}` : "";
  $("result-info").textContent =
    `${job.input.width}×${job.input.height} → ${job.output.width}×${job.output.height}, ` +
    `${(blob.size / 1024).toFixed(0)} KiB, ${ran.name ?? "?"}${ran.version ? ":" + ran.version : ""}${detail}`;
  setSlider(50);
  show("result", true);
  $("status").textContent = "Done.";
}

function setSlider(value) {
  $("before-clip").style.clipPath = `inset(0 ${100 - value}% 0 0)`;
  $("divider").style.left = `${value}%`;
  $("slider").value = value;
}

async function cancel() {
  if (!current) return;
  const response = await fetch(current.url, { method: "DELETE", headers: headers() });
  if (!response.ok) showError(await errorMessage(response));
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = localStorage.getItem("srgan-api-key") || "";
  const drop = $("drop");
  drop.addEventListener("click", (e) => { if (e.target.tagName !== "LABEL") $("file").click(); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) submit(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", () => { if ($("file").files.length) submit($("file").files[0]); });
  $("slider").addEventListener("input", () => setSlider(Number($("slider").value)));
  $("cancel").addEventListener("click", cancel);
  $("model").addEventListener("change", updateDetail);
  $("detail").addEventListener("input", updateDetail);
  loadModels();
});
