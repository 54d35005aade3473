// The admin page: add scenes (several at a time, with labels), correct and remove them, run
// and follow the admin jobs. Plain JavaScript against the service's own API; the key the
// person enters is sent as X-API-Key and kept in local storage (shared with the search page);
// every write needs it, so the buttons that write wait for one.
// `$`, `api`, `element`, `dropZone` and `pager` come from common.js, loaded first.
"use strict";

const PAGE = 20;
const JOB_LINES = 8; // of a job's output shown: a STAC import's summary and its items' problems
const state = { files: [], labels: [], editing: null };
const scenePages = scenePager();

function say(id, text) {
  $(id).textContent = text || "";
  $(id).hidden = !text;
}

function labelBoxes(container, chosen, prefix) {
  container.replaceChildren();
  for (const name of state.labels) {
    const input = element("input", { type: "checkbox", value: name, id: `${prefix}-${name}` });
    input.checked = chosen.includes(name);
    container.append(element("label", { htmlFor: input.id }, [input, ` ${name}`]));
  }
}

function keyed() {
  return $("api-key").value.trim() !== "";
}

// The buttons that write (marked data-write) work only with a key: without one they are
// disabled and the key's note says why. Adding also waits for images.
function applyKey() {
  for (const button of document.querySelectorAll("[data-write]")) button.disabled = !keyed();
  $("add").disabled = !state.files.length || !keyed();
  $("key-note").hidden = keyed();
}

function ticked(container) {
  return [...container.querySelectorAll("input:checked")].map((input) => input.value);
}

async function checkReady() {
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    $("status").textContent = response.ok
      ? `ready: ${body.scenes} scenes, model ${body.model_version}`
      : `not ready: ${body.message}`;
    $("status").className = response.ok ? "status ready" : "status bad";
  } catch (err) {
    $("status").textContent = "not ready: the service cannot be reached";
    $("status").className = "status bad";
  }
}

async function loadLabels() {
  const body = await api("/labels");
  state.labels = body.labels.map((label) => label.name);
  labelBoxes($("add-labels"), [], "add");
}

function choose(files) {
  state.files = [...files];
  const names = state.files.map((file) => file.name).join(", ");
  $("chosen").textContent = state.files.length
    ? `${state.files.length} image${state.files.length > 1 ? "s" : ""} chosen: ${names}`
    : "";
  applyKey();
}

async function addScenes(event) {
  event.preventDefault();
  if (!state.files.length) return;
  const form = new FormData();
  const labels = ticked($("add-labels"));
  const folder = $("add-folder").value.trim() || "uploads";
  for (const file of state.files) form.append("file", file, file.name);
  // each scene is named after its file (the API's name rules: letters, digits, . _ -)
  const named = state.files.map((file) => ({
    name: file.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]/g, "_").replace(/^[._-]+/, "").slice(0, 200) || undefined,
    scene: folder,
    labels,
  }));
  form.append("scenes", JSON.stringify(named));
  say("add-message", "");
  $("add").disabled = true;
  try {
    const body = await api("/scenes", { method: "POST", body: form });
    for (const scene of body.scenes) {
      const link = element("a", { href: `/?scene=${scene.id}`, textContent: scene.image });
      const note = scene.duplicate ? " was already in the archive" : " added, searchable now";
      $("added").prepend(element("li", { className: "added-scene" }, [link, note]));
    }
    choose([]);
    $("files").value = "";
    await loadScenes();
    await checkReady();
  } catch (err) {
    say("add-message", `Not added: ${err.message}`);
    applyKey();
  }
}

async function loadScenes() {
  const params = new URLSearchParams({ limit: PAGE, order: "name" });
  const name = $("find-name").value.trim();
  if (name) params.set("q", name);
  let body;
  try {
    body = await api(`/scenes?${scenePages.query(params)}`);
    scenePages.seen(body);
  } catch (err) {
    say("jobs-message", err.message);
    return;
  }
  const rows = body.scenes.map((scene) => {
    const image = element("img", { src: scene.thumbnail_url, alt: scene.image, width: 48, height: 48 });
    const write = { type: "button", className: "button secondary small", disabled: !keyed() };
    const edit = element("button", { ...write, textContent: "Correct" });
    edit.addEventListener("click", () => openEditor(scene));
    const remove = element("button", { ...write, textContent: "Remove" });
    remove.setAttribute("aria-label", `Remove ${scene.image}`);
    for (const button of [edit, remove]) button.dataset.write = "";
    remove.addEventListener("click", () => removeScene(scene));
    const row = element("tr", {}, [
      element("td", {}, [image, " ", scene.image]),
      element("td", { textContent: scene.scene }),
      element("td", { className: "scene-labels", textContent: scene.labels.join(", ") || "none" }),
      element("td", {}, [edit, " ", remove]),
    ]);
    row.dataset.sceneId = scene.id;
    return row;
  });
  $("scenes").tBodies[0].replaceChildren(...rows);
  showScenePage({
    offset: body.offset, shown: body.scenes.length, total: body.total,
    first: scenePages.first, last: scenePages.last,
  });
}

