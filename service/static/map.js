// The search page's map: result footprints, "where else?" and an area drawn to filter.
// Leaflet comes from the npm registry through `grn assets` and is loaded only when the
// archive has georeferenced scenes. Without a basemap (GRN_MAP_TILES) each result's
// thumbnail is drawn on its footprint, so the map works with no network. Loaded before
// app.js, whose `state`, `openViewer`, `changed`, `showMessage` and `scoreText` these call.
"use strict";

const mapView = { info: null, map: null, hits: null, area: null, drawing: false, start: null, cells: null };
const DENSITY_K = 200; // "where else?" counts this many of the most similar scenes

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = element("script", { src });
    script.onload = resolve;
    script.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.append(script);
  });
}

async function setUpMap() {
  try {
    mapView.info = await api("/places");
  } catch (err) {
    return; // the rest of the page says what is wrong with the service
  }
  const info = mapView.info;
  if (!info.placed) return; // no scene of this archive lies anywhere known
  $("map-panel").hidden = false;
  if (!info.map_library) {
    $("map-note").textContent = "The map's library is not installed on the server: run `grn assets` there, then reload this page.";
    $("map-note").hidden = false;
    $("map").hidden = true;
    return;
  }
  document.head.append(element("link", { rel: "stylesheet", href: "/vendor/leaflet/leaflet.css" }));
  await loadScript("/vendor/leaflet/leaflet.js");
  const map = L.map("map", { zoomSnap: 0.25, maxZoom: 22 });
  if (info.basemap) {
    L.tileLayer(info.basemap, { attribution: info.attribution || "", maxZoom: 22 }).addTo(map);
  }
  const [west, south, east, north] = info.bounds;
  map.fitBounds([[south, west], [north, east]]);
  mapView.map = map;
  mapView.hits = L.layerGroup().addTo(map);
  mapView.cells = L.layerGroup().addTo(map);
  map.on("mousedown", (event) => {
    if (!mapView.drawing) return;
    event.originalEvent.preventDefault(); // a drag draws; it selects nothing on the page
    L.DomUtil.disableTextSelection();
    mapView.start = event.latlng;
    if (mapView.area) mapView.area.remove();
    mapView.area = L.rectangle([event.latlng, event.latlng], { color: "#a4262c", weight: 2, fill: false, dashArray: "6 4" }).addTo(map);
  });
  map.on("mousemove", (event) => {
    if (mapView.drawing && mapView.start) mapView.area.setBounds([mapView.start, event.latlng]);
  });
  map.on("mouseup", () => {
    if (!mapView.drawing || !mapView.start) return;
    const b = mapView.area.getBounds();
    mapView.start = null;
    L.DomUtil.enableTextSelection();
    startDrawing(false);
    if (b.getEast() - b.getWest() < 1e-9 || b.getNorth() - b.getSouth() < 1e-9) return; // a click
    setArea([b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]);
    changed();
  });
  setArea(state.area);
  if (state.last) drawHits(state.last.hits);
}

function startDrawing(on) {
  mapView.drawing = on && !!mapView.map;
  $("map-draw").setAttribute("aria-pressed", String(mapView.drawing));
  $("map").classList.toggle("drawing", mapView.drawing);
  if (!mapView.map) return;
  if (mapView.drawing) mapView.map.dragging.disable();
  else mapView.map.dragging.enable();
}

function setArea(area) {
  state.area = area;
  $("map-clear").hidden = !area;
  $("map-area").hidden = !area;
  if (area) {
    const [w, s, e, n] = area.map((v) => v.toFixed(5));
    $("map-area").textContent = `Only scenes in the area drawn: ${s}..${n} N, ${w}..${e} E.`;
  }
  if (!mapView.map) return;
  if (mapView.area) mapView.area.remove();
  mapView.area = area
    ? L.rectangle([[area[1], area[0]], [area[3], area[2]]], { color: "#a4262c", weight: 2, fill: false, dashArray: "6 4" }).addTo(mapView.map)
    : null;
}

