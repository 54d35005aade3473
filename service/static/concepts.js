// Concepts on the search page: the results marked "more like" (and the query scene) are the
// examples of a concept, those marked "less like" its counter-examples. "Rank the archive by
// these examples" asks POST /search/concept with every filter of the page; each new mark
// ranks again, so the person iterates until the hits are right, then saves the examples
// under a name (POST /concepts, with the API key where the service has one). The saved
// concepts (GET /concepts, with how many scenes each finds) sit beside the labels as
// filters, and each can rank the archive, take the marks as more examples (refine), be
// renamed or deleted; a stale one (fitted with another model, none of its positives
// indexed) says so and filters nothing. Loaded before app.js, whose `state`, `search`,
// `changed` and `startQuery` these call; app.js calls `loadConcepts`, `conceptFields`,
// `conceptCall`, `rankingTitle`, `writeConcepts` and `readConcepts`.
"use strict";

const JSON_HEADERS = { "Content-Type": "application/json" };

function chosenConcepts() {
  return [...document.querySelectorAll("#concepts input:checked")].map((input) => input.value);
}

// The concepts filter in the API's field names (a search and a listing take the same).
function conceptFields() {
  return chosenConcepts().length ? { concepts: chosenConcepts() } : {};
}

// The ticked concepts, and a ranking by a saved concept (concept=NAME) or by the marked
// examples (rank=examples), so that Back and reload rank again.
function writeConcepts(params) {
  if (chosenConcepts().length) params.set("concepts", chosenConcepts().join(","));
  if (state.query && state.query.concept) params.set("concept", state.query.concept);
  else if (state.ranking && state.ranking.examples) params.set("rank", "examples");
}

function readConcepts(params) {
  const names = new Set((params.get("concepts") || "").split(",").filter(Boolean));
  for (const input of document.querySelectorAll("#concepts input")) input.checked = names.has(input.value);
}

// What a concept action answered, where the person acted (`where`: the feedback bar or the
// list); a missing or wrong key opens the API key box, where it is entered.
function sayConcept(where, text, failed = false) {
  const line = $(where === "list" ? "concepts-status" : "concept-status");
  line.textContent = text;
  line.classList.toggle("bad", failed);
  if (failed && /API key/.test(text)) $("api-key").closest("details").open = true;
}

// Lists the saved concepts, each with how many scenes it finds and its actions; the ticks
// survive a new listing by name.
async function loadConcepts() {
  const ticked = new Set(chosenConcepts());
  let body;
  try {
    body = await api("/concepts");
  } catch (err) {
    sayConcept("list", err.message, true);
    return;
  }
  $("concepts").replaceChildren(...body.concepts.map((concept) => conceptRow(concept, ticked.has(concept.name))));
  $("concepts-none").hidden = body.concepts.length > 0;
}

function conceptRow(concept, ticked) {
  const input = element("input", { type: "checkbox", value: concept.name, name: "concept", checked: ticked && !concept.stale, disabled: concept.stale });
  input.addEventListener("change", changed);
  const found = concept.stale ? "stale: refine it with scenes of this archive" : `${concept.count}`;
  const action = (text, act, disabled = false) => {
    const button = element("button", {
      type: "button", className: `button secondary small ${text.toLowerCase()}`, textContent: text, disabled,
    });
    button.setAttribute("aria-label", `${text} ${concept.name}`);
    button.addEventListener("click", () => act(concept.name));
    return button;
  };
  const row = element("div", { className: concept.stale ? "concept stale" : "concept" }, [
    element("label", { title: `model ${concept.model_version}` }, [input, ` ${concept.name} (${found})`]),
    action("Rank", rankByConcept, concept.stale), action("Refine", refineConcept),
    action("Rename", renameConcept), action("Delete", deleteConcept),
  ]);
  row.dataset.name = concept.name;
  return row;
}

// The examples the marks give: the query scene and the "more like" results, and the "less
// like" ones as counter-examples.
function examples() {
  const negatives = state.less.map((scene) => scene.id);
  const positives = state.more.map((scene) => scene.id);
  const scene = state.query && state.query.sceneId;
  if (scene && !positives.includes(scene) && !negatives.includes(scene)) positives.unshift(scene);
  return { positives, negatives };
}

function rankByExamples() {
  if (!examples().positives.length) {
    sayConcept("bar", "Mark at least one result “More like” first: the archive is ranked by the examples.", true);
    return;
  }
  sayConcept("bar", "");
  state.ranking = { examples: true };
  state.offset = 0;
  search();
}

