// When scenes were acquired, on the search page: the filters by acquisition date and month
// (the API's acquired_after, acquired_before and month), the order of the results and of the
// archive listing (by score or name, or by acquisition time), their place in the URL, and
// the date a card shows. Loaded before app.js, which calls these.
"use strict";

const ORDER_TITLES = { acquired: "oldest acquired first", "-acquired": "newest acquired first" };

// A box for each month, Jan to Dec (the API's 1 to 12), named in English as the page is.
function drawMonths() {
  const name = new Intl.DateTimeFormat("en", { month: "short", timeZone: "UTC" });
  for (let month = 1; month <= 12; month++) {
    const input = element("input", { type: "checkbox", name: "month", value: String(month) });
    $("months").append(element("label", {}, [input, ` ${name.format(Date.UTC(2000, month - 1, 1))}`]));
  }
}

function chosenMonths() {
  return [...document.querySelectorAll("#months input:checked")].map((input) => Number(input.value));
}

// The acquisition filter in the API's field names (a search and a listing take the same).
function acquiredFields() {
  const fields = {};
  if ($("acquired-after").value) fields.acquired_after = $("acquired-after").value;
  if ($("acquired-before").value) fields.acquired_before = $("acquired-before").value;
  if (chosenMonths().length) fields.month = chosenMonths();
  return fields;
}

// "" (a search best first, the archive by name), "acquired" or "-acquired"
function chosenOrder() {
  return $("order").value;
}

function writeAcquired(params) {
  for (const [key, value] of Object.entries(acquiredFields())) params.set(key, [value].flat().join(","));
  if (chosenOrder()) params.set("order", chosenOrder());
}

function readAcquired(params) {
  $("acquired-after").value = params.get("acquired_after") || "";
  $("acquired-before").value = params.get("acquired_before") || "";
  const months = new Set((params.get("month") || "").split(","));
  for (const input of document.querySelectorAll("#months input")) input.checked = months.has(input.value);
  $("order").value = ORDER_TITLES[params.get("order")] ? params.get("order") : "";
}

// What a card says of when its scene was taken (UTC, as the month filter reads it).
function acquiredLine(scene) {
  if (!scene.acquired) return null;
  return element("div", { className: "date", textContent: `acquired ${scene.acquired.slice(0, 10)}`, title: scene.acquired });
}

function wireAcquired(changed) {
  drawMonths();
  for (const input of [$("acquired-after"), $("acquired-before"), $("order"), ...document.querySelectorAll("#months input")]) {
    input.addEventListener("change", changed);
  }
}
