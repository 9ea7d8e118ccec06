// convserve page: plain JavaScript against the service's own HTTP API (docs/api.md).
// No framework and no build step; every picture is fetched with the API key header and
// shown from a blob: URL, which the page's Content-Security-Policy allows.
"use strict";

const KEY_STORAGE = "convserve.apiKey";
const $ = (id) => document.getElementById(id);

const state = {
  models: [],        // [{name, version}] every served version
  model: null,       // {name, version} chosen
  meta: null,        // /models/{name}?version= document
  images: [],        // [{file, url, card}] in the order picked
  current: null,     // the image "Look inside" works on
  keyWaiters: [],    // callers waiting for the user to type a key
};
let modelReady;
state.ready = new Promise((resolve) => { modelReady = resolve; });  // first model chosen

// ---- errors in plain words ------------------------------------------------------
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function plainWords(err, what) {
  const where = what ? `${what}: ` : "";
  if (!(err instanceof ApiError)) {
    return `${where}the server cannot be reached (${err.message}). Is it running?`;
  }
  switch (err.status) {
    case 400:
      return `${where}this file is not an image the server can read. (${err.message})`;
    case 401:
      return `${where}the API key is missing or wrong. Enter the key again.`;
    case 413:
      return `${where}too large for this server. (${err.message})`;
    case 415:
      return `${where}the server does not accept this kind of upload. (${err.message})`;
    case 503:
      if (err.code === "draining") {
        return `${where}the server is shutting down (draining) and takes no new work. ` +
          "Try again in a moment; another replica will answer.";
      }
      if (err.code === "starting") {
        return `${where}the server is still starting (warming up). Try again in a moment.`;
      }
      return `${where}the server is busy. Try again in a moment. (${err.message})`;
    case 504:
      return `${where}the server took too long to answer. (${err.message})`;
    default:
      return `${where}${err.message} (HTTP ${err.status})`;
  }
}

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = false;
}

function addError(text) {
  const el = $("error");
  el.textContent = el.hidden || !el.textContent ? text : `${el.textContent}\n${text}`;
  el.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// ---- the API key: asked once, kept in sessionStorage (this tab only) -------------
function askForKey(wrong) {
  $("key-why").textContent = wrong
    ? "The server refused the API key. Enter the right one; it is kept for this tab only."
    : "This server needs an API key. It is kept for this browser tab only.";
  $("key-form").hidden = false;
  $("key").focus();
  return new Promise((resolve) => state.keyWaiters.push(resolve));
}

function onKeySubmit(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("key").value = "";
  $("key-form").hidden = true;
  $("change-key").hidden = false;
  clearError();
  const waiters = state.keyWaiters.splice(0);
  waiters.forEach((resolve) => resolve());
}

// fetch with the key; a 401 asks for the key and tries again. Returns the Response.
async function api(path, options = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = new Headers(options.headers || {});
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...options, headers });
    if (response.ok) return response;
    let code = "error";
    let message = response.statusText;
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || String(body.error);
      }
    } catch (_) { /* not JSON */ }
    if (response.status === 401 && attempt < 5) {
      if (key) sessionStorage.removeItem(KEY_STORAGE);
      await askForKey(Boolean(key));
      continue;
    }
    throw new ApiError(response.status, code, message);
  }
}

async function apiJSON(path, options) {
  return (await api(path, options)).json();
}

async function apiBlobURL(path, options) {
  const blob = await (await api(path, options)).blob();
  return URL.createObjectURL(blob);
}

function setImage(img, url) {
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = url;
  img.src = url;
  img.hidden = false;
}

function modelQuery() {
  const m = state.model;
  return `model=${encodeURIComponent(m.name)}&version=${encodeURIComponent(m.version)}`;
}

function imageBody(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return { method: "POST", body: form };
}

// ---- models ---------------------------------------------------------------------
async function loadModels() {
  const doc = await apiJSON("/models");
  const select = $("model");
  select.textContent = "";
  state.models = [];
  for (const m of doc.models) {
    for (const version of m.versions.slice().reverse()) {
      const option = document.createElement("option");
      option.value = `${m.name}@${version}`;
      option.textContent = `${m.name} · version ${version}${version === m.version ? " (latest)" : ""}`;
      option.dataset.name = m.name;
      option.dataset.version = version;
      select.append(option);
      state.models.push({ name: m.name, version });
    }
  }
  const preferred = [...select.options].find(
    (o) => o.dataset.name === doc.default && o.textContent.includes("(latest)"));
  if (preferred) select.value = preferred.value;
  await chooseModel();
}

