// The web page: classify and search by an uploaded image or an archive scene. Plain
// JavaScript against the service's own API; no build step.
//
// Scene ids are strings (63-bit integers do not survive JavaScript numbers). Each user
// action sends one request; a response that is not the newest one asked for is dropped, so
// the grid always shows the last query. The query, its filters and page live in the URL (an
// upload by the id uploads.js keeps it under). `$`, `headers`, `api`, `element`, `dropZone`
// and `pager` come from common.js, loaded first; feedback.js draws the relevance feedback,
// map.js the map.
"use strict";

const BROWSER_FORMATS = ["image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp"];
const state = {
  query: null, // {file, uploadId, previewUrl, labels}, {sceneId, name, previewUrl, labels} or {text, read, labels}
  offset: 0,
  last: null, // the last search response shown
  more: [], // relevance feedback: scenes ({id, image, thumbnail}) the results should be like
  less: [], // ... and should not be like
  latest: 0, // sequence number of the newest search asked for
  area: null, // [west, south, east, north]: only scenes whose footprint meets it
  archiveTotal: 0, // how many scenes the archive listing's selection holds
  archiveLatest: 0, // sequence number of the newest archive listing asked for
  asked: 0, // how many queries and filter changes were asked for: readUrl yields to a newer one
  region: null, // [x0, y0, x1, y1]: search by this box of the query image (regions.js)
  ranking: null, // concepts.js: {examples: true} or {concept: name} while the archive is ranked so
};

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
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

async function loadChoices() {
  try {
    const [labels, folders] = await Promise.all([api("/labels"), api("/folders"), loadConcepts()]);
    // each label twice: among those the scenes must carry, and among those they must not
    for (const [id, name, other] of [["filters", "label", "filters-none"], ["filters-none", "label-none", "filters"]]) {
      $(id).replaceChildren(...labels.labels.map((label) => {
        const input = element("input", { type: "checkbox", value: label.name, name });
        input.addEventListener("change", () => {
          const twin = $(other).querySelector(`input[value="${CSS.escape(label.name)}"]`);
          if (input.checked && twin) twin.checked = false; // a label cannot be wanted and not
          changed();
        });
        return element("label", {}, [input, ` ${label.name} (${label.count})`]);
      }));
    }
    for (const select of [$("folder"), $("archive-folder")]) {
      select.replaceChildren(element("option", { value: "", textContent: "any" }));
      for (const folder of folders.folders) {
        select.append(element("option", { value: folder.name, textContent: `${folder.name} (${folder.count})` }));
      }
    }
  } catch (err) {
    showMessage(err.message);
  }
}

function chosenLabels(box = "filters") {
  return [...document.querySelectorAll(`#${box} input:checked`)].map((i) => i.value);
}

function tickLabels(box, names) {
  for (const input of document.querySelectorAll(`#${box} input`)) input.checked = names.has(input.value);
}

function matchMode() {
  return document.querySelector("input[name=match]:checked").value;
}

// The filter a search and the archive listing share, in the API's field names (both parse
// them alike): ticked labels, scene folder, the area drawn, the days added, when acquired.
function filterFields() {
  const fields = {};
  const labels = chosenLabels();
  if (labels.length) fields[matchMode() === "any" ? "labels_any" : "labels_all"] = labels;
  if (chosenLabels("filters-none").length) fields.labels_none = chosenLabels("filters-none");
  if ($("folder").value) fields.scene = $("folder").value;
  if (state.area) fields.bbox = state.area;
  if ($("added-after").value) fields.added_after = $("added-after").value;
  if ($("added-before").value) fields.added_before = $("added-before").value;
  return { ...fields, ...acquiredFields(), ...conceptFields() };
}

function filtering() {
  return Object.keys(filterFields()).length > 0;
}

function renderLabels(labels) {
  const list = $("labels");
  list.replaceChildren();
  const sorted = [...labels].sort((a, b) => b.probability - a.probability);
  for (const item of sorted) {
    const bar = element("div", { className: "bar", role: "presentation" }, [element("span")]);
    bar.firstChild.style.width = `${Math.round(item.probability * 100)}%`;
    list.append(element("li", { className: item.present ? "present" : "" }, [
      element("span", { textContent: item.label }),
      bar,
      element("span", { textContent: item.probability.toFixed(2) }),
    ]));
  }
  const present = labels.filter((l) => l.present).map((l) => l.label);
  $("labels-summary").textContent = present.length ? present.join(", ") : "none above threshold";
  $("labels-panel").hidden = false;
}

