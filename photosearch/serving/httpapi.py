"""The HTTP API and the web page: a thin FastAPI adapter over the library API.

Typed errors become JSON bodies with the status code each error carries (errors.py); bad input never
becomes a 500. Files are only ever addressed by catalog id.
"""

from __future__ import annotations

import hmac
import mimetypes
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Body, FastAPI, File, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, create_model
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from photosearch.config import ServerConfig
from photosearch.errors import ImageError, InvalidQueryError, PhotosearchError
from photosearch.facts import FACT_FIELDS, RESULT_FACTS, fact_types
from photosearch.library import Library
from photosearch.pathtext import display, from_text
from photosearch.query.limits import MAX_K
from photosearch.query.result import SearchPage, SearchResult
from photosearch.query.spec import SearchRequest
from photosearch.query.wire import from_params
from photosearch.serving.httproots import roots_router
from photosearch.serving.thumbnails import servable_path, thumbnail
from photosearch.serving.webguard import CSRF_HEADER, HostRule, WebGuard
from photosearch.stores.catalog import PhotoRecord

TOKEN_COOKIE = "photosearch_token"
# What a browser gets at / without the token: a 401 that asks for it (and shows nothing of the library).
_TOKEN_FORM = """<!doctype html><html lang="en"><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>photosearch: access token</title>
<style>body{font:16px system-ui,sans-serif;margin:15vh auto;max-width:26rem;padding:0 1rem}
input{width:100%;font:inherit;padding:.5rem;margin:.5rem 0;box-sizing:border-box}</style>
<h1>photosearch</h1><form method="get" action="/"><label for="token">This server needs its access token
(server.token):</label><input id="token" name="token" type="password" autocomplete="current-password"
autofocus required minlength="16"><button type="submit">Open</button></form></html>"""
# The OpenAPI description: the request rules of webguard.py, which every client must follow.
_API_RULES = f"""Requests must name this server in `Host` (127.0.0.1 or localhost; others via
`server.allowed_hosts`), must not come from another web page (`Origin`, `Sec-Fetch-Site`; see
`server.cors_origins`), and every POST must carry the header `{CSRF_HEADER}: 1` (or a JSON body, or
`Authorization: Bearer TOKEN`). Refusals are 400 (host) and 403 (origin, header)."""
K = Annotated[int, Query(ge=1, le=MAX_K, description="How many results (default: search.default_k)")]
OFFSET = Annotated[int, Query(ge=0, le=MAX_K - 1, description="Results to skip (paging)")]
PhotoId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="Catalog id of a photo")]  # SQLite's range
OFFLINE = Annotated[bool, Query(description="Also photos of missing (unmounted, moved) library folders")]
FOLDER = Annotated[str | None, Query(description="Only photos under this folder (a path in its stored form)")]
M = TypeVar("M", bound=BaseModel)
_BODY = """The GET parameters as JSON: {"q": ["2:sunset", {"text": "beach", "weight": 1}], "not": ["people"],
"like": [17], "upload": ["u..."], "unlike": [23], "unlike_upload": ["u..."], "from": "2019", "to": "2019",
"camera": "canon", "sort": "newest", "k": 30}"""


class SearchParams(BaseModel):
    """The search parameters, for the API's description; the request's own query string is what is read
    (query/wire.py), so that repeated and unknown parameters are handled as everywhere else."""

    q: list[str] = Field([], description="A text; 2:text weighs it twice. Repeatable.")
    not_: list[str] = Field([], alias="not", description="A text to subtract. Repeatable.")
    like: list[str] = Field([], description="An indexed photo's id (2:17 weighs it). Repeatable.")
    upload: list[str] = Field([], description="An upload's reference (POST /api/uploads). Repeatable.")
    unlike: list[str] = Field([], description="An indexed photo's id to subtract (less like it). Repeatable.")
    unlike_upload: list[str] = Field([], description="An upload's reference to subtract. Repeatable.")
    from_: str | None = Field(None, alias="from", description="From this date: YYYY, YYYY-MM or YYYY-MM-DD")
    to: str | None = Field(None, description="To this date, inclusive: 2019 is all of 2019")
    before: str | None = Field(None, description="Before this exact time (ISO 8601)")
    camera: str | None = Field(None, description="Part of the camera make or model, any case")
    near: str | None = Field(None, description="LAT,LON in degrees")
    within: str | None = Field(None, description="Kilometres from near (default 5)")
    place: str | None = Field(None, description="A city, region or country")
    location: str | None = Field(None, description="true: with a GPS position; false: without")
    type: str | None = Field(None, description="Formats: jpeg,png,heic,webp,gif,tiff,bmp")
    orientation: str | None = Field(None, description="landscape, portrait or square")
    folder: str | None = Field(None, description="Only photos under this folder (its stored form)")
    sort: str | None = Field(None, description="relevance, newest or oldest")
    cutoff: str | None = Field(None, description="auto, none or a score")
    rest: str | None = Field(None, description="true: also the photos below the cutoff, after the relevant ones")
    k: int | None = Field(None, ge=1, le=MAX_K, description="How many results (default: search.default_k)")
    offset: str | None = Field(None, description="Results to skip (paging a search)")
    cursor: str | None = Field(None, description="A timeline's next page")
    include_offline: str | None = Field(None, description="true: also photos of missing library folders")


