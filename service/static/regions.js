// Regions and match maps: drag a box on the query's preview (or type its pixels) to search
// by that region of the image (POST /search's `region`, in the image's own pixels; "Whole
// image" goes back), and in the viewer "Where does it match?" lays the hit's match map
// (POST /match: a grid of the query's similarity to windows of the hit) over the hit. A
// plain script loaded before app.js, whose startQuery, searchParams, writeUrl and openViewer
// call setRegion, regionFields and resetMatch; `$`, `api`, `fetched` and `element` come from
// common.js, `state`, `search`, `searchRequest` and `loaded` from app.js.
"use strict";

const REGION_MIN = 16; // px a side, as the API asks (service.usecases.regions.MIN_SIDE)
const regions = { drag: null, mapAsked: 0 };

// Whether the query is an image a region can be cut from: an upload or an archive scene.
function regionQuery() {
  return Boolean(state.query && (state.query.file || state.query.sceneId));
}

function regionFields() {
  return state.region && regionQuery() ? { region: state.region } : {};
}

// The region a URL's `region=x0,y0,x1,y1` gives, or null.
function readRegion(text) {
  const box = (text || "").split(",").map(Number);
  return box.length === 4 && box.every(Number.isInteger) ? box : null;
}

// The query image's own size in pixels: the scene's, or the upload's as the service reads it
// (/preview's X-Image-Size), asked for once per query.
async function querySize() {
  const query = state.query;
  if (query.size) return query.size;
  if (query.sceneId) {
    const info = await api(`/scenes/${query.sceneId}`);
    query.size = { width: info.width, height: info.height };
  } else {
    const form = new FormData();
    form.append("file", query.file);
    const response = await fetched("/preview?size=16", { method: "POST", body: form });
    const [width, height] = (response.headers.get("X-Image-Size") || "").split("x").map(Number);
    query.size = { width, height };
  }
  return query.size;
}

// Where an <img>'s picture lies in its element (object-fit: contain), in CSS pixels from its
// offset parent.
function contentBox(img) {
  const width = img.clientWidth;
  const height = img.clientHeight;
  const scale = Math.min(width / (img.naturalWidth || width), height / (img.naturalHeight || height));
  const shown = { width: (img.naturalWidth || width) * scale, height: (img.naturalHeight || height) * scale };
  return {
    left: img.offsetLeft + (width - shown.width) / 2,
    top: img.offsetTop + (height - shown.height) / 2,
    ...shown,
  };
}

function place(node, left, top, width, height) {
  Object.assign(node.style, { left: `${left}px`, top: `${top}px`, width: `${width}px`, height: `${height}px` });
}

// The region (image pixels) or none; drawn over the preview and said in the form.
function setRegion(region) {
  state.region = region;
  $("region-input").value = region ? region.join(",") : "";
  $("region-clear").hidden = !region;
  $("region-form").hidden = !regionQuery();
  placeRegionBox();
}

// The box over `img` (the preview, or the query in the viewer), where the image has shown.
async function placeRegionBox(box = $("region-box"), img = $("preview-image")) {
  if (!state.region || !regionQuery()) {
    box.hidden = true;
    return;
  }
  const region = state.region;
  const size = await querySize().catch(() => null);
  if (!size || region !== state.region || img.hidden) return; // drawn when the image shows
  const shown = contentBox(img);
  const [x0, y0, x1, y1] = region;
  const sx = shown.width / size.width;
  const sy = shown.height / size.height;
  place(box, shown.left + x0 * sx, shown.top + y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy);
  box.hidden = false;
}

// A new region (or none: the whole image) searched from the first page.
function searchRegion(region) {
  state.asked++;
  state.offset = 0;
  setRegion(region);
  search();
}

function pointAt(event, shown) {
  const frame = $("preview-frame").getBoundingClientRect();
  const x = Math.min(Math.max(event.clientX - frame.left, shown.left), shown.left + shown.width);
  const y = Math.min(Math.max(event.clientY - frame.top, shown.top), shown.top + shown.height);
  return { x, y };
}

function dragged(event) {
  const { start, shown } = regions.drag;
  const end = pointAt(event, shown);
  return {
    left: Math.min(start.x, end.x), top: Math.min(start.y, end.y),
    width: Math.abs(end.x - start.x), height: Math.abs(end.y - start.y),
  };
}

async function endDrag(event) {
  if (!regions.drag) return;
  const box = dragged(event);
  const { shown } = regions.drag;
  regions.drag = null;
  $("region-drag").hidden = true;
  const size = await querySize();
  const sx = size.width / shown.width;
  const sy = size.height / shown.height;
  const x0 = Math.max(0, Math.round((box.left - shown.left) * sx));
  const y0 = Math.max(0, Math.round((box.top - shown.top) * sy));
  const x1 = Math.min(size.width, Math.round((box.left + box.width - shown.left) * sx));
  const y1 = Math.min(size.height, Math.round((box.top + box.height - shown.top) * sy));
  if (x1 - x0 < REGION_MIN || y1 - y0 < REGION_MIN) return; // a click, not a box
  searchRegion([x0, y0, x1, y1]);
}