// A hit's score as the answer's `score_kind` says: the similarity to the query, or for a
// query by labels how likely the classifier finds the scene meets them (near 1 for most
// typical scenes, so in percent with two decimals, never rounded up to a certain 100%).
function scoreText(score) {
  if (!state.last || state.last.score_kind !== "label_match") return `score ${score.toFixed(3)}`;
  const percent = (score * 100).toFixed(2);
  return `label match ${percent === "100.00" && score < 1 ? "> 99.99" : percent}%`;
}

function card(scene, score) {
  const button = element("button", { className: "card", type: "button", title: scene.labels.join(", ") }, [
    element("img", { src: scene.thumbnail_url, alt: scene.image, loading: "lazy", width: 128, height: 128 }),
    element("div", { className: "name", textContent: scene.image }),
  ]);
  if (score !== undefined) {
    button.append(element("div", { className: "score", textContent: scoreText(score) }));
  }
  const date = acquiredLine(scene);
  if (date) button.append(date);
  button.append(element("div", { className: "tags", textContent: scene.labels.join(", ") }));
  button.dataset.sceneId = String(scene.id);
  button.addEventListener("click", () => openViewer(scene, score));
  return button;
}

// --- the URL: query scene, filters, k and page ---------------------------------------

function writeUrl(replace) {
  const params = new URLSearchParams();
  if (state.query && state.query.sceneId) params.set("scene", state.query.sceneId);
  if (state.query && state.query.uploadId) params.set("upload", state.query.uploadId);
  if (state.query && state.query.text) params.set("text", state.query.text);
  if (regionFields().region) params.set("region", state.region.join(","));
  params.set("k", $("k").value);
  params.set("limit", $("limit").value);
  if (state.offset) params.set("offset", String(state.offset));
  const labels = chosenLabels();
  if (labels.length) params.set("labels", labels.join(","));
  if (chosenLabels("filters-none").length) params.set("without", chosenLabels("filters-none").join(","));
  if (matchMode() === "any") params.set("match", "any");
  if ($("folder").value) params.set("folder", $("folder").value);
  if ($("min-score").value !== "") params.set("min_score", $("min-score").value);
  if ($("added-after").value) params.set("added_after", $("added-after").value);
  if ($("added-before").value) params.set("added_before", $("added-before").value);
  writeAcquired(params);
  writeConcepts(params);
  if (state.more.length) params.set("more", state.more.map((s) => s.id).join(","));
  if (state.less.length) params.set("less", state.less.map((s) => s.id).join(","));
  if (state.area) params.set("area", state.area.map((v) => v.toFixed(6)).join(","));
  const url = `${location.pathname}?${params}`;
  if (url === `${location.pathname}${location.search}`) return;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
}

function setSelect(select, value) {
  if (value === null) return;
  if (![...select.options].some((o) => o.value === value || o.text === value)) {
    select.append(element("option", { value, textContent: value }));
  }
  select.value = value;
}