class _ResultHead(BaseModel):
    id: int
    rank: int
    score: float | None  # cosine similarity to the query; null in a timeline
    path: str
    folder: str


class _ResultTail(BaseModel):
    size: int | None
    date: datetime | None  # the time taken, else (date_source "file") the file's mtime
    date_source: str | None
    place: str | None
    relevant: bool | None  # passed the relevance cutoff; null without a query
    offline: bool  # its library folder is missing: the file cannot be shown now
    thumbnail_url: str
    original_url: str


class _DetailsHead(BaseModel):
    id: int
    path: str
    folder: str
    status: str
    error: str | None
    size: int


class _DetailsTail(BaseModel):
    indexed_at: datetime | None
    thumbnail_url: str
    original_url: str


def _with_facts(name: str, head: type[M], facts: Sequence[str], tail: type[BaseModel]) -> type[M]:
    """The model ``name``: the fields of ``head``, the facts named (typed as PhotoFacts declares them), then those of
    ``tail``. So a fact added to PhotoFacts is in the responses and in their schema with no change here."""
    types = fact_types()
    between: dict[str, Any] = {fact: (types[fact], ...) for fact in facts}
    last: dict[str, Any] = {field: (info.annotation, info) for field, info in tail.model_fields.items()}
    return create_model(name, __base__=head, __module__=__name__, **between, **last)


if TYPE_CHECKING:  # mypy cannot see fields added at run time: it sees the models' fixed fields
    Result = _ResultHead
    PhotoDetails = _DetailsHead
else:
    Result = _with_facts("Result", _ResultHead, RESULT_FACTS, _ResultTail)  # the fields of a result's JSON form
    PhotoDetails = _with_facts("PhotoDetails", _DetailsHead, FACT_FIELDS, _DetailsTail)


class Results(BaseModel):
    results: list[Result]
    offset: int
    k: int
    more: bool  # another page may follow
    cursor: str | None = None  # a timeline's next page: pass it as cursor
    threshold: float | None = None  # the relevance cutoff's score, when there is one


def _folder(folder: str | None) -> Path | None:
    """A folder parameter: paths travel in their stored form (pathtext.py)."""
    return Path(from_text(folder)) if folder else None


def _answer(page: SearchPage, request: SearchRequest, default_k: int) -> Results:
    items = [Result.model_validate(r.to_dict() | _urls(r.id)) for r in page.results]
    return Results(results=items, offset=request.offset, k=request.k or default_k, more=page.more, cursor=page.cursor,
                   threshold=page.threshold)  # fmt: skip


def _page(results: list[SearchResult], offset: int, k: int) -> Results:
    page = results[offset : offset + k]
    items = [Result.model_validate(r.to_dict() | _urls(r.id)) for r in page]
    return Results(results=items, offset=offset, k=k, more=len(results) > offset + k)


def _details(record: PhotoRecord) -> PhotoDetails:
    fields = {name: getattr(record, name) for name in PhotoDetails.model_fields if hasattr(record, name)}
    error = record.error and display(record.error)
    shown = {"path": display(record.path), "folder": display(record.folder), "error": error}
    return PhotoDetails.model_validate(fields | shown | _urls(record.id))


def _urls(photo_id: int) -> dict[str, str]:
    return {"thumbnail_url": f"/api/photos/{photo_id}/thumbnail", "original_url": f"/api/photos/{photo_id}/original"}


