// The web page: classify and search by an uploaded image or an archive scene. Plain
// JavaScript against the service's own API; no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  query: null, // {file} or {sceneId, name}
  offset: 0,
  archiveOffset: 0,
};

function headers(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  } catch (err) {
    throw new Error("The service cannot be reached. Is it running?");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.message ? body.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

function element(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

async function checkReady() {
  const status = $("status");
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    if (response.ok) {
      status.textContent = `ready: ${body.scenes} scenes`;
      status.className = "status ready";
      $("versions").textContent = `model ${body.model_version} · index ${body.index_version}`;
      return true;
    }
    status.textContent = `not ready: ${body.message}`;
  } catch (err) {
    status.textContent = "not ready: the service cannot be reached";
  }
  status.className = "status bad";
  return false;
}

async function loadLabelFilters() {
  try {
    const body = await api("/labels");
    const box = $("filters");
    box.replaceChildren();
    for (const label of body.labels) {
      const input = element("input", { type: "checkbox", value: label.name, name: "label" });
      input.addEventListener("change", () => { state.offset = 0; search(); });
      box.append(element("label", {}, [input, ` ${label.name} (${label.count})`]));
    }
  } catch (err) {
    showMessage(err.message);
  }
}

function chosenLabels() {
  return [...document.querySelectorAll("#filters input:checked")].map((i) => i.value);
}

function renderLabels(labels) {
  const list = $("labels");
  list.replaceChildren();
  const sorted = [...labels].sort((a, b) => b.probability - a.probability);
  for (const item of sorted) {
    const bar = element("div", { className: "bar" }, [element("span")]);
    bar.firstChild.style.width = `${Math.round(item.probability * 100)}%`;
    list.append(element("li", { className: item.present ? "present" : "" }, [
      element("span", { textContent: item.label }),
      bar,
      element("span", { textContent: item.probability.toFixed(2) }),
    ]));
  }
  $("labels-panel").hidden = false;
}

function card(scene, score) {
  const button = element("button", { className: "card", type: "button", title: scene.labels.join(", ") }, [
    element("img", { src: scene.thumbnail_url, alt: scene.image, loading: "lazy" }),
    element("div", { className: "name", textContent: scene.image }),
  ]);
  if (score !== undefined) {
    button.append(element("div", { className: "score", textContent: `score ${score.toFixed(3)}` }));
  }
  button.append(element("div", { className: "tags", textContent: scene.labels.join(", ") }));
  button.dataset.sceneId = String(scene.id);
  button.addEventListener("click", () => searchByScene(scene));
  return button;
}

function searchParams() {
  return {
    k: Number($("k").value),
    limit: Number($("limit").value),
    offset: state.offset,
    labels_all: chosenLabels(),
  };
}

async function search() {
  if (!state.query) return;
  const params = searchParams();
  let body;
  try {
    if (state.query.file) {
      const form = new FormData();
      form.append("file", state.query.file);
      for (const [key, value] of Object.entries(params)) {
        if (Array.isArray(value)) { if (value.length) form.append(key, value.join(",")); }
        else form.append(key, String(value));
      }
      body = await api("/search", { method: "POST", body: form });
    } else {
      body = await api("/search", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ scene_id: state.query.sceneId, ...params }),
      });
    }
  } catch (err) {
    showMessage(err.message);
    return;
  }
  showMessage("");
  const grid = $("results");
  grid.replaceChildren(...body.hits.map((hit) => card(hit, hit.score)));
  const first = body.total ? body.offset + 1 : 0;
  $("page-info").textContent = `${first}–${body.offset + body.hits.length} of ${body.total}`;
  $("prev").disabled = body.offset === 0;
  $("next").disabled = body.next_offset === null;
  $("results-title").textContent = body.total ? "Similar scenes" : "No scene matches these filters";
  $("results-panel").hidden = false;
}

async function classifyFile(file) {
  const form = new FormData();
  form.append("file", file);
  const body = await api("/classify", { method: "POST", body: form });
  renderLabels(body.labels);
}

async function useFile(file) {
  if (!file) return;
  state.query = { file };
  state.offset = 0;
  $("preview-image").src = URL.createObjectURL(file);
  $("preview-caption").textContent = file.name;
  $("preview").hidden = false;
  showMessage("");
  try {
    await classifyFile(file);
  } catch (err) {
    $("labels-panel").hidden = true;
    $("results-panel").hidden = true;
    showMessage(`${file.name}: ${err.message}`);
    return;
  }
  await search();
}

async function searchByScene(scene) {
  state.query = { sceneId: scene.id, name: scene.image };
  state.offset = 0;
  $("preview-image").src = scene.image_url.replace(/\/image$/, "/thumbnail");
  $("preview-caption").textContent = `archive scene ${scene.image} (${scene.labels.join(", ")})`;
  $("preview").hidden = false;
  showMessage("");
  try {
    // classify the archive image itself, so its predicted labels show as for an upload
    const image = await fetch(scene.image_url, { headers: headers() });
    if (image.ok) await classifyFile(new File([await image.blob()], scene.image));
  } catch (err) {
    showMessage(err.message);
  }
  await search();
  window.scrollTo({ top: 0, behavior: "smooth" });
}

async function loadArchive() {
  try {
    const body = await api(`/scenes?offset=${state.archiveOffset}&limit=24`);
    $("archive").replaceChildren(...body.scenes.map((scene) => card(scene)));
    $("archive-info").textContent = `${body.offset + 1}–${body.offset + body.scenes.length} of ${body.total}`;
    $("archive-prev").disabled = body.offset === 0;
    $("archive-next").disabled = body.next_offset === null;
    $("archive-panel").hidden = false;
  } catch (err) {
    showMessage(err.message);
  }
}

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => useFile(event.target.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    useFile(event.dataTransfer.files[0]);
  });
  $("browse").addEventListener("click", loadArchive);
  $("k").addEventListener("change", () => { state.offset = 0; search(); });
  $("limit").addEventListener("change", () => { state.offset = 0; search(); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - Number($("limit").value)); search(); });
  $("next").addEventListener("click", () => { state.offset += Number($("limit").value); search(); });
  $("archive-prev").addEventListener("click", () => { state.archiveOffset = Math.max(0, state.archiveOffset - 24); loadArchive(); });
  $("archive-next").addEventListener("click", () => { state.archiveOffset += 24; loadArchive(); });
  $("api-key").value = localStorage.getItem("grn-api-key") || "";
  $("api-key").addEventListener("change", () => {
    localStorage.setItem("grn-api-key", $("api-key").value.trim());
    loadLabelFilters();
  });
}

wire();
checkReady().then((ready) => { if (ready) loadLabelFilters(); });
setInterval(checkReady, 15000);