// Shows what the URL says. It waits on the service on its way; whatever the person asks for
// meanwhile (an upload right after the page opens, another filter) wins, and the URL then
// follows that instead of undoing it.
async function readUrl({ asked = state.asked } = {}) {
  const overtaken = () => state.asked !== asked;
  if (overtaken()) return;
  const params = new URLSearchParams(location.search);
  setSelect($("k"), params.get("k"));
  setSelect($("limit"), params.get("limit"));
  state.offset = Number(params.get("offset") || 0);
  const names = (key) => new Set((params.get(key) || "").split(",").filter(Boolean));
  tickLabels("filters", names("labels"));
  tickLabels("filters-none", names("without"));
  document.querySelector(`input[name=match][value=${params.get("match") === "any" ? "any" : "all"}]`).checked = true;
  $("folder").value = params.get("folder") || "";
  $("min-score").value = params.get("min_score") || "";
  $("added-after").value = params.get("added_after") || "";
  $("added-before").value = params.get("added_before") || "";
  readAcquired(params);
  readConcepts(params);
  const area = (params.get("area") || "").split(",").map(Number);
  setArea(area.length === 4 && area.every(Number.isFinite) ? area : null);
  const ids = (key) => (params.get(key) || "").split(",").filter((i) => /^[0-9]{1,19}$/.test(i));
  const [more, less] = await Promise.all([judgedScenes(ids("more")), judgedScenes(ids("less"))]);
  if (overtaken()) return;
  const again = {
    keepPage: true, fromUrl: true, feedback: { more, less }, region: readRegion(params.get("region")),
    ranking: params.get("rank") === "examples" ? { examples: true } : null,
  };
  const scene = params.get("scene");
  const text = params.get("text");
  const upload = params.get("upload");
  if (params.get("concept") && !scene && !text && !upload) return rankByConcept(params.get("concept"), again);
  if (text && !scene) {
    $("text").value = text;
    await useText(text, again);
    return;
  }
  if (upload && /^[0-9a-f]{16}$/.test(upload)) {
    const file = await keptUpload(upload);
    if (overtaken()) return;
    if (file) await useFile(file, { ...again, uploadId: upload });
    else forgetQuery("The image this link searched by was chosen in another browser, or is no longer kept in this one: choose it again.");
    return;
  }
  if (scene && /^[0-9]{1,19}$/.test(scene)) {
    try {
      const info = await api(`/scenes/${scene}`);
      if (overtaken()) return;
      await useScene(info, again);
    } catch (err) {
      showMessage(err.message);
    }
  } else if (!scene && state.query) {
    forgetQuery("");
  }
  if (!scene && byLabels()) await search({ fromUrl: true });
  else if (!scene && !state.query) {
    if (!$("results-panel").hidden) clearResults();
    if (filtering()) loadArchive(); // the archive's scenes that pass the URL's filters
  }
}

// No query any more (the URL names none, or one this browser cannot search by again): nothing
// of the last one stays on screen, and `message` says why where it is not plain.
function forgetQuery(message) {
  state.query = null;
  $("preview").hidden = true;
  $("understood").hidden = true;
  $("results-panel").hidden = true;
  $("labels-panel").hidden = true;
  showMessage(message);
}

// --- searching ------------------------------------------------------------------------

function searchParams() {
  const params = {
    k: Number($("k").value),
    limit: Number($("limit").value),
    offset: state.offset,
    ...filterFields(),
    ...regionFields(),
  };
  if ($("min-score").value !== "") params.min_score = Number($("min-score").value);
  if (chosenOrder()) params.order = chosenOrder();
  if (state.more.length) params.more_like = state.more.map((s) => s.id);
  if (state.less.length) params.less_like = state.less.map((s) => s.id);
  return params;
}

// POST /search's options for the query shown with `params`: the uploaded image as a form,
// else JSON with the query scene, or the phrase, or neither (the ticked labels' typical scenes).
function searchRequest(params) {
  if (state.query && state.query.file) {
    const form = new FormData();
    form.append("file", state.query.file);
    for (const [key, value] of Object.entries(params)) {
      form.append(key, Array.isArray(value) ? value.join(",") : String(value));
    }
    return { method: "POST", body: form };
  }
  return {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      ...(state.query && state.query.sceneId ? { scene_id: state.query.sceneId } : {}),
      ...(state.query && state.query.text ? { text: state.query.text } : {}),
      ...params,
    }),
  };
}

// What a text search was read as (POST /search's `understood`), as the CLI says it.
function showUnderstood(read) {
  const parts = [...read.labels_all];
  parts.push(...read.folders.map((folder) => `folder ${folder}`));
  if (read.labels_none.length) parts.push(`not ${read.labels_none.join(", ")}`);
  let line = `Understood: ${parts.join("; ") || "nothing"}`;
  if (read.words_not_understood.length) {
    line += ` — not understood: ${read.words_not_understood.join(", ")}`;
  }
  $("understood").textContent = line;
  $("understood").hidden = false;
}

