"""The library folders in the HTTP API (/api/roots): list, add, remove, move. A thin adapter over the Library.

Paths travel in their stored form (pathtext.py) and must be absolute: the server's working directory means
nothing to a client. Changes are JSON-bodied POSTs and a DELETE, which a page of another origin cannot send
(webguard.py). A removal or move waits for the daemon's batch in flight (Library.move_root), then runs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from photosearch.indexing.roots import find_root
from photosearch.library import Library
from photosearch.pathtext import display, from_text

RootId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="Catalog id of a library folder")]
FolderText = Annotated[
    str, Field(min_length=1, max_length=4096, pattern=r"^[^\x00]+$", description="An absolute folder path")
]


class RootOut(BaseModel):
    id: int
    path: str
    photos: int  # catalog rows of any status: what a removal drops
    missing: bool  # gone, empty or unreadable: unmounted, or moved
    moved_to: str | None  # where a missing folder's photos turned up (see moved_roots)
    added_at: datetime
    last_indexed_at: datetime | None


class MovedRootOut(BaseModel):
    root: str
    to: str
    command: str  # the CLI command that records the move


class RootsOut(BaseModel):
    roots: list[RootOut]
    moved_roots: list[MovedRootOut]


class FolderIn(BaseModel):
    path: FolderText


class MoveIn(BaseModel):
    path: FolderText
    force: bool = Field(False, description="Record the new folder even if it is not there now (unmounted)")


class Removed(BaseModel):
    id: int
    path: str
    photos: int  # how many photos left the index


def _folder(text: str) -> Path:
    path = Path(from_text(text))
    if not path.is_absolute():
        raise HTTPException(422, f"path must be absolute, got {display(text)!r}")
    return path


def roots_router(library: Library) -> APIRouter:
    router = APIRouter(prefix="/api/roots", tags=["library folders"])

    def listing() -> RootsOut:
        roots, moved = library.roots_overview()
        return RootsOut(roots=[RootOut.model_validate(r.to_dict()) for r in roots],
                        moved_roots=[MovedRootOut.model_validate(m.to_dict()) for m in moved])  # fmt: skip

    def one(root_id: int) -> RootOut:
        return next(r for r in listing().roots if r.id == root_id)

    @router.get("", response_model=RootsOut, summary="The library folders, with counts; missing ones that moved")
    async def list_roots() -> RootsOut:
        return await run_in_threadpool(listing)

    @router.post("", status_code=201, response_model=RootOut, summary="Add a library folder (the daemon indexes it)")
    async def add_root(body: FolderIn) -> RootOut:
        (added,) = await run_in_threadpool(library.add_roots, [_folder(body.path)])
        return await run_in_threadpool(one, added.id)

    @router.delete("/{root_id}", response_model=Removed, summary="Forget a library folder and its photos")
    async def remove_root(root_id: RootId) -> Removed:
        root = find_root(await run_in_threadpool(library.roots), root_id)
        photos = await run_in_threadpool(library.remove_root, root_id)
        return Removed(id=root_id, path=display(root.path), photos=photos)

    @router.post("/{root_id}/move", response_model=RootOut, summary="Point a library folder at its new place")
    async def move_root(root_id: RootId, body: MoveIn) -> RootOut:
        moved = await run_in_threadpool(library.move_root, root_id, _folder(body.path), body.force)
        return await run_in_threadpool(one, moved.id)

    return router