function drawHits(hits) {
  $("map-where").disabled = !(state.query && state.query.sceneId);
  if (!mapView.map) return;
  mapView.hits.clearLayers();
  if ($("map-where").getAttribute("aria-pressed") === "true") showDensity(true); // the new query's
  const placed = hits.filter((hit) => hit.footprint);
  const offset = state.last ? state.last.offset : 0;
  let bounds = null;
  placed.forEach((hit) => {
    const area = hit.footprint.type !== "Point";
    const latlngs = footprintRings(hit.footprint).map((ring) => ring.map(([lon, lat]) => [lat, lon]));
    const rank = offset + hits.indexOf(hit) + 1;
    const shape = area
      ? L.polygon(latlngs, { color: "#2f6f4f", weight: rank <= 3 ? 3 : 1.5, fillOpacity: mapView.info.basemap ? 0.15 : 0, className: "footprint" })
      : L.circleMarker(latlngs[0][0], { radius: 6, color: "#2f6f4f", className: "footprint" });
    if (!mapView.info.basemap && area) {
      L.imageOverlay(hit.thumbnail_url, shape.getBounds(), { alt: hit.image, className: "footprint-image" }).addTo(mapView.hits);
    }
    shape.bindTooltip(`${rank}. ${hit.image} · ${scoreText(hit.score)}`);
    shape.on("click", () => openViewer(hit, hit.score));
    shape.addTo(mapView.hits);
    const path = shape.getElement();
    if (path) path.dataset.sceneId = String(hit.id);
    bounds = bounds ? bounds.extend(shape.getBounds()) : L.latLngBounds(shape.getBounds().getSouthWest(), shape.getBounds().getNorthEast());
  });
  if (bounds) mapView.map.fitBounds(bounds.pad(0.15), { maxZoom: 19 });
}

// The outer rings of a footprint as [lon, lat] lists: a Point's one point, a Polygon's ring, a
// MultiPolygon's rings, those west of a split at the antimeridian moved a turn east so that the
// footprint draws whole (Leaflet takes longitudes past 180).
function footprintRings(footprint) {
  if (footprint.type === "Point") return [[footprint.coordinates]];
  if (footprint.type === "Polygon") return [footprint.coordinates[0]];
  const rings = footprint.coordinates.map((polygon) => polygon[0]);
  const split = rings.some((ring) => ring.some(([lon]) => lon >= 180));
  return rings.map((ring) => ring.map(([lon, lat]) => [split && lon < 0 ? lon + 360 : lon, lat]));
}

// "Where else?": the query scene's most similar scenes counted per cell of the archive, the
// cells shaded by their share of the hits (POST /search/density).
function densityCell() {
  const [west, south, east, north] = mapView.info.bounds;
  const metres = Math.max((east - west) * 111320 * Math.cos(((south + north) / 2) * Math.PI / 180), (north - south) * 111320);
  return Math.max(50, Math.round(metres / 12));
}

async function showDensity(on) {
  $("map-where").setAttribute("aria-pressed", String(on));
  mapView.cells.clearLayers();
  $("map-density").hidden = !on;
  if (!on || !state.query || !state.query.sceneId) return;
  const cell = densityCell();
  let body;
  try {
    body = await api("/search/density", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ scene_id: state.query.sceneId, k: DENSITY_K, cell_m: cell, ...(state.area ? { bbox: state.area } : {}) }),
    });
  } catch (err) {
    showMessage(err.message);
    return;
  }
  const most = Math.max(1, ...body.cells.map((c) => c.count));
  for (const c of body.cells) {
    const [w, s, e, n] = c.bounds;
    L.rectangle([[s, w], [n, e]], {
      color: "#a4262c", weight: 1, fillColor: "#a4262c", fillOpacity: 0.1 + 0.5 * (c.count / most), className: "density-cell",
    }).bindTooltip(`${c.count} of the ${body.hits} most similar scenes · best score ${c.best_score.toFixed(3)}`).addTo(mapView.cells);
  }
  $("map-density").textContent = `Where else: the ${body.hits} scenes most like ${state.query.name}, ${body.placed} of them placed, in ${body.cells.length} cells of about ${cell} m; darker cells hold more.`;
}