function busy(on, text) {
  $("results").setAttribute("aria-busy", on ? "true" : "false");
  $("results").classList.toggle("loading", on);
  if (on) $("results-title").textContent = text || "Searching…";
}

function byLabels() {
  return !state.query && matchMode() === "all" && chosenLabels().length > 0;
}

async function search({ classify = false, fromUrl = false } = {}) {
  if (!state.query && !byLabels()) {
    if (filtering()) loadArchive();
    return;
  }
  const seq = ++state.latest;
  const params = { ...searchParams(), classify };
  $("results-panel").hidden = false;
  busy(true);
  let body;
  try {
    body = await api(...(state.ranking ? conceptCall(params) : ["/search", searchRequest(params)]));
  } catch (err) {
    if (seq !== state.latest) return; // a newer query has been asked for
    busy(false);
    $("results-title").textContent = "No results";
    $("results").replaceChildren();
    const file = state.query && state.query.file;
    showMessage(file && !err.message.startsWith(file.name) ? `${file.name}: ${err.message}` : err.message);
    if (classify) $("labels-panel").hidden = true;
    return;
  }
  if (seq !== state.latest) return;
  busy(false);
  showMessage("");
  if (body.labels) {
    renderLabels(body.labels);
    if (state.query && state.query.file) state.query.labels = body.predicted;
  } else if (classify) {
    $("labels-panel").hidden = true; // the archive does not carry the model's labels
  }
  if (body.understood) {
    state.query.labels = [...body.understood.labels_all, ...body.understood.folders];
    state.query.read = body.understood;
    showUnderstood(body.understood);
    tickReading(body.understood);
  }
  state.last = body;
  $("export-note").hidden = true; // it spoke of an earlier answer
  $("results-pager").hidden = false;
  drawHits(body.hits);
  const grid = $("results");
  grid.replaceChildren(...body.hits.map((hit) => card(hit, hit.score)));
  showResultPage({
    offset: body.offset, shown: body.hits.length, total: body.total,
    first: body.offset === 0, last: body.next_offset === null,
  });
  const typical = (labels) => `Scenes most typical of ${labels.join(" and ")}`;
  const title = state.ranking ? rankingTitle(body) : !state.query ? typical(chosenLabels())
    : state.query.text ? typical(state.query.labels) : "Similar scenes";
  const ordered = chosenOrder() ? `${title}, ${ORDER_TITLES[chosenOrder()]}` : title;
  $("results-title").textContent = body.total ? ordered : "No scene matches these filters";
  writeUrl(fromUrl);
}

// No query and no label to rank by: nothing of an earlier search stays on screen as if it
// still held (a search still on its way is dropped too).
function clearResults() {
  state.latest++;
  state.last = null;
  busy(false);
  $("results").replaceChildren();
  $("results-pager").hidden = true;
  $("results-title").textContent = "No search yet: tick labels (scenes with all of them) or give a query";
  drawHits([]);
}

// A phrase's reading goes into the filters, so that they show what is searched.
function tickReading(read) {
  tickLabels("filters", new Set([...chosenLabels(), ...read.labels_all]));
  tickLabels("filters-none", new Set([...chosenLabels("filters-none"), ...read.labels_none]));
  if (read.labels_all.length) document.querySelector("input[name=match][value=all]").checked = true;
  if (read.folders.length) setSelect($("folder"), read.folders[0]);
}

// Whether the filters still hold all a phrase was read as (`read`; null while it is being
// read): unticking one of its labels, or choosing "any" or another folder, leaves the phrase
// behind, and the search goes by the filters alone.
function readingHolds(read) {
  if (!read) return true;
  const all = new Set(chosenLabels());
  const none = new Set(chosenLabels("filters-none"));
  return matchMode() === "all" && read.labels_all.every((l) => all.has(l))
    && read.labels_none.every((l) => none.has(l)) && read.folders.every((f) => $("folder").value === f);
}

function changed() {
  state.asked++;
  state.offset = 0;
  if (state.query && state.query.text && !readingHolds(state.query.read)) {
    state.query = null;
    $("text").value = "";
    $("understood").hidden = true;
  }
  if (state.query || byLabels()) search();
  else if (!$("archive-panel").hidden || filtering()) loadArchive();
  if (!state.query && !byLabels()) {
    if (!$("results-panel").hidden) clearResults();
    writeUrl(false);
  }
}

