"""The command line: a thin adapter over photosearch.library.

It is the edge: it reads os.environ (into the Config, once per command: _config), turns typed errors into one line
on stderr and an exit code, and shows tracebacks only with --debug. search, similar and status ask the query
interface (query/api.py), which a running `photosearch serve` answers when there is one, the library otherwise
(_queries). Heavy modules are imported inside the commands so that `photosearch --help` stays instant.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from photosearch.cli_roots import roots as roots_command
from photosearch.cli_search import filter_options, filters_of, print_facets, print_page, print_results, search_request
from photosearch.cli_status import show_status, show_stores_down
from photosearch.cli_store import store as store_command
from photosearch.pathtext import display
from photosearch.query.limits import MAX_K
from photosearch.query.spec import SORTS

if TYPE_CHECKING:
    from photosearch.config import Config
    from photosearch.indexing.indexer import IndexReport
    from photosearch.library import Library
    from photosearch.query.api import Queries
    from photosearch.serving.client import ServerClient


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Config file (TOML).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the catalog and vectors live.")
@click.option("--model", help="CLIP model: Hugging Face name or local folder.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="photosearch")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, data_dir: Path | None, model: str | None, debug: bool) -> None:
    """Semantic search over your photo folders, on your own machine."""
    ctx.obj = {"config_path": config_path, "overrides": {"data_dir": data_dir, "model.name": model}, "debug": debug}


cli.add_command(roots_command)
cli.add_command(store_command)


def _config(ctx: click.Context) -> Config:
    """The configuration (defaults, file, environment, flags), loaded on first use and kept for the command."""
    if ctx.obj.get("config") is None:
        from photosearch.config import load_config

        ctx.obj["config"] = load_config(ctx.obj["config_path"], env=os.environ, overrides=ctx.obj["overrides"])
    config: Config = ctx.obj["config"]
    return config


@contextmanager
def _library(ctx: click.Context, *, long_running: bool = False, text_query: bool = False) -> Iterator[Library]:
    """The library; ``text_query``: the command will encode a text query, whose encoder starts loading now."""
    config = _config(ctx)
    prefetched = None
    if text_query:
        from photosearch.models.textencoder import Prefetched

        prefetched = Prefetched(config.model)  # before the imports below, which it overlaps
    from photosearch.library import Library

    _log_to_file(config.log_dir)
    with _decoder_output_to_log(ctx, long_running), Library.open(config, text_encoder_factory=prefetched) as library:
        yield library


def _running_server(ctx: click.Context) -> ServerClient | None:
    """A `photosearch serve` for this data directory, if one runs: asking it avoids loading the model."""
    from photosearch.serving.discovery import running_server

    found = running_server(_config(ctx).data_dir)
    if not found:
        return None
    from photosearch.serving.client import ServerClient

    return ServerClient(found["url"], found.get("token"))


@contextmanager
def _queries(ctx: click.Context, text_query: bool = False) -> Iterator[Queries]:
    """The query interface: a running server for this data directory (RemoteLibrary), else the library itself."""
    server = _running_server(ctx)
    if server is not None:
        from photosearch.serving.remote import RemoteLibrary

        yield RemoteLibrary(server, _config(ctx))
        return
    with _library(ctx, text_query=text_query) as library:
        yield library


def _decoder_output_to_log(ctx: click.Context, enabled: bool) -> AbstractContextManager[None]:
    """Long-running commands: what C decoders print on fd 2 (libtiff's warnings) to the log, not through the
    progress bar. Not with --debug, where seeing all of it where it happens matters more."""
    from photosearch.nativeoutput import native_output_to_log

    return native_output_to_log() if enabled and not ctx.obj.get("debug") else nullcontext()


class _TqdmProgress:
    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: Any = None

    def start(self, total: int) -> None:
        if self._bar is not None:  # a run of several passes (shared stores): the same bar, a larger total
            self._bar.total = total
            self._bar.refresh()
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="photo", disable=not self._enabled or None, dynamic_ncols=True)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@cli.command()
@click.argument("folders", nargs=-1, type=click.Path(path_type=Path))
@click.option("--progress/--no-progress", default=True, help="Show a progress bar (on a terminal).")
@click.pass_context
def index(ctx: click.Context, folders: tuple[Path, ...], progress: bool) -> None:
    """Index FOLDERS (remembered as library roots), or every known root when none are given."""
    bar = _TqdmProgress(progress)
    with _library(ctx, long_running=True) as library:
        try:
            report = library.index(list(folders), progress=bar)
        finally:
            bar.close()
    _print_report(report)


@cli.command()
@click.option("--progress/--no-progress", default=True, help="Show a progress bar (on a terminal).")
@click.option("--cancel", is_flag=True, help="Abandon the reindex under way and free its space.")
@click.pass_context
def reindex(ctx: click.Context, progress: bool, cancel: bool) -> None:
    """Rebuild every vector with the configured model (needed after changing the model), beside the current
    index: search keeps answering from it until the new one is complete. Stopped, it carries on next time."""
    if cancel:
        with _library(ctx) as library:
            cancelled = library.cancel_reindex()
        click.echo(f"cancelled the reindex to {cancelled.model.describe()}" if cancelled else "no reindex under way")
        return
    bar = _TqdmProgress(progress)
    with _library(ctx, long_running=True) as library:
        try:
            report = library.reindex(progress=bar)
        finally:
            bar.close()
    _print_report(report)


def _print_report(report: IndexReport) -> None:
    if report.handed_to_pid is not None:
        click.echo(
            f"photosearch watch (pid {report.handed_to_pid}) is running for this library: it indexes the "
            "folders now (see `photosearch status`)"
        )
        return
    click.echo(
        f"{report.new} new, {report.changed} changed, {report.unchanged} unchanged, {report.moved} moved, "
        f"{report.removed} removed, {report.failed} failed "
        f"({report.embedded} embedded, {report.reused} reused from identical files) in {report.seconds:.1f}s"
    )
    moved = {m.root for m in report.moved_roots}  # for these, the hint below says more
    for root in (r for r in report.missing_roots if r not in moved):
        click.echo(f"warning: library folder {display(root)} is missing (unmounted?); its photos were kept", err=True)
    for hint in report.moved_roots:
        click.echo(f"warning: {hint.message()}", err=True)
    if report.failed:
        click.echo("see `photosearch status --failed` for the reasons", err=True)


_K = click.option("-k", "--top", "k", type=click.IntRange(1, MAX_K),
                  help="How many results (default: search.default_k in the config).")  # fmt: skip
_JSON = click.option("--json", "as_json", is_flag=True, help="One JSON object per result line.")
_FOLDER = click.option("--folder", type=click.Path(path_type=Path), help="Only photos under this folder.")
_OFFLINE = click.option(
    "--include-offline", is_flag=True, help="Also photos of missing library folders (unmounted, or moved)."
)


@cli.command()
@click.argument("query", required=False)
@click.option("--and", "also", multiple=True, metavar="TEXT", help="Another text the photos should match.")
@click.option("--not", "negatives", multiple=True, metavar="TEXT", help="A text to subtract (repeatable).")
@click.option("--like", "likes", multiple=True, metavar="IMAGE", help="An example image: an indexed photo or any file.")
@click.option("--unlike", "unlikes", multiple=True, metavar="IMAGE", help="An example image to subtract.")
@click.option("--weight", type=float, help="The weight of QUERY (else 1; any text takes W:text, as 2:sunset).")
@filter_options
@click.option("--sort", type=click.Choice(SORTS), help="Order (default: relevance with a query, newest without).")
@click.option("--cutoff", help="auto, none or a score (default: auto when sorted by date, else none).")
@click.option("--rest", is_flag=True, help="With a cutoff: also the photos below it, after the relevant ones.")
@_K
@click.option("--offset", type=click.IntRange(0, MAX_K - 1), default=0, help="Results to skip (paging).")
@click.option("--cursor", help="A timeline's next page (printed after a page of a timeline).")
@_JSON
@_OFFLINE
@click.pass_context
def search(ctx: click.Context, /, query: str | None, as_json: bool, **options: Any) -> None:
    """Photos that match a text QUERY (and --and/--not/--like), best first; filtered; or, with only filters, the
    library as a timeline."""
    request = search_request(query, options)
    with _queries(ctx, text_query=bool(request.texts)) as queries:
        page = queries.query(request)
    print_page(page, as_json, dates=request.order != "relevance")


@cli.command()
@click.argument("photo", type=click.Path(path_type=Path))
@_K
@_JSON
@_FOLDER
@_OFFLINE
@click.pass_context
def similar(
    ctx: click.Context, photo: Path, k: int | None, as_json: bool, folder: Path | None, include_offline: bool
) -> None:
    """Photos that look like PHOTO (an indexed photo or any image file)."""
    with _queries(ctx) as queries:
        results = queries.similar(photo, k=k, folder=folder, include_offline=include_offline)
    print_results(results, as_json)


@cli.command()
@filter_options
@click.option("--json", "as_json", is_flag=True, help="The facets as one JSON object (GET /api/facets' form).")
@_OFFLINE
@click.pass_context
def facets(ctx: click.Context, /, as_json: bool, include_offline: bool, **options: Any) -> None:
    """What the library holds, with counts: years and months, cameras, places, types, with and without a position
    (among the photos the filters keep): the values to filter a search by."""
    with _queries(ctx) as queries:
        found = queries.facets(filters_of(options), include_offline)
    print_facets(found, as_json)


@cli.command()
@click.pass_context
def watch(ctx: click.Context) -> None:
    """Keep the index current: catch up, then follow changes as they happen (runs in the foreground)."""
    from photosearch.watching.daemon import Daemon

    _log_to_stderr()
    with _library(ctx, long_running=True) as library:
        Daemon(library).run()


@cli.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1; others need server.token).")
@click.option("--port", type=click.IntRange(1, 65535), help="TCP port (default 8765).")
@click.option("--watch/--no-watch", default=True, help="Also watch the library and keep the index current.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, watch: bool) -> None:
    """Serve the HTTP API and the web page (and, by default, the watch daemon) in one process."""
    from photosearch.serving.serve import check_binding
    from photosearch.serving.serve import serve as run_server

    config = _config(ctx)
    host = host or config.server.host
    port = port or config.server.port
    check_binding(config, host)  # before the banner: a refused binding must not announce that it serves
    _log_to_file(config.log_dir)
    _log_to_stderr()
    click.echo(f"photosearch: serving on http://{host}:{port}  (Ctrl-C to stop)", err=True)
    with _decoder_output_to_log(ctx, True):
        run_server(config, host, port, watch=watch)


@cli.command()
@_JSON
@click.option("--failed", "show_failed", is_flag=True, help="List the files that failed, with reasons.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, show_failed: bool) -> None:
    """What is indexed, pending and failed; the model; where the data lives."""
    from photosearch.errors import CatalogUnavailableError

    try:
        with _queries(ctx) as queries:
            data = queries.status_report()
            failures = queries.failures() if show_failed else None
    except CatalogUnavailableError as exc:  # still say where the stores are and which of them answers
        from photosearch.librarystatus import catalog_down

        show_stores_down(catalog_down(_config(ctx), exc), as_json)
        raise
    show_status(data, failures, as_json)


def _log_to_file(log_dir: Path) -> None:
    """Keep a rotating log of what the library did (runs, failures) in the data directory."""
    import logging
    from logging.handlers import RotatingFileHandler

    log_dir.mkdir(parents=True, exist_ok=True)
    # backslashreplace: a file name that is not UTF-8 shows as \xNN instead of breaking the log line
    handler = RotatingFileHandler(
        log_dir / "photosearch.log", maxBytes=5_000_000, backupCount=3, encoding="utf-8", errors="backslashreplace"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("photosearch")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logging.getLogger("py.warnings").addHandler(handler)  # Python warnings, once captured (_quiet_libraries)


def _log_to_stderr() -> None:
    """Long-running commands (watch, serve) also log what they do to the terminal."""
    import logging

    from photosearch.nativeoutput import StderrHandler

    handler = StderrHandler()  # the terminal even while fd 2 goes to the log (_decoder_output_to_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logging.getLogger("photosearch").addHandler(handler)


def _quiet_libraries(debug: bool) -> None:
    """Library chatter (weight-loading bars, corrupt-EXIF warnings) is noise on a terminal; --debug keeps it there."""
    if debug:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import logging

    # Python warnings (PIL's on corrupt EXIF, ...) to the log file; until _log_to_file, nowhere (not lastResort).
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(logging.NullHandler())


def run() -> None:
    """The console script: ``main()``, then an exit that skips the interpreter's teardown.

    Tearing down an interpreter that loaded chromadb, ONNX Runtime or torch (their thread pools, ~1 GB of objects)
    takes 0.4-0.6 s on 2 cores: a quarter of a cold `photosearch search`. Nothing is lost by skipping it: every
    command has closed its stores when main() returns, and both stores survive even a kill -9 at any moment
    (see "Consistency" in the README), so what is left is only flushing our own output.
    """
    import logging

    main()  # errors leave through sys.exit (SystemExit), with the normal teardown
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()  # flushes the log file's handler
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _quiet_libraries(debug)
    if debug:
        import logging

        logging.getLogger("photosearch").addHandler(logging.StreamHandler())
        logging.getLogger("photosearch").setLevel(logging.DEBUG)
    try:
        cli.main(args=args, prog_name="photosearch", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("photosearch: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("photosearch: interrupted; run the command again to continue where it stopped", err=True)
        sys.exit(130)
    except Exception as exc:
        from photosearch.errors import PhotosearchError

        if debug:
            traceback.print_exc()
        if isinstance(exc, PhotosearchError):
            click.echo(f"photosearch: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        click.echo(f"photosearch: unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)",
                   err=True)  # fmt: skip
        sys.exit(70)
