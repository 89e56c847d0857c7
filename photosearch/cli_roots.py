"""`photosearch roots`: the library folders. List them, add some, remove one (asked first) or move one.

Like search and status, each command asks a running `photosearch serve` when there is one (its daemon holds the
writer lock; the server changes roots between the daemon's batches), and the library directly otherwise.
"""

from __future__ import annotations

import json
import sys
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from photosearch.pathtext import display, to_text

if TYPE_CHECKING:
    from photosearch.library import Library
    from photosearch.serving.client import ServerClient


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per library folder.")
@click.pass_context
def roots(ctx: click.Context, as_json: bool) -> None:
    """The library folders: list them (photo counts, missing ones marked); add, remove or move one."""
    if ctx.invoked_subcommand is not None:
        return
    listing = _listing(ctx)
    if as_json:
        for row in listing["roots"]:
            click.echo(json.dumps(row))
        return
    if not listing["roots"]:
        click.echo("no library folders yet: run `photosearch index FOLDER` (or `photosearch roots add FOLDER`)")
    for row in listing["roots"]:
        mark = "  (missing or empty)" if row["missing"] else ""
        click.echo(f"{row['id']:>4}  {row['photos']:>7} photos  {row['path']}{mark}")
    for moved in listing["moved_roots"]:
        click.echo(f"library folder {moved['root']} looks moved to {moved['to']}: run `{moved['command']}`")


@roots.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
def add(ctx: click.Context, folders: tuple[Path, ...]) -> None:
    """Remember FOLDERS as library folders; `photosearch index` (or a running daemon) indexes them."""
    server = _server(ctx)
    if server is not None:
        added = [server.post_json("/api/roots", {"path": to_text(f.expanduser().absolute())})["path"] for f in folders]
    else:
        with _library(ctx) as library:
            added = [display(root.path) for root in library.add_roots(list(folders))]
    for path in added:
        click.echo(f"added library folder {path}: `photosearch index` indexes it")


@roots.command()
@click.argument("folder")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before removing.")
@click.pass_context
def remove(ctx: click.Context, folder: str, yes: bool) -> None:
    """Forget FOLDER (a library folder, or its id in `photosearch roots`): its photos leave the index, the files
    stay on disk."""
    server = _server(ctx)
    if server is not None:
        row = _pick(server.get("/api/roots")["roots"], folder)
        _confirm(row["path"], row["photos"], yes)
        reply = server.delete(f"/api/roots/{row['id']}")
    else:
        with _library(ctx) as library:
            row = _pick([r.to_dict() for r in library.roots_overview()[0]], folder)
            _confirm(row["path"], row["photos"], yes)
            reply = {"path": row["path"], "photos": library.remove_root(row["id"])}
    click.echo(f"removed library folder {reply['path']}: {reply['photos']} photos left the index (the files stay)")


@roots.command()
@click.argument("old")
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Record NEW even if it is not there now (an unmounted drive).")
@click.pass_context
def move(ctx: click.Context, old: str, new: Path, force: bool) -> None:
    """Point library folder OLD (its path or id) at NEW, where its photos are now: none is read or embedded again.
    Into a library folder that has them already (indexed after the move), the two become one."""
    server = _server(ctx)
    if server is not None:
        row = _pick(server.get("/api/roots")["roots"], old)
        body = {"path": to_text(new.expanduser().absolute()), "force": force}
        moved = server.post_json(f"/api/roots/{row['id']}/move", body)
    else:
        with _library(ctx) as library:
            row = _pick([r.to_dict() for r in library.roots_overview()[0]], old)
            now = library.move_root(row["id"], new, force=force)
            moved = next(r.to_dict() for r in library.roots_overview()[0] if r.root.id == now.id)
    click.echo(f"library folder {row['path']} is now {moved['path']} ({moved['photos']} photos, none embedded again)")


def _listing(ctx: click.Context) -> dict[str, Any]:
    server = _server(ctx)
    if server is not None:
        reply: dict[str, Any] = server.get("/api/roots")
        return reply
    with _library(ctx) as library:
        overview, moved = library.roots_overview()
        return {"roots": [r.to_dict() for r in overview], "moved_roots": [m.to_dict() for m in moved]}


def _pick(rows: list[dict[str, Any]], which: str) -> dict[str, Any]:
    """The library folder a command names: by path (as typed, or resolved), or by the id `photosearch roots` shows."""
    from photosearch.indexing.roots import find_root
    from photosearch.stores.catalog import RootInfo

    infos = [RootInfo(r["id"], Path(r["path"]), datetime.fromisoformat(r["added_at"]), None) for r in rows]
    target: Path | int = int(which) if which.isdigit() and not Path(which).exists() else Path(which)
    chosen = find_root(infos, target)
    return next(r for r in rows if r["id"] == chosen.id)


def _confirm(path: str, photos: int, yes: bool) -> None:
    """Ask on a terminal; without one, refuse unless --yes said so up front."""
    from photosearch.errors import ConfirmationError

    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfirmationError(f"removing {path} drops its {photos} photos from the index: add --yes to confirm")
    if not click.confirm(f"Remove library folder {path} and its {photos} photos from the index? (The files stay.)"):
        click.echo("nothing removed", err=True)
        raise SystemExit(1)


def _server(ctx: click.Context) -> ServerClient | None:
    from photosearch.cli import _running_server  # cli imports this module: its helpers are taken when needed

    return _running_server(ctx)


def _library(ctx: click.Context) -> AbstractContextManager[Library]:
    from photosearch.cli import _library

    return _library(ctx)