// The query's image, shown once it has drawn: a file the browser cannot draw shows no
// broken-image icon, only its name (and the message saying what is wrong with it).
function showPreview(url) {
  $("preview-image").hidden = true;
  if (url) $("preview-image").src = url;
  else $("preview-image").removeAttribute("src");
}

function startQuery(caption, previewUrl, region = null, ranking = null) {
  state.asked++;
  setRegion(region); // regions.js: a new query is searched whole unless the URL names a box
  state.ranking = ranking; // concepts.js: a new query is searched, not ranked, unless the URL ranks
  showPreview(previewUrl);
  $("preview-caption").textContent = caption;
  $("preview").hidden = !previewUrl && !caption;
  $("understood").hidden = true;
  $("labels-panel").hidden = true;
  $("results").replaceChildren(); // nothing of the previous query stays on screen
  $("page-info").textContent = "";
  showMessage("");
}

async function previewUrlOf(file) {
  const displayable = BROWSER_FORMATS.includes(file.type) && !/\.tiff?$/i.test(file.name);
  if (displayable) return URL.createObjectURL(file);
  // TIFF, 16-bit, multi-band: the service renders what the browser cannot show
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await fetch("/preview?size=768", { method: "POST", body: form, headers: headers() });
    if (response.ok) return URL.createObjectURL(await response.blob());
  } catch (err) {
    // the search below reports what is wrong with the file
  }
  return "";
}

async function useFile(file, { keepPage = false, fromUrl = false, feedback = null, uploadId = null, region = null, ranking = null } = {}) {
  if (!file) return;
  state.query = { file, labels: [], uploadId };
  if (!keepPage) state.offset = 0;
  state.more = feedback ? feedback.more : [];
  state.less = feedback ? feedback.less : [];
  showFeedback();
  startQuery(file.name, "", region, ranking);
  const query = state.query;
  const [url, id] = await Promise.all([previewUrlOf(file), uploadId || keepUpload(file)]);
  if (state.query !== query) return; // another query was asked for meanwhile
  query.previewUrl = url;
  query.uploadId = id;
  showPreview(url);
  await search({ classify: true, fromUrl });
}

async function useText(text, { keepPage = false, fromUrl = false, feedback = null, ranking = null } = {}) {
  if (!fromUrl) { // a new phrase says what to find anew: the last one's labels are not kept
    tickLabels("filters", new Set());
    tickLabels("filters-none", new Set());
    $("folder").value = "";
  }
  state.query = { text, labels: [], previewUrl: "" };
  if (!keepPage) state.offset = 0;
  state.more = feedback ? feedback.more : [];
  state.less = feedback ? feedback.less : [];
  showFeedback();
  startQuery("", "", null, ranking);
  await search({ fromUrl });
}

async function useScene(scene, { keepPage = false, fromUrl = false, feedback = null, region = null, ranking = null } = {}) {
  const previewUrl = `/scenes/${scene.id}/preview?size=768`;
  state.query = { sceneId: String(scene.id), name: scene.image, previewUrl, labels: scene.labels };
  if (!keepPage) state.offset = 0;
  state.more = feedback ? feedback.more : [];
  state.less = feedback ? feedback.less : [];
  showFeedback();
  startQuery(`archive scene ${scene.image} (${scene.labels.join(", ")})`, previewUrl, region, ranking);
  await search({ classify: true, fromUrl });
}

// --- the viewer: the query and a result side by side ------------------------------------