async function chooseModel() {
  const option = $("model").selectedOptions[0];
  if (!option) return;
  state.model = { name: option.dataset.name, version: option.dataset.version };
  const meta = await apiJSON(`/models/${encodeURIComponent(state.model.name)}?version=${encodeURIComponent(state.model.version)}`);
  state.meta = meta;
  $("model-hint").textContent = `${meta.classes.length} classes · ${meta.input.height}×${meta.input.width}×${meta.input.channels} · ${meta.provider}`;
  showFacts(meta);
  fillLayers(meta);
  fillLabels(meta);
  modelReady();
  loadPictures().catch((err) => addError(plainWords(err, "training pictures")));
  if (state.images.length) {
    await Promise.all(state.images.map(predict));
    if (state.current) await lookInside(state.current);
  }
}

function fact(dl, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  dl.append(dt, dd);
}

function showFacts(meta) {
  const dl = $("facts");
  dl.textContent = "";
  const p = meta.preprocessing;
  const steps = [];
  if (p.rescale) steps.push(`rescale × ${Number(p.rescale).toPrecision(4)}`);
  if (p.samplewise_center) steps.push("samplewise centre");
  if (p.samplewise_std_normalization) steps.push("samplewise std");
  if (p.featurewise_center) steps.push("featurewise centre");
  if (p.featurewise_std_normalization) steps.push("featurewise std");
  steps.push(`resize: ${p.interpolation}${p.keep_aspect_ratio ? ", keep aspect ratio" : ""}`);
  const metrics = meta.metrics || {};
  const pct = (v) => (v == null ? "–" : `${(100 * v).toFixed(2)} %`);
  fact(dl, "Model", `${meta.name} version ${meta.version} (of ${meta.versions.join(", ")})`);
  fact(dl, "Classes", meta.classes.join(", "));
  fact(dl, "Input", `${meta.input.height} × ${meta.input.width} × ${meta.input.channels} (${meta.input.color_mode})`);
  fact(dl, "Preprocessing", steps.join("; "));
  fact(dl, "Accuracy", `validation ${pct(metrics.val_accuracy)}, training ${pct(metrics.train_accuracy)}` +
    (metrics.epochs ? ` after ${metrics.epochs} epochs` : ""));
  fact(dl, "Parity", meta.parity == null ? "–"
    : `onnxruntime vs Keras: largest difference ${Number(meta.parity).toExponential(2)}`);
  fact(dl, "Layers", meta.feature_maps.map((f) => `${f.name} (${f.kind})`).join(", ") || "–");
  fact(dl, "Runs on", meta.provider);
  fact(dl, "Trained", meta.created);
}

function fillLayers(meta) {
  const select = $("layer");
  select.textContent = "";
  for (const f of meta.feature_maps) {
    const option = document.createElement("option");
    option.value = f.name;
    option.textContent = `${f.name} · ${f.kind} · ${f.shape.join("×")}`;
    option.dataset.hasFilters = f.has_filters ? "1" : "";
    select.append(option);
  }
}

function fillLabels(meta) {
  const select = $("explain-label");
  select.textContent = "";
  const top = document.createElement("option");
  top.value = "";
  top.textContent = "top label";
  select.append(top);
  for (const name of meta.classes) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.append(option);
  }
}

async function loadPictures() {
  const box = $("pictures");
  box.textContent = "";
  const m = state.model;
  const doc = await apiJSON(`/models/${encodeURIComponent(m.name)}/pictures?version=${encodeURIComponent(m.version)}`);
  if (!doc.pictures.length) {
    box.textContent = "This bundle has no training pictures.";
    return;
  }
  for (const picture of doc.pictures) {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = picture.name;
    const caption = document.createElement("figcaption");
    caption.textContent = picture.name;
    figure.append(img, caption);
    box.append(figure);
    setImage(img, await apiBlobURL(picture.url));
  }
}

// ---- images and predictions ----------------------------------------------------------
function addFiles(files) {
  clearError();
  const added = [];
  for (const file of files) {
    const item = { file, url: URL.createObjectURL(file), card: null };
    state.images.push(item);
    added.push(item);
    cardFor(item).querySelector(".answer").textContent = "…";  // in the order picked
  }
  $("status").textContent = `${added.length} image${added.length === 1 ? "" : "s"} sent…`;
  Promise.all(added.map(predict)).then((ok) => {
    const good = ok.filter(Boolean).length;
    $("status").textContent = `${good} of ${added.length} classified.`;
    const first = added.find((item, i) => ok[i]);
    if (first && !state.current) lookInside(first);
  });
}

function cardFor(item) {
  if (item.card) return item.card;
  const li = document.createElement("li");
  li.className = "card";
  const head = document.createElement("header");
  const thumb = document.createElement("img");
  thumb.src = item.url;
  thumb.alt = "";
  const text = document.createElement("div");
  const answer = document.createElement("div");
  answer.className = "answer";
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = item.file.name;
  text.append(answer, name);
  head.append(thumb, text);
  const bars = document.createElement("ol");
  bars.className = "topk";
  const inside = document.createElement("button");
  inside.type = "button";
  inside.textContent = "Look inside";
  inside.addEventListener("click", () => lookInside(item));
  li.append(head, bars, inside);
  $("predictions").append(li);
  item.card = li;
  return li;
}