async def _read_upload(file: UploadFile, limit: int) -> bytes:
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"upload larger than {limit} bytes (server.max_upload_bytes)")
    return data


def _multi(request: Request) -> dict[str, list[str]]:
    """The query string as the wire form reads it: each name's values (the access token is not a parameter)."""
    found: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        if key != "token":
            found.setdefault(key, []).append(value)
    return found


def _error(status: int, kind: str, detail: str) -> JSONResponse:
    # A message may quote a path the client sent that is no valid Unicode (lone surrogates): escaped, so the
    # JSON can be written at all.
    detail = detail.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": kind, "detail": detail}, status_code=status)


def create_app(library: Library, reindex: Callable[[], None] | None = None) -> FastAPI:
    """The app for one library. ``reindex`` starts a rebuild of every vector in the background (the daemon's, when
    it runs)."""
    config = library.config
    app = FastAPI(title="photosearch", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json",
                  description=_API_RULES)  # fmt: skip
    _install_security(app, config.server)
    _install_errors(app)
    default_k = config.search.default_k  # the one default of every search (the CLI's and the library's too)
    k_field = Field(default_k, ge=1, le=MAX_K, description="How many results (default: search.default_k)")
    params_model = create_model("SearchParams", __base__=SearchParams, __module__=__name__, k=(int, k_field))

    def roots() -> list[Path]:
        return [r.path for r in library.roots()]

    async def search(request: Request, params: SearchParams) -> Results:
        """Every parameter of the search (query/wire.py): texts with weights (q=2:sunset), negative texts (not),
        example photos by id (like) or upload reference (upload), filters, sort, cutoff, rest, k, offset, cursor."""
        wanted = from_params(_multi(request))
        return _answer(await run_in_threadpool(library.query, wanted), wanted, default_k)

    # The parameters' model has this app's default k (its schema shows it): an annotation FastAPI reads as is.
    search.__annotations__["params"] = Annotated[params_model, Query()]
    app.get("/api/search", response_model=Results, summary="Photos matching a query, or a filtered timeline")(search)

    @app.post("/api/search", response_model=Results, summary="A combined query as a JSON body")
    async def search_json(body: Annotated[dict[str, Any], Body(description=_BODY)]) -> Results:
        wanted = from_params(body)
        return _answer(await run_in_threadpool(library.query, wanted), wanted, default_k)

    @app.get("/api/facets", summary="Cameras, years and months, places and types present, with counts")
    async def facets(request: Request) -> dict[str, Any]:
        """The filter parameters of /api/search narrow what is counted (none: the whole library)."""
        wanted = from_params(_multi(request))
        if wanted.has_query or wanted.negatives or wanted.unlike:
            raise InvalidQueryError("facets count the photos that filters keep: give no q, not, like or upload")
        return await run_in_threadpool(library.facets, wanted.filters, wanted.include_offline)

    @app.post("/api/uploads", summary="An example image for queries: its reference (kept an hour)")
    async def upload(file: Annotated[UploadFile, File()]) -> dict[str, str]:
        data = await _read_upload(file, config.server.max_upload_bytes)
        return {"upload": await run_in_threadpool(library.upload, data, file.filename or "upload")}

    @app.get("/api/photos/{photo_id}", response_model=PhotoDetails, summary="A photo's details")
    async def photo(photo_id: PhotoId) -> PhotoDetails:
        return _details(await run_in_threadpool(library.photo, photo_id))

    @app.get("/api/photos/{photo_id}/similar", response_model=Results, summary="Photos like an indexed photo")
    async def similar(photo_id: PhotoId, k: K = default_k, offset: OFFSET = 0, folder: FOLDER = None,
                      include_offline: OFFLINE = False) -> Results:  # fmt: skip
        record = await run_in_threadpool(library.photo, photo_id)
        wanted = min(MAX_K, offset + k + 1)
        results = await run_in_threadpool(library.similar, record.path, wanted, _folder(folder), include_offline)
        return _page(results, offset, k)

    @app.post("/api/search/image", response_model=Results, summary="Photos like an uploaded image")
    async def search_image(file: Annotated[UploadFile, File()], k: K = default_k, offset: OFFSET = 0,
                           folder: FOLDER = None, include_offline: OFFLINE = False) -> Results:  # fmt: skip
        data = await _read_upload(file, config.server.max_upload_bytes)
        wanted = min(MAX_K, offset + k + 1)
        name = file.filename or "upload"
        where = _folder(folder)
        results = await run_in_threadpool(library.similar_to_image, data, wanted, name, include_offline, where)
        return _page(results, offset, k)

    @app.get("/api/photos/{photo_id}/thumbnail", summary="A JPEG thumbnail, upright", response_class=Response)
    async def photo_thumbnail(photo_id: PhotoId, request: Request) -> Response:
        record = await run_in_threadpool(library.photo, photo_id)
        size = config.server.thumbnail_size
        etag = f'"{record.content_hash or record.mtime_ns}-{size}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=86400"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        path = await run_in_threadpool(
            thumbnail, record, roots(), size, config.thumbnail_dir, config.index.max_image_pixels
        )
        return FileResponse(path, media_type="image/jpeg", headers=headers)

    @app.get("/api/photos/{photo_id}/original", summary="The original file", response_class=Response)
    async def original(photo_id: PhotoId) -> Response:
        record = await run_in_threadpool(library.photo, photo_id)
        path = servable_path(record, roots())
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/status", summary="Counts, indexing progress and daemon state")
    async def status() -> dict[str, Any]:
        return await run_in_threadpool(library.status_report)

    @app.get("/api/failures", summary="The files that failed to index, with the reasons")
    async def failures() -> dict[str, list[dict[str, str]]]:
        rows = await run_in_threadpool(library.failures)
        return {"failures": [{"path": display(path), "reason": display(reason)} for path, reason in rows]}

    @app.get("/api/lookup", summary="The catalog id of a path (compared with the catalog, never opened)")
    async def lookup(
        path: Annotated[str, Query(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")],
    ) -> dict[str, Any]:
        record = await run_in_threadpool(library.photo_at, Path(from_text(path)))
        if record is None:
            raise HTTPException(404, "that path is not in the catalog")
        return {"id": record.id, "status": record.status}

    @app.post("/api/reindex", status_code=202, summary="Rebuild every vector with the configured model")
    async def start_reindex() -> dict[str, str]:
        if reindex is None:
            raise HTTPException(503, "reindexing is not available in this server")
        reindex()
        return {"status": "started", "progress": "/api/status"}

    app.include_router(roots_router(library))
    _install_page(app)
    return app


def _install_page(app: FastAPI) -> None:
    web = Path(str(resources.files("photosearch.serving") / "web"))
    app.mount("/static", StaticFiles(directory=web), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((web / "index.html").read_text(encoding="utf-8"))


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(PhotosearchError)
    async def library_error(_request: Request, exc: PhotosearchError) -> JSONResponse:
        status = 415 if isinstance(exc, ImageError) else exc.http_status
        return _error(status, type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", []))
        return _error(422, "InvalidRequest", f"{where}: {first.get('msg')}")

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, "HTTPError", str(exc.detail))


def _install_security(app: FastAPI, server: ServerConfig) -> None:
    """The last middleware added runs first: the web guard (Host, origin, non-simple POSTs), then CORS, then the
    token. CORS before the token, because a browser's preflight carries no token: it is answered (for the listed
    origins only) without one, and the real request that follows still needs it."""
    if server.token is not None:
        _install_token(app, server.token)
    if server.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(server.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", CSRF_HEADER])  # fmt: skip
    app.add_middleware(WebGuard, hosts=HostRule.for_server(server.host, server.allowed_hosts),
                       cors_origins=server.cors_origins)  # fmt: skip


def _install_token(app: FastAPI, token: str) -> None:
    @app.middleware("http")
    async def require_token(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Every request carries the token: a Bearer header (API clients), or the cookie that a visit with
        ?token=... sets (the web page, whose <img> requests cannot send headers)."""
        header = request.headers.get("authorization", "")
        offered = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
        offered = offered or request.cookies.get(TOKEN_COOKIE) or request.query_params.get("token")
        if offered is None or not hmac.compare_digest(offered.encode(), token.encode()):
            if request.url.path == "/" and "text/html" in request.headers.get("accept", ""):
                return HTMLResponse(_TOKEN_FORM, status_code=401)  # a browser: ask for the token
            return _error(401, "Unauthorized", "this server needs its access token (server.token)")
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response
