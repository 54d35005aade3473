"""The API's routes, one router per topic: search (classify and search), archive (scenes,
images, labels), admin (reload, import, reindex, jobs) and operations (the page, health,
readiness, metrics)."""