async function predict(item) {
  let doc;
  try {
    await state.ready;
    doc = await apiJSON(`/predict?${modelQuery()}&top_k=${Math.min(5, state.meta.classes.length)}`, imageBody(item.file));
  } catch (err) {
    addError(plainWords(err, `“${item.file.name}”`));
    if (item.card) item.card.remove();
    state.images = state.images.filter((other) => other !== item);
    item.card = null;
    return false;
  }
  const prediction = doc.predictions[0];
  const card = cardFor(item);
  card.dataset.testid = "prediction";
  card.dataset.label = prediction.label;
  card.querySelector(".answer").textContent = prediction.label;
  const bars = card.querySelector(".topk");
  bars.textContent = "";
  for (const entry of prediction.top_k) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = entry.label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(100 * entry.probability).toFixed(1)}%`;  // CSSOM: allowed by the CSP
    track.append(fill);
    track.setAttribute("role", "img");
    track.setAttribute("aria-label", `${entry.label}: ${(100 * entry.probability).toFixed(1)} percent`);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(100 * entry.probability).toFixed(1)} %`;
    li.append(label, track, pct);
    bars.append(li);
  }
  return true;
}

// ---- inside the network -----------------------------------------------------------------
async function lookInside(item) {
  state.current = item;
  for (const other of state.images) other.card && other.card.classList.remove("current");
  if (item.card) item.card.classList.add("current");
  $("inside").hidden = false;
  $("current-name").textContent = item.file.name;
  $("heatmap").hidden = true;
  await showLayer();
}

async function showLayer() {
  const item = state.current;
  const layer = $("layer").value;
  if (!item || !layer) return;
  const option = $("layer").selectedOptions[0];
  const m = state.model;
  $("featuremap-caption").textContent = `loading ${layer}…`;
  try {
    const url = await apiBlobURL(`/featuremaps?${modelQuery()}&layer=${encodeURIComponent(layer)}&format=png`, imageBody(item.file));
    setImage($("featuremap"), url);
    $("featuremap-caption").textContent = `${layer}: one tile per channel (bright = strong activation)`;
  } catch (err) {
    $("featuremap-caption").textContent = "";
    addError(plainWords(err, `feature maps of ${layer}`));
  }
  if (option.dataset.hasFilters) {
    try {
      const url = await apiBlobURL(`/models/${encodeURIComponent(m.name)}/filters/${encodeURIComponent(layer)}.png?version=${encodeURIComponent(m.version)}`);
      setImage($("filters"), url);
      $("filters-caption").textContent = `${layer}: the learned filters (rows: filters, columns: input channels)`;
    } catch (err) {
      addError(plainWords(err, `filters of ${layer}`));
    }
  } else {
    $("filters").hidden = true;
    $("filters-caption").textContent = `${layer} has no learned filters (pooling only keeps the strongest values).`;
  }
}

async function showHeatmap() {
  const item = state.current;
  if (!item) return;
  const button = $("explain");
  const label = $("explain-label").value;
  button.disabled = true;
  button.textContent = "Working…";
  try {
    const fill = $("explain-fill").value;
    const extra = (label ? `&label=${encodeURIComponent(label)}` : "") + `&fill=${fill}`;
    const url = await apiBlobURL(`/explain?method=occlusion&format=png&${modelQuery()}${extra}`, imageBody(item.file));
    setImage($("heatmap"), url);
  } catch (err) {
    addError(plainWords(err, "heat map"));
  } finally {
    button.disabled = false;
    button.textContent = "Show heat map";
  }
}

// ---- wiring -----------------------------------------------------------------------------
function wire() {
  $("key-form").addEventListener("submit", onKeySubmit);
  $("change-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    askForKey(false).then(() => loadModels().catch((err) => showError(plainWords(err))));
  });
  $("model").addEventListener("change", () => {
    clearError();
    chooseModel().catch((err) => showError(plainWords(err, "model")));
  });
  $("files").addEventListener("change", (event) => {
    addFiles([...event.target.files]);
    event.target.value = "";  // picking the same file again fires change again
  });
  $("layer").addEventListener("change", () => showLayer());
  $("explain").addEventListener("click", () => showHeatmap());
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer && event.dataTransfer.files.length) addFiles([...event.dataTransfer.files]);
  });
  if (sessionStorage.getItem(KEY_STORAGE)) $("change-key").hidden = false;
  loadModels().catch((err) => showError(plainWords(err, "loading the models")));
}

document.addEventListener("DOMContentLoaded", wire);