function openViewer(scene, score) {
  const dialog = $("viewer");
  dialog.scene = scene;
  const fromArchive = score === undefined;
  $("viewer-title").textContent = fromArchive ? `Archive scene ${scene.image}` : `Query and ${scene.image}`;
  const full = `/scenes/${scene.id}/preview`;
  $("viewer-hit").src = `${full}?size=1024`;
  $("viewer-full").href = full;
  $("viewer-open").href = full;
  $("viewer-stac").href = `/scenes/${scene.id}/stac`;
  $("viewer-hit-caption").textContent = `${scene.image} · ${scene.scene}` + (fromArchive ? "" : ` · ${scoreText(score)}`);
  const query = state.query && !fromArchive ? state.query : null;
  $("viewer-more").hidden = !query;
  $("viewer-less").hidden = !query;
  $("viewer-query").parentElement.hidden = !query || !query.previewUrl;
  const queryLabels = new Set(query ? query.labels || [] : []);
  const hitLabels = new Set(scene.labels);
  if (query) {
    $("viewer-query").src = query.previewUrl || "";
    $("viewer-query-caption").textContent = query.file
      ? `query: ${query.file.name} (predicted labels)`
      : query.text ? `query: "${query.text}"` : `query: archive scene ${query.name}`;
    if (state.region) $("viewer-query-caption").textContent += `, the box ${state.region.join(",")} of it`;
  }
  const list = (items, empty = "none") => items.length ? items.join(", ") : empty;
  $("viewer-shared").textContent = list([...hitLabels].filter((l) => queryLabels.has(l)), "no label in common");
  $("viewer-query-only").textContent = list([...queryLabels].filter((l) => !hitLabels.has(l)));
  $("viewer-hit-only").textContent = list([...hitLabels].filter((l) => !queryLabels.has(l)));
  for (const id of ["viewer-shared", "viewer-query-only"]) $(id).parentElement.hidden = false;
  document.querySelector(".compare").hidden = !query;
  showSamePlace(scene); // sameplace.js: the strip fills in when its answer comes
  resetMatch(query); // regions.js: the match map is drawn when asked for
  dialog.showModal();
  $("viewer-search").focus();
}

// --- the archive browser ------------------------------------------------------------------

const archivePages = scenePager();

// The archive listing's selection (GET /scenes and /scenes/export): the name searched, the
// folder chosen and the page's filters, by name.
function archiveParams() {
  const params = new URLSearchParams({ order: chosenOrder() || "name" });
  if ($("archive-name").value.trim()) params.set("q", $("archive-name").value.trim());
  const fields = filterFields();
  if ($("archive-folder").value) fields.scene = $("archive-folder").value;
  for (const [key, value] of Object.entries(fields)) params.set(key, [value].flat().join(","));
  return params;
}

async function loadArchive() {
  const params = archiveParams();
  params.set("limit", "24");
  const seq = ++state.archiveLatest;
  try {
    const body = await api(`/scenes?${archivePages.query(params)}`);
    if (seq !== state.archiveLatest) return; // a newer listing has been asked for
    archivePages.seen(body);
    state.archiveTotal = body.total;
    $("archive").replaceChildren(...body.scenes.map((scene) => card(scene)));
    showArchivePage({
      offset: body.offset, shown: body.scenes.length, total: body.total,
      first: archivePages.first, last: archivePages.last,
    });
    $("archive-panel").hidden = false;
  } catch (err) {
    showMessage(err.message);
  }
}

// --- keyboard: arrow keys between result cards ------------------------------------------

function moveFocus(grid, event) {
  const cards = [...grid.querySelectorAll(".card")];
  const index = cards.indexOf(document.activeElement);
  if (index < 0) return;
  const columns = cards.filter((c) => c.offsetTop === cards[0].offsetTop).length || 1;
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns }[event.key];
  if (step === undefined) return;
  event.preventDefault();
  const next = cards[Math.min(cards.length - 1, Math.max(0, index + step))];
  next.focus();
}

// Focus on the results: the first result, or the results' heading region while there are
// none (or, before any search, the query's drop zone). Scrolls them into view.
function focusResults() {
  const panel = $("results-panel");
  const target = panel.hidden ? $("drop") : panel.querySelector("#results .card") || panel;
  const box = target.getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight) (panel.hidden ? target : panel).scrollIntoView({ block: "start" });
  target.focus({ preventScroll: true });
}

// Runs `searching` (a search, or what starts one) and then focuses the results, unless a
// newer search was asked for meanwhile. The query's preview may still be loading: it changes
// the height above the results when it shows, so the scroll waits for it (3 s at most).
async function thenFocusResults(searching) {
  const seq = state.latest + 1;
  await searching();
  await loaded($("preview-image"), 3000);
  if (seq === state.latest) focusResults();
}

