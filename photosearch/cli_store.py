"""`photosearch store`: the library's stores as a whole. `store copy` moves a library (typically the data
directory's SQLite catalog and embedded Chroma) to a PostgreSQL database and a Chroma server, embedding nothing
again (stores/copy.py), and says which config lines then point photosearch at them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from photosearch.config import StoreConfig
    from photosearch.stores.copy import CopyReport


@click.group()
def store() -> None:
    """The library's stores: copy them to servers."""


class _StageBars:
    """A tqdm bar per stage of the copy (vectors of each collection, each table, the verification)."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: Any = None

    def stage(self, name: str, total: int) -> None:
        from tqdm import tqdm

        self.close()
        self._bar = tqdm(total=total, desc=name, disable=not self._enabled or None, dynamic_ncols=True)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _header(value: str) -> tuple[str, str]:
    name, colon, content = value.partition(":")
    if not colon or not name.strip():
        raise click.BadParameter(f"{value!r} is not a header: give it as 'Name: value'", param_hint="--to-header")
    return name.strip(), content.strip()


@store.command()
@click.option("--to-catalog", "catalog", required=True, help="The target PostgreSQL URL (postgresql+psycopg://...).")
@click.option("--to-vectors", "vectors", required=True, help="The target Chroma server (http://host:8000).")
@click.option("--to-tenant", "tenant", default="default_tenant", show_default=True, help="Its Chroma tenant.")
@click.option("--to-database", "database", default="default_database", show_default=True,
              help="Its Chroma database.")  # fmt: skip
@click.option("--to-header", "headers", multiple=True, help="'Name: value' sent to the server (a proxy's token).")
@click.option("--progress/--no-progress", default=True, help="Show progress bars (on a terminal).")
@click.pass_context
def copy(
    ctx: click.Context, catalog: str, vectors: str, tenant: str, database: str, headers: tuple[str, ...],
    progress: bool,
) -> None:  # fmt: skip
    """Copy this library (its catalog and vectors, nothing embedded again) to a PostgreSQL database and a Chroma
    server. Stopped, it finishes on the next run; it refuses a target that holds another library."""
    from photosearch.cli import _library
    from photosearch.config import StoreConfig, validated
    from photosearch.errors import ConfigError

    given = {"catalog": catalog, "vectors": vectors, "tenant": tenant, "database": database,
             "headers": dict(map(_header, headers))}  # fmt: skip
    try:
        target = validated(StoreConfig, given)  # the URL checks of store.catalog and store.vectors
    except ConfigError as exc:  # "catalog: must be ...": the option that gave it
        key, _, problem = str(exc).partition(": ")
        raise ConfigError(f"store copy: --to-{key.rstrip('s') if key == 'headers' else key} {problem}") from None
    bars = _StageBars(progress)
    with _library(ctx) as library:
        try:
            report = library.copy_to(target, bars)
        finally:
            bars.close()
    click.echo(_summary(report))
    click.echo("To use the copy, put this in the config file (the password as in --to-catalog):")
    for line in _config_lines(target):
        click.echo(f"  {line}")


def _summary(report: CopyReport) -> str:
    rows = ", ".join(f"{n} {table}" for table, n in report.rows.items())
    return (
        f"copied {report.vectors_copied} vectors ({report.vectors_skipped} there already) and rows: {rows}; "
        "verified: counts, every row, every indexed photo's vector, a sample query"
    )


def _config_lines(target: StoreConfig) -> list[str]:
    """The [store] table that points at the copy, with the catalog's password and the headers hidden."""
    from photosearch.stores.boundary import display_url
    from photosearch.stores.catalog_engine import display_catalog_url

    assert target.catalog is not None and target.vectors is not None
    lines = [
        "[store]",
        f'catalog = "{display_catalog_url(target.catalog)}"',
        f'vectors = "{display_url(target.vectors)}"',
    ]
    if target.tenant != "default_tenant":
        lines.append(f'tenant = "{target.tenant}"')
    if target.database != "default_database":
        lines.append(f'database = "{target.database}"')
    if target.headers:
        lines.append("headers = { " + ", ".join(f'"{name}" = "***"' for name in target.headers) + " }")
    return lines
