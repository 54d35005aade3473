"""The same place over time (`GET /scenes/{id}/same-place`): the scenes whose footprint
covers at least a share of one scene's footprint, by acquisition time, a page at a time
(`service.storage.same_place` says how the share is measured)."""

from __future__ import annotations

from dataclasses import dataclass

from service.storage.catalog import Catalog
from service.storage.listing import ListedScene

DEFAULT_MIN_OVERLAP = 0.5
"""The share of the scene's footprint another must cover, unless asked otherwise."""


@dataclass(frozen=True)
class SamePlace:
    """A page of the scenes of one scene's place."""

    scenes: list[tuple[ListedScene, float]]
    """The page's scenes, each with the share of the scene's footprint it covers."""
    total: int
    """How many scenes cover at least the share asked, over all pages."""
    note: str | None = None
    """Why the page is empty, when it is."""


def same_place(
    catalog: Catalog,
    scene_id: int,
    *,
    min_overlap: float = DEFAULT_MIN_OVERLAP,
    offset: int = 0,
    limit: int = 50,
) -> SamePlace:
    """The other scenes that cover at least `min_overlap` (in (0, 1]) of this scene's
    footprint, ordered by acquisition time (unknown last, then by id), `limit` of them past
    `offset`. A scene without a footprint, or with a point, has none (an empty page with a
    note, not an error); an unknown scene is a `SceneNotFoundError`."""
    if not 0.0 < min_overlap <= 1.0:
        raise ValueError(f"min_overlap must lie in (0, 1]; found {min_overlap}")
    shares = catalog.overlaps(scene_id)
    if shares is None:
        alone = f"scene {scene_id} has no footprint with an area: no other scene lies at its place"
        return SamePlace([], 0, alone)
    kept = {i: share for i, share in shares.items() if share >= min_overlap}
    page = catalog.by_acquisition(list(kept), offset, limit) if kept else []
    note: str | None = None
    if not kept:
        note = f"no other scene covers {min_overlap:g} of scene {scene_id}'s footprint"
    elif not page:
        note = f"the offset lies past the last of the {len(kept)} scenes at this place"
    return SamePlace([(scene, kept[scene.id]) for scene in page], len(kept), note)