function loaded(image, ms) {
  if (!image.getAttribute("src") || image.complete) return Promise.resolve();
  return new Promise((done) => {
    image.addEventListener("load", done, { once: true });
    image.addEventListener("error", done, { once: true });
    setTimeout(done, ms);
  });
}

const showResultPage = pager($("results-pager"), (step) => {
  state.offset = Math.max(0, state.offset + step * Number($("limit").value));
  thenFocusResults(search); // the new page from its top, not the pager's place
});
const showArchivePage = pager($("archive-pager"), (step) => {
  if (step < 0) archivePages.back(); else archivePages.forward();
  loadArchive();
});

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => useFile(event.target.files[0]));
  // the chooser opens on key release (dropZone): Space must not scroll the page meanwhile
  drop.addEventListener("keydown", (event) => {
    if (event.target === drop && event.key === " ") event.preventDefault(); // no scrolling
  });
  dropZone(drop, $("file"), (files) => useFile(files[0]));
  $("browse").addEventListener("click", () => { archivePages.restart(); loadArchive(); });
  $("text-search").addEventListener("submit", (event) => {
    event.preventDefault();
    if ($("text").value.trim()) useText($("text").value.trim());
  });
  for (const id of ["k", "limit", "folder", "min-score", "added-after", "added-before"]) $(id).addEventListener("change", changed);
  wireAcquired(changed);
  for (const radio of document.querySelectorAll("input[name=match]")) radio.addEventListener("change", changed);
  $("controls").addEventListener("submit", (event) => event.preventDefault());
  $("archive-search").addEventListener("submit", (event) => { event.preventDefault(); archivePages.restart(); loadArchive(); });
  $("archive-name").addEventListener("input", loadArchive);  // a new selection: the first page
  $("archive-folder").addEventListener("change", loadArchive);
  $("skip").addEventListener("click", (event) => { event.preventDefault(); focusResults(); });
  $("preview-image").addEventListener("load", () => { $("preview-image").hidden = false; });
  $("results").addEventListener("keydown", (event) => moveFocus($("results"), event));
  $("archive").addEventListener("keydown", (event) => moveFocus($("archive"), event));
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer-search").addEventListener("click", () => {
    $("viewer").close();
    thenFocusResults(() => useScene($("viewer").scene));
  });
  $("viewer-more").addEventListener("click", () => { $("viewer").close(); giveFeedback($("viewer").scene, true); });
  $("viewer-less").addEventListener("click", () => { $("viewer").close(); giveFeedback($("viewer").scene, false); });
  $("feedback-clear").addEventListener("click", () => {
    state.more = [];
    state.less = [];
    state.offset = 0;
    showFeedback();
    search();
  });
  for (const format of ["csv", "geojson", "json"]) {
    $(`export-${format}`).addEventListener("click", () => exportSearch(format));
  }
  for (const format of ["csv", "geojson", "geoparquet"]) {
    $(`archive-export-${format}`).addEventListener("click", () => exportArchive(format));
  }
  $("map-draw").addEventListener("click", () => startDrawing(!mapView.drawing));
  $("map-where").addEventListener("click", () => showDensity($("map-where").getAttribute("aria-pressed") !== "true"));
  $("map-clear").addEventListener("click", () => { setArea(null); changed(); });
  window.addEventListener("popstate", () => readUrl());
  wireRegions();
  $("api-key").value = localStorage.getItem("grn-api-key") || "";
  $("api-key").addEventListener("change", () => {
    localStorage.setItem("grn-api-key", $("api-key").value.trim());
    loadChoices();
  });
  if (window.matchMedia("(max-width: 800px)").matches) {
    $("options").open = false; // on a phone the results come right after the query
    $("labels-panel").open = false;
  }
}

wire();
checkReady().then(async (ready) => {
  if (!ready) return;
  const asked = state.asked; // a query asked for while the choices load is not undone
  await loadChoices();
  await Promise.all([setUpMap(), readUrl({ asked })]);
});
setInterval(checkReady, 15000);
