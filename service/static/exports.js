// The page's exports, as files named after what they hold. A search's export is its whole
// result set (all k hits, every page, offset 0 and one page of k), asked of POST /search in
// the format wanted (csv, geojson, json); the archive listing's is GET /scenes/export with the
// listing's filters (csv, geojson, geoparquet). Loaded before app.js, whose `state`,
// `searchParams`, `searchRequest`, `chosenLabels` and `archiveParams` these call.
"use strict";

const EXPORT_TYPES = { csv: "text/csv", geojson: "application/geo+json", json: "application/json" };

function download(name, type, content) {
  const link = element("a", { href: URL.createObjectURL(new Blob([content], { type })), download: name });
  document.body.append(link);
  link.click();
  link.remove();
}

// A piece of a file name: lower case, runs of anything but letters, digits, `+`, `.` and `_`
// made one `-`, at most 60 characters.
function fileSafe(text) {
  return text.normalize("NFKD").toLowerCase().replace(/[^a-z0-9+._]+/g, "-")
    .replace(/^[-.]+|-+$/g, "").slice(0, 60).replace(/-+$/, "") || "query";
}

// grn-search-scene-<id>-k100, grn-search-text-ships-in-a-harbour-k20,
// grn-search-image-<file name>-k20, grn-search-labels-trees+grass-k20
function searchFileName() {
  const query = state.query;
  let what;
  if (query && query.sceneId) what = `scene-${query.sceneId}`;
  else if (query && query.text) what = `text-${fileSafe(query.text)}`;
  else if (query && query.file) what = `image-${fileSafe(query.file.name.replace(/\.[^.]*$/, ""))}`;
  else what = `labels-${chosenLabels().map(fileSafe).join("+")}`;
  return `grn-search-${what}-k${$("k").value}`;
}

function sayExported(id, text) {
  $(id).textContent = text;
  $(id).hidden = !text;
}

async function exportSearch(format) {
  if (!state.last) return;
  if (state.ranking) { // POST /search/concept answers JSON only: no file of a concept's hits yet
    sayExported("export-note", "A concept's ranking cannot be exported yet: tick the concept as a filter and export that search.");
    return;
  }
  const params = { ...searchParams(), offset: 0, limit: Number($("k").value), format };
  const name = `${searchFileName()}.${format}`;
  sayExported("export-note", "Exporting…");
  let response;
  try {
    response = await fetched("/search", searchRequest(params));
  } catch (err) {
    sayExported("export-note", "");
    showMessage(err.message);
    return;
  }
  if (format !== "geojson") {
    const text = await response.text();
    download(name, EXPORT_TYPES[format], text);
    const count = format === "json" ? JSON.parse(text).hits.length : state.last.total;
    sayExported("export-note", `Saved all ${count} results as ${name}.`);
    return;
  }
  // GeoJSON holds the hits with a footprint; the answer counts the others as `unplaced`
  const collection = await response.json();
  const placed = collection.features.length;
  const count = placed + collection.unplaced;
  if (!placed) {
    sayExported("export-note", `None of these ${count} results has a footprint: a GeoJSON file would be empty, so none was saved. Export CSV instead.`);
    return;
  }
  download(name, EXPORT_TYPES.geojson, JSON.stringify(collection, null, 2));
  sayExported("export-note", collection.unplaced
    ? `Saved ${placed} of the ${count} results as ${name}: ${collection.unplaced} have no footprint and are left out (the CSV holds them all).`
    : `Saved all ${count} results as ${name}.`);
}

// grn-scenes-all, grn-scenes-name-harbor-folder-harbor-labels-water+ship
function archiveFileName(params) {
  const parts = [];
  const named = {
    q: "name", scene: "folder", labels_all: "labels", labels_any: "any", labels_none: "without", added_after: "after",
    added_before: "before", acquired_after: "acquired-after", acquired_before: "acquired-before", month: "month",
  };
  for (const [key, word] of Object.entries(named)) {
    if (params.get(key)) parts.push(`${word}-${params.get(key).split(",").map(fileSafe).join("+")}`);
  }
  if (params.get("bbox")) parts.push("area");
  return `grn-scenes-${parts.join("-") || "all"}`;
}

async function exportArchive(format) {
  const params = archiveParams();
  const name = `${archiveFileName(params)}.${format === "geoparquet" ? "parquet" : format}`;
  params.set("format", format);
  sayExported("archive-export-note", "Exporting…");
  try {
    const response = await fetched(`/scenes/export?${params}`);
    download(name, response.headers.get("Content-Type") || "", await response.blob());
  } catch (err) {
    sayExported("archive-export-note", "");
    showMessage(err.message);
    return;
  }
  sayExported("archive-export-note", `Saved the ${state.archiveTotal} scenes listed as ${name}.`);
}