// Ranks the archive by a saved concept: a query of its own, whose marks refine it (`feedback`
// and `keepPage` as the URL gives them).
async function rankByConcept(name, { keepPage = false, fromUrl = false, feedback = null } = {}) {
  state.query = { concept: name, name: `concept ${name}`, labels: [], previewUrl: "" };
  startQuery(`concept ${name}`, "", null, { concept: name }); // no region tools: set after the query
  state.more = feedback ? feedback.more : [];
  state.less = feedback ? feedback.less : [];
  if (!keepPage) state.offset = 0;
  showFeedback();
  await search({ fromUrl });
}

// POST /search/concept's path and options for a search with `params` (searchParams()).
function conceptCall(params) {
  const body = { ...filterFields(), k: params.k, limit: params.limit, offset: params.offset };
  if (params.min_score !== undefined) body.min_score = params.min_score;
  if (state.ranking.concept) body.concept = state.ranking.concept;
  else Object.assign(body, examples());
  return ["/search/concept", { method: "POST", headers: JSON_HEADERS, body: JSON.stringify(body) }];
}

function rankingTitle(body) {
  const scored = `${body.candidates} candidates scored`;
  if (body.concept) return `Ranked by the concept ${body.concept} (${scored})`;
  const against = body.negatives.length ? ` against ${body.negatives.length}` : "";
  return `Ranked by ${body.positives.length} examples${against} (${scored})`;
}

async function sendConcept(where, path, method, fields) {
  try {
    const options = { method, headers: JSON_HEADERS };
    if (fields) options.body = JSON.stringify(fields);
    const answer = await api(path, options);
    await loadConcepts();
    return answer || {};
  } catch (err) {
    sayConcept(where, err.message, true);
    return null;
  }
}

const conceptPath = (name) => `/concepts/${encodeURIComponent(name)}`;
const finds = (concept) => concept.stale ? "stale" : `${concept.count} of ${concept.scenes} scenes`;

async function saveConcept() {
  const name = $("concept-name").value.trim();
  if (!name) {
    sayConcept("bar", "Name the concept first.", true);
    $("concept-name").focus();
    return;
  }
  const saved = await sendConcept("bar", "/concepts", "POST", { name, ...examples() });
  if (!saved) return;
  $("concept-name").value = "";
  sayConcept("bar", `Saved the concept ${saved.name}: ${finds(saved)}.`);
}

async function refineConcept(name) {
  const { positives, negatives } = examples();
  if (!positives.length && !negatives.length) {
    sayConcept("list", `Mark results “More like” or “less like” first: they refine ${name}.`, true);
    return;
  }
  const refined = await sendConcept("list", conceptPath(name), "PATCH", { add_positives: positives, add_negatives: negatives });
  if (!refined) return;
  sayConcept("list", `Refined ${name}: ${finds(refined)}.`);
  if (chosenConcepts().includes(name) || (state.ranking && state.ranking.concept === name)) search();
}

async function renameConcept(name) {
  const to = (prompt(`Rename the concept ${name} to:`, name) || "").trim();
  if (!to || to === name) return;
  const ticked = chosenConcepts().includes(name);
  const renamed = await sendConcept("list", conceptPath(name), "PATCH", { name: to });
  if (!renamed) return;
  if (ticked) readConcepts(new URLSearchParams({ concepts: [...chosenConcepts(), to].join(",") }));
  if (state.ranking && state.ranking.concept === name) rankByConcept(to);
  sayConcept("list", `Renamed ${name} to ${to}.`);
}

async function deleteConcept(name) {
  if (!confirm(`Delete the concept ${name}? Its examples are forgotten.`)) return;
  const ticked = chosenConcepts().includes(name);
  if (!(await sendConcept("list", conceptPath(name), "DELETE", null))) return;
  sayConcept("list", `Deleted ${name}.`);
  if (state.ranking && state.ranking.concept === name) {
    state.ranking = null;
    forgetQuery(""); // nothing ranks by it any more
  }
  if (ticked) changed(); // the filter it was part of holds no more
}

$("concept-rank").addEventListener("click", rankByExamples);
$("concept-save").addEventListener("click", saveConcept);
$("concept-name").addEventListener("keydown", (event) => {
  if (event.key === "Enter") { event.preventDefault(); saveConcept(); }
});
// without marks the examples are gone: the search is by its query again (before app.js's
// own handler, which searches)
$("feedback-clear").addEventListener("click", () => {
  if (state.ranking && state.ranking.examples) state.ranking = null;
});
