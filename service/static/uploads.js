// The images searched by upload, kept in this browser (IndexedDB) under a random id that the
// URL carries as upload=ID: Back, Forward and reload search by the same image again. The
// service keeps no upload; a link with upload= opened in another browser finds no image, and
// the page says so. The last KEPT_UPLOADS images are kept, the older ones deleted.
"use strict";

const KEPT_UPLOADS = 10;

function uploadStore(mode, work) {
  return new Promise((resolve, reject) => {
    const opening = indexedDB.open("grn-page", 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore("uploads", { keyPath: "id" });
    opening.onerror = () => reject(opening.error);
    opening.onsuccess = () => {
      const db = opening.result;
      const done = db.transaction("uploads", mode);
      const answer = work(done.objectStore("uploads"));
      done.oncomplete = () => { db.close(); resolve(answer.result); };
      done.onerror = () => { db.close(); reject(done.error); };
    };
  });
}

// Keeps `file` and answers its id; null where the browser keeps nothing (private windows
// may refuse IndexedDB): the search works, only not from the history.
async function keepUpload(file) {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  const id = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  try {
    await uploadStore("readwrite", (store) => store.put({ id, file, kept: Date.now() }));
    const all = await uploadStore("readonly", (store) => store.getAll());
    const old = all.sort((a, b) => b.kept - a.kept).slice(KEPT_UPLOADS);
    if (old.length) await uploadStore("readwrite", (store) => { old.forEach((o) => store.delete(o.id)); return {}; });
  } catch (err) {
    return null;
  }
  return id;
}

// The file kept under `id`, or null.
async function keptUpload(id) {
  try {
    const found = await uploadStore("readonly", (store) => store.get(id));
    return found ? found.file : null;
  } catch (err) {
    return null;
  }
}
