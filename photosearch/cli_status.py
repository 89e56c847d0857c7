"""`photosearch status`'s output: the JSON form as it is, or a few aligned lines for people.

The data is the query interface's status_report() (query/api.py), the same whether the library or a running server
gave it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from photosearch.pathtext import display


def show_status(data: dict[str, Any], failures: Sequence[tuple[Path, str]] | None, as_json: bool) -> None:
    """``failures``: with --failed, the files that failed and why (None: not asked for)."""
    if as_json:
        if failures is not None:
            data = data | {"failures": [{"path": display(p), "reason": display(r)} for p, r in failures]}
        click.echo(json.dumps(data, indent=2))
        return
    print_status(data)
    print_daemon(data["daemon"])
    for path, reason in failures or ():
        click.echo(f"{display(path)}: {display(reason)}")


def show_stores_down(info: dict[str, Any], as_json: bool) -> None:
    """The catalog does not answer (librarystatus.catalog_down): where the stores are, which answers, and why not."""
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"data      {info['data_dir']}")
    click.echo(f"catalog   {info['catalog']}  (not answering: {info['catalog_error']})")
    _echo_vectors(info)


def print_status(info: dict[str, Any]) -> None:
    for root in info["roots"]:
        mark = "  (missing or empty)" if root in info["missing_roots"] else ""
        click.echo(f"library   {root}{mark}")
    for moved in info.get("moved_roots", []):
        click.echo(f"hint      library folder {moved['root']} looks moved to {moved['to']}: run `{moved['command']}`")
    if not info["roots"]:
        click.echo("library   (none yet: run `photosearch index FOLDER`)")
    click.echo(f"photos    {info['indexed']} indexed, {info['pending']} pending, {info['failed']} failed")
    click.echo(f"model     {info['model'] or '(nothing indexed yet)'}")
    if reindex := info.get("reindex"):
        click.echo(f"reindex   to {reindex['model']}: {reindex['done']}/{reindex['total']} photos "
                   "(search uses the current model until it completes)")  # fmt: skip
    elif not info["model_matches"]:
        click.echo(f"          configured: {info['configured_model']} -> run `photosearch reindex`")
    click.echo(f"data      {info['data_dir']}")
    if info.get("catalog"):
        click.echo(f"catalog   {info['catalog']}")
    if info.get("vectors_bytes") is None and info.get("vectors_at"):  # on a Chroma server, not in data_dir
        _echo_vectors(info)
    if info.get("workers"):
        click.echo(f"indexers  {len(info['workers'])} running: {', '.join(info['workers'])}")
    click.echo(f"size      catalog {_mb(info['catalog_bytes'])}, vectors {_mb(info['vectors_bytes'])}")


def _echo_vectors(info: dict[str, Any]) -> None:
    answer = f"  (not answering: {info['vectors_error']})" if info.get("vectors_error") else ""
    click.echo(f"vectors   {info['vectors_at']}{answer}")


def print_daemon(daemon: dict[str, Any]) -> None:
    if daemon["running"]:
        click.echo(f"daemon    running (pid {daemon['pid']}, since {daemon['since']})")
    else:
        click.echo("daemon    not running (start it with `photosearch watch`)")
    click.echo(
        f"queue     {daemon['queue']} waiting; indexed {daemon['indexed_last_minute']} in the last minute, "
        f"{daemon['indexed_last_hour']} in the last hour"
    )
    if daemon["last_error"]:
        click.echo(f"error     {daemon['last_error']['at']}: {daemon['last_error']['message']}")


def _mb(n: int | None) -> str:
    return "(on the server)" if n is None else f"{n / 1_000_000:.1f} MB"
