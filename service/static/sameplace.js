// The viewer's same place over time: a strip of the scenes whose footprint covers at least
// half of the open scene's (GET /scenes/{id}/same-place), by acquisition date; one clicked
// opens a before/after view of the two, the earlier first: side by side, and one over the
// other with a slider that reveals the earlier scene from the left. A plain script loaded
// before app.js (whose openViewer calls showSamePlace); `$`, `api` and `element` come from
// common.js.
"use strict";

const samePlace = { scene: null, asked: 0 };

function acquiredDate(scene) {
  return scene.acquired ? scene.acquired.slice(0, 10) : "date unknown";
}

// Earlier first; a scene of unknown date after one whose date is known (as the API orders).
function inOrder(a, b) {
  if (!a.acquired) return [b, a];
  if (!b.acquired) return [a, b];
  return a.acquired <= b.acquired ? [a, b] : [b, a];
}

async function showSamePlace(scene) {
  const asked = ++samePlace.asked; // an answer for a scene no longer open is dropped
  samePlace.scene = null;
  $("same-place").hidden = true;
  $("before-after").hidden = true;
  $("same-place-strip").replaceChildren();
  let info, found;
  try {
    [info, found] = await Promise.all([
      api(`/scenes/${scene.id}`),
      api(`/scenes/${scene.id}/same-place?limit=50`),
    ]);
  } catch (err) {
    return; // the viewer works without the strip
  }
  if (asked !== samePlace.asked) return;
  samePlace.scene = info;
  if (!info.place) return; // not on the map: no place to share
  const note = found.scenes.length ? "" : found.note;
  $("same-place-note").textContent = found.total > found.scenes.length
    ? `The first ${found.scenes.length} of ${found.total} scenes.` : note;
  $("same-place-note").hidden = !$("same-place-note").textContent;
  for (const other of found.scenes) {
    const button = element("button", {
      className: "strip-item", type: "button",
      title: `${other.image}: covers ${Math.round(other.overlap * 100)}% of this scene`,
    }, [
      element("img", { src: other.thumbnail_url, alt: other.image, loading: "lazy", width: 96, height: 96 }),
      element("span", { className: "date", textContent: acquiredDate(other) }),
      element("span", { className: "overlap", textContent: `${Math.round(other.overlap * 100)}%` }),
    ]);
    button.dataset.sceneId = String(other.id);
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", () => openBeforeAfter(other, button));
    $("same-place-strip").append(element("li", {}, [button]));
  }
  $("same-place").hidden = false;
}

function openBeforeAfter(other, button) {
  const [before, after] = inOrder(samePlace.scene, other);
  for (const item of document.querySelectorAll(".strip-item")) item.setAttribute("aria-pressed", String(item === button));
  const preview = (scene) => `/scenes/${scene.id}/preview?size=512`;
  const caption = (scene, when) => `${when}: ${scene.image} · ${acquiredDate(scene)}`;
  for (const [id, scene, when] of [["before", before, "before"], ["after", after, "after"]]) {
    $(`${id}-image`).src = preview(scene);
    $(`${id}-image`).alt = caption(scene, when);
    $(`${id}-image`).dataset.sceneId = String(scene.id);
    $(`${id}-caption`).textContent = caption(scene, when);
    $(`swipe-${id}`).src = preview(scene);
    $(`swipe-${id}`).alt = caption(scene, when);
    $(`swipe-${id}`).dataset.sceneId = String(scene.id);
  }
  $("swipe-range").value = "50";
  reveal();
  $("before-after").hidden = false;
  $("swipe-range").focus();
}

// The earlier scene shows left of the slider's share of the width, the later one right of it.
function reveal() {
  const shown = Number($("swipe-range").value);
  $("swipe-before").style.clipPath = `inset(0 ${100 - shown}% 0 0)`;
  $("swipe-range").setAttribute("aria-valuetext", `${shown}% of the earlier scene shown`);
}

$("swipe-range").addEventListener("input", reveal);
$("before-after-close").addEventListener("click", () => {
  $("before-after").hidden = true;
  for (const item of document.querySelectorAll(".strip-item")) item.setAttribute("aria-pressed", "false");
});
