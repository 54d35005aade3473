// What the search page (app.js) and the admin page (admin.js) share: finding and making
// elements, calls to the service's own API with the key the person entered (sent as
// X-API-Key), the drop zone for image files, and the pager under a list. A plain script loaded before either page's,
// so these are globals of both.
"use strict";

const $ = (id) => document.getElementById(id);

function headers(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

// The response to a call of the service's own API; an answer that is not 2xx is an Error
// carrying the service's message.
async function fetched(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  } catch (err) {
    throw new Error("The service cannot be reached. Is it running?");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new Error(body && body.message ? body.message : `HTTP ${response.status}`);
  }
  return response;
}

async function api(path, options = {}) {
  const response = await fetched(path, options);
  return response.status === 204 ? null : response.json().catch(() => null);
}

function element(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

// `drop` takes dropped files (handed to `take`) and, focused, opens the file chooser `input`
// with Enter or Space: on key release, as Chromium ignored a click sent from keydown.
function dropZone(drop, input, take) {
  drop.addEventListener("keyup", (event) => {
    if (event.target === drop && (event.key === "Enter" || event.key === " ")) input.click();
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    take(event.dataTransfer.files);
  });
}

// Paging through GET /scenes by cursor, which costs the same at any depth: the cursors of the
// pages visited (so Previous goes back one), and the selection they were made for. A new
// selection (filters, name, order) starts again at the first page, since a cursor holds only
// for the selection that made it.
function scenePager() {
  let selection = null;
  let cursors = [null];
  let next = null;
  return {
    // the query for the current page of the selection `params` (URLSearchParams)
    query(params) {
      if (params.toString() !== selection) {
        selection = params.toString();
        cursors = [null];
      }
      const query = new URLSearchParams(params);
      const cursor = cursors[cursors.length - 1];
      if (cursor) query.set("cursor", cursor);
      return query;
    },
    seen(body) { next = body.next_cursor; },
    forward() { if (next) cursors.push(next); next = null; },
    back() { if (cursors.length > 1) cursors.pop(); },
    restart() { cursors = [null]; },
    get first() { return cursors.length === 1; },
    get last() { return next === null; },
  };
}

// The pager under a list: Previous, where the page is ("11–20 of 50"), Next. Made inside
// the page's empty <nav class="pager">, whose data-ids names the three elements' ids and
// data-empty (if set) what it says of an empty list; `turn(step)` gets -1 or +1. Returns
// `show`, which takes a listing's offset, the number shown, the total, and whether this is
// the first page and the last.
function pager(nav, turn) {
  const [previousId, infoId, nextId] = nav.dataset.ids.split(" ");
  const button = (id, text, step) => {
    const node = element("button", { id, type: "button", className: "button secondary", textContent: text });
    node.addEventListener("click", () => turn(step));
    return node;
  };
  const previous = button(previousId, "Previous", -1);
  const info = element("span", { id: infoId });
  const next = button(nextId, "Next", 1);
  nav.replaceChildren(previous, info, next);
  return ({ offset, shown, total, first, last }) => {
    const from = total ? offset + 1 : 0;
    info.textContent = total || !nav.dataset.empty ? `${from}–${offset + shown} of ${total}` : nav.dataset.empty;
    previous.disabled = first;
    next.disabled = last;
  };
}