// --- the viewer's match map ---------------------------------------------------------------

// The viewer opened on a hit (`query`: the query shown beside it, or null): no map yet, and
// the query's region boxed on its picture once it has loaded.
function resetMatch(query) {
  regions.mapAsked++;
  $("viewer-region-box").hidden = true;
  if (query && state.region) {
    loaded($("viewer-query"), 3000).then(() => placeRegionBox($("viewer-region-box"), $("viewer-query")));
  }
  $("viewer-match").hidden = !(query && (query.file || query.sceneId));
  $("viewer-match").setAttribute("aria-pressed", "false");
  $("match-overlay").hidden = true;
  $("match-note").hidden = true;
}

async function toggleMatch() {
  const button = $("viewer-match");
  if (button.getAttribute("aria-pressed") === "true") {
    resetMatch(state.query);
    return;
  }
  const asked = ++regions.mapAsked;
  button.setAttribute("aria-pressed", "true");
  $("match-note").textContent = "Finding where it matches…";
  $("match-note").hidden = false;
  let body;
  try {
    body = await api("/match", searchRequest({ hit_id: String($("viewer").scene.id), ...regionFields() }));
    await loaded($("viewer-hit"), 3000);
  } catch (err) {
    if (asked === regions.mapAsked) $("match-note").textContent = err.message;
    return;
  }
  if (asked === regions.mapAsked) drawMatch(body.match_map);
}

// The map as a grid of cells over the hit, the better a cell matches the more opaque; the
// note names the best cell and the range of similarities.
function drawMatch(map) {
  const values = map.values.flat();
  const low = Math.min(...values);
  const high = Math.max(...values);
  const overlay = $("match-overlay");
  overlay.style.gridTemplateColumns = `repeat(${map.cols}, 1fr)`;
  overlay.style.gridTemplateRows = `repeat(${map.rows}, 1fr)`;
  overlay.replaceChildren(...map.values.flatMap((row, r) => row.map((value, c) => {
    const strength = high > low ? (value - low) / (high - low) : 1;
    const cell = element("div", { className: "match-cell", title: `row ${r + 1}, column ${c + 1}: ${value.toFixed(3)}` });
    cell.style.backgroundColor = `rgb(255 160 0 / ${(0.08 + 0.6 * strength).toFixed(2)})`;
    cell.dataset.value = String(value);
    return cell;
  })));
  const best = values.indexOf(high);
  const shown = contentBox($("viewer-hit"));
  place(overlay, shown.left, shown.top, shown.width, shown.height);
  overlay.hidden = false;
  $("match-note").textContent = `Where it matches: the brighter a cell, the more like the query. Best at row ${Math.floor(best / map.cols) + 1}, column ${best % map.cols + 1} (similarity ${high.toFixed(3)}; the weakest ${low.toFixed(3)}).`;
}

// Whether a press lands on the picture or within EDGE px of it (a box begun just outside
// starts at the edge: a corner is easy to miss, and its rounding is not the picture's).
function nearPicture(event) {
  const EDGE = 8;
  if ($("preview").hidden || event.target.closest("dialog")) return false; // the viewer is over it
  const box = $("preview-frame").getBoundingClientRect();
  return event.clientX >= box.left - EDGE && event.clientX <= box.right + EDGE
    && event.clientY >= box.top - EDGE && event.clientY <= box.bottom + EDGE;
}

function wireRegions() {
  const frame = $("preview-frame");
  document.addEventListener("pointerdown", (event) => {
    if (!regionQuery() || $("preview-image").hidden || event.button !== 0 || !nearPicture(event)) return;
    event.preventDefault();
    frame.setPointerCapture(event.pointerId);
    const shown = contentBox($("preview-image"));
    regions.drag = { start: pointAt(event, shown), shown };
  });
  frame.addEventListener("pointermove", (event) => {
    if (!regions.drag) return;
    const box = dragged(event);
    place($("region-drag"), box.left, box.top, box.width, box.height);
    $("region-drag").hidden = false;
  });
  frame.addEventListener("pointerup", endDrag);
  frame.addEventListener("pointercancel", () => { regions.drag = null; $("region-drag").hidden = true; });
  $("preview-image").addEventListener("load", placeRegionBox);
  window.addEventListener("resize", placeRegionBox);
  $("region-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const region = readRegion($("region-input").value.replace(/\s/g, ""));
    if (region) searchRegion(region);
    else showMessage("A region is four whole numbers of pixels: x0,y0,x1,y1.");
  });
  $("region-clear").addEventListener("click", () => searchRegion(null));
  $("viewer-match").addEventListener("click", toggleMatch);
}