function openEditor(scene) {
  state.editing = scene;
  $("editor-title").textContent = `Correct ${scene.image}`;
  $("edit-folder").value = scene.scene;
  labelBoxes($("edit-labels"), scene.labels, "edit");
  say("edit-message", "");
  $("editor").showModal();
}

async function saveEdit() {
  const scene = state.editing;
  try {
    await api(`/scenes/${scene.id}`, {
      method: "PATCH",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ labels: ticked($("edit-labels")), scene: $("edit-folder").value.trim() }),
    });
    $("editor").close();
    await loadScenes();
  } catch (err) {
    say("edit-message", `Not saved: ${err.message}`);
  }
}

async function removeScene(scene) {
  if (!window.confirm(`Remove ${scene.image} from the archive? Searches stop finding it at once.`)) return;
  try {
    await api(`/scenes/${scene.id}`, { method: "DELETE" });
    await loadScenes();
    await checkReady();
  } catch (err) {
    say("jobs-message", `Not removed: ${err.message}`);
  }
}

async function startJob(path, body) {
  say("jobs-message", "");
  try {
    await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
    await loadJobs();
  } catch (err) {
    say("jobs-message", err.message);
  }
}

async function loadJobs() {
  let jobs;
  try {
    jobs = await api("/admin/jobs?limit=20");
  } catch (err) {
    return; // without the admin key the jobs stay hidden; the message says so on a click
  }
  const items = jobs.map((job) => {
    const progress = element("progress", { max: 1, value: job.progress ?? 0 });
    progress.setAttribute("aria-label", `job ${job.id} progress`);
    const head = element("p", { className: "job-head" }, [
      element("strong", { textContent: `#${job.id} ${job.kind}` }),
      ` ${job.status}` + (job.attempts > 1 ? ` (attempt ${job.attempts})` : ""),
    ]);
    const parts = [head];
    if (job.status === "running") parts.push(progress);
    if (job.status === "queued" || job.status === "running") {
      const cancel = element("button", { type: "button", className: "button secondary small", textContent: "Cancel" });
      cancel.addEventListener("click", () => startJob(`/admin/jobs/${job.id}/cancel`));
      parts.push(cancel);
    }
    const tail = job.output.slice(-JOB_LINES).join("\n");
    if (tail) parts.push(element("pre", { className: "job-output", textContent: tail }));
    const item = element("li", { className: `job ${job.status}` }, parts);
    item.dataset.jobId = job.id;
    item.dataset.status = job.status;
    return item;
  });
  $("jobs").replaceChildren(...items);
}

const showScenePage = pager($("scenes-pager"), (step) => {
  if (step < 0) scenePages.back(); else scenePages.forward();
  loadScenes();
});

function wire() {
  $("files").addEventListener("change", () => choose($("files").files));
  dropZone($("drop"), $("files"), choose);
  $("add-form").addEventListener("submit", addScenes);
  $("find").addEventListener("submit", (event) => { event.preventDefault(); scenePages.restart(); loadScenes(); });
  $("find-name").addEventListener("input", loadScenes);  // a new selection: the first page
  $("edit-save").addEventListener("click", saveEdit);
  $("edit-cancel").addEventListener("click", () => $("editor").close());
  $("job-reindex").addEventListener("click", () => startJob("/admin/reindex", { incremental: true }));
  $("job-import").addEventListener("click", () => startJob("/admin/import"));
  $("stac-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { stac: $("stac-source").value.trim() };
    if ($("stac-asset").value.trim()) body.asset = $("stac-asset").value.trim();
    if ($("stac-max-cloud").value !== "") body.max_cloud = Number($("stac-max-cloud").value);
    startJob("/admin/import", body);
  });
  $("job-train").addEventListener("click", () => startJob("/admin/train"));
  $("job-rollback").addEventListener("click", () => startJob("/admin/rollback"));
  $("api-key").value = localStorage.getItem("grn-api-key") || "";
  $("api-key").addEventListener("input", applyKey);
  applyKey();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem("grn-api-key", $("api-key").value.trim());
    loadLabels().then(loadScenes).then(loadJobs).catch((err) => say("jobs-message", err.message));
  });
}

wire();
checkReady();
loadLabels().then(loadScenes).then(loadJobs).catch((err) => say("add-message", err.message));
setInterval(loadJobs, 2000);
setInterval(checkReady, 15000);
