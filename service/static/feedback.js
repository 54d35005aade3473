// Relevance feedback on the search page: the scenes a person asked for more (or fewer) like,
// shown above the results by their thumbnails and names, and kept in the URL by id (more=,
// less=). Loaded before app.js, whose `state` and `search` these call.
"use strict";

// A judged scene as the bar shows it, from a hit or a scene of GET /scenes/{id}.
function judged(scene) {
  return { id: String(scene.id), image: scene.image, thumbnail: scene.thumbnail_url || "" };
}

// The scenes of the URL's ids, named and with their thumbnails (an id the archive does not
// answer for stays an id; the search says what is wrong with it).
async function judgedScenes(ids) {
  return Promise.all(ids.map((id) => api(`/scenes/${id}`).then(judged, () => ({ id, image: id, thumbnail: "" }))));
}

function showFeedback() {
  const chip = (scene) => element("span", { className: "judged", title: scene.image }, [
    ...(scene.thumbnail ? [element("img", { src: scene.thumbnail, alt: scene.image, width: 40, height: 40 })] : []),
    ` ${scene.image}`,
  ]);
  const parts = [];
  for (const [words, list] of [["More like", state.more], ["less like", state.less]]) {
    if (!list.length) continue;
    if (parts.length) parts.push(" · ");
    parts.push(`${words} `, ...list.map(chip));
  }
  $("feedback-text").replaceChildren(...parts);
  $("feedback").hidden = !parts.length;
}

function giveFeedback(scene, liked) {
  const entry = judged(scene);
  state.more = state.more.filter((s) => s.id !== entry.id);
  state.less = state.less.filter((s) => s.id !== entry.id);
  (liked ? state.more : state.less).push(entry);
  state.offset = 0;
  showFeedback();
  search();
}
