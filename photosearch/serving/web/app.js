// photosearch web page: plain ES module, no dependencies, no build step.
const $ = (id) => document.getElementById(id);
const PAGE = 30;
const SIMILAR = 12;
const SCROLL_AHEAD = 400; // px below the window at which the next page starts loading
const MAX_K = 1000;
const BROWSER_FORMATS = new Set(["JPEG", "PNG", "GIF", "WEBP", "BMP", "AVIF", "MPO"]);
const nf = new Intl.NumberFormat();

class ApiError extends Error {}

// Every call to the server. An error becomes one readable line from the API's {"error", "detail"} body.
// The X-Photosearch header is what the server requires of a POST: no form or other site's page can send it.
async function api(path, init = {}) {
  let response;
  try {
    const headers = { "X-Photosearch": "1", ...init.headers };
    response = await fetch(path, { credentials: "same-origin", ...init, headers });
  } catch {
    throw new ApiError("the server is not reachable (is `photosearch serve` still running?)");
  }
  const body = await response.json().catch(() => null);
  if (response.status === 401) showTokenForm();
  if (!response.ok) throw new ApiError(body?.detail || body?.error || `${response.status} ${response.statusText}`);
  return body;
}

const baseName = (path) => path.split(/[\\/]/).pop() || path;
const score = (r) => (r.score == null ? "" : r.score.toFixed(2));

function showError(what, error) {
  if (error && !$("token").hidden) return; // the token form says it
  $("error").textContent = error ? `${what}: ${error.message}` : "";
  $("error").hidden = !error;
}

// ---- results: a query (words, example photos, an upload) or a timeline, with filters; all of it in the URL -----
// The URL's query string is the state: q, like/unlike (photo ids), upload (a reference the server keeps an hour),
// the filters, sort, include_offline. Every change pushes a new URL, so a search can be bookmarked and the back
// button works; the page reads the URL back (fromUrl) to show it.
const FILTERS = ["from", "to", "camera", "place", "type", "orientation", "sort"];
const TIMELINE_PAGE = 60;
const monthName = new Intl.DateTimeFormat(undefined, { month: "long", year: "numeric" });
let view = { kind: null, items: [] };

function startView(next) {
  view = { items: [], more: false, loading: false, divided: false, month: null, cursor: null, ...next };
  $("grid").replaceChildren();
  $("empty").hidden = true;
  $("start").hidden = true;
  $("example").hidden = !next.file;
  showError();
}

function stateParams() {
  const params = new URLSearchParams(location.search);
  params.delete("token");
  return params;
}

function go(params, push = true) {
  const url = new URL(location.href);
  url.search = params.toString();
  if (url.href !== location.href) history[push ? "pushState" : "replaceState"]({}, "", url);
  fromUrl();
}

function searchText(q) {
  const params = stateParams();
  for (const key of ["q", "like", "unlike", "upload"]) params.delete(key);
  if (q.trim()) params.set("q", q.trim());
  if (!q.trim() && params.get("sort") === "relevance") params.delete("sort");
  go(params);
}

async function searchImage(file) {
  if (!file) return;
  if ($("viewer").open) $("viewer").close();
  URL.revokeObjectURL($("example").src);
  $("example").onerror = () => ($("example").hidden = true);
  $("example").src = URL.createObjectURL(file);
  $("example").alt = `Example: ${file.name}`;
  $("example").hidden = false;
  $("summary").textContent = "Reading the image…";
  try {
    const form = new FormData();
    form.append("file", file);
    const { upload } = await api("/api/uploads", { method: "POST", body: form });
    const params = stateParams();
    for (const key of ["q", "like", "unlike", "upload"]) params.delete(key);
    params.set("upload", upload);
    exampleName = file.name;
    go(params);
  } catch (error) {
    $("summary").textContent = "";
    $("example").hidden = true;
    showError("Search by image failed", error);
  }
}
let exampleName = null;

function refine(photoId, more) {
  const params = stateParams();
  params.append(more ? "like" : "unlike", photoId); // "less" needs a query to subtract from (showPhoto)
  if ($("viewer").open) $("viewer").close();
  go(params);
}

function describe(params) {
  const parts = [];
  if (params.get("q")) parts.push(`“${params.get("q")}”`);
  const likes = params.getAll("like").length + params.getAll("upload").length;
  if (likes) parts.push(likes === 1 && exampleName && params.has("upload") ? `like ${exampleName}` : `like ${likes} photo${likes > 1 ? "s" : ""}`);
  const unlikes = params.getAll("unlike").length;
  if (unlikes) parts.push(`less like ${unlikes} photo${unlikes > 1 ? "s" : ""}`);
  return parts.join(", ");
}

async function loadMore() {
  const v = view;
  if (v.loading || !v.kind) return;
  v.loading = true;
  v.failed = false;
  $("more").disabled = true;
  $("summary").textContent = v.items.length ? "Loading more…" : v.kind === "search" ? "Searching…" : "Loading…";
  try {
    const params = new URLSearchParams(v.params);
    if ($("include-offline").checked) params.set("include_offline", "true");
    if (v.kind === "search") {
      // The page's own cutoff: the relevant matches first, the rest below a divider rather than hidden.
      params.set("cutoff", "auto");
      params.set("rest", "true");
      params.set("k", PAGE);
      params.set("offset", v.items.length);
    } else {
      params.set("k", TIMELINE_PAGE);
      if (!params.get("sort")) params.set("sort", "newest");
      if (v.cursor) params.set("cursor", v.cursor);
    }
    const data = await api(`/api/search?${params}`);
    if (v !== view) return;
    const start = v.items.length;
    v.items.push(...data.results);
    v.cursor = data.cursor;
    v.more = data.more && (v.kind === "timeline" || v.items.length < MAX_K);
    showError();
    const nodes = [];
    data.results.forEach((r, i) => {
      if (v.kind === "timeline") {
        const month = r.date ? r.date.slice(0, 7) : "undated";
        if (month !== v.month) nodes.push(monthHeader(month, r.date));
        v.month = month;
      } else if (r.relevant === false && !v.divided) {
        v.divided = true;
        nodes.push(Object.assign(document.createElement("li"), { className: "divider", textContent: "less relevant" }));
      }
      const node = tile(r, () => openViewer(v.items, start + i));
      if (r.relevant === false) node.firstChild.classList.add("less");
      nodes.push(node);
    });
    $("grid").append(...nodes);
  } catch (error) {
    if (v !== view) return;
    showError(v.kind === "search" ? "Search failed" : "Loading the photos failed", error);
    v.failed = true;
  } finally {
    if (v === view) {
      v.loading = false;
      summarize();
    }
  }
}

function monthHeader(month, date) {
  const li = document.createElement("li");
  li.className = "month";
  const h = document.createElement("h2");
  h.textContent = month === "undated" ? "No date" : monthName.format(new Date(date));
  li.append(h);
  return li;
}

function summarize() {
  const { kind, items, more } = view;
  const n = nf.format(items.length);
  if (view.failed && !items.length) $("example").hidden = true;
  if (kind === "search") {
    const relevant = items.filter((r) => r.relevant !== false).length;
    const what = describe(view.params);
    const label = `${items.length === 1 ? "match" : "matches"} for ${what} (${nf.format(relevant)} relevant)`;
    $("summary").textContent = view.failed && !items.length ? "" : items.length
      ? `${more ? "" : "All "}${n} ${label}${more ? " · scroll for more" : ""}`
      : `No photos for ${what}`;
  } else {
    const filtered = FILTERS.some((key) => key !== "sort" && view.params.get(key));
    $("summary").textContent = view.failed && !items.length ? "" : items.length
      ? `${more ? "" : "All "}${n} photo${items.length === 1 ? "" : "s"}${filtered ? " matching the filters" : ""}${more ? " · scroll for more" : ""}`
      : filtered ? "No photos match the filters" : "";
    if (!items.length && !filtered && !view.failed && libraryEmpty) showStart();
  }
  $("more").hidden = !more || (view.failed && !items.length);
  $("more").disabled = false;
  // Still near the bottom after a page (a tall window): the observer sees no change, so go on here.
  if (more && !view.failed && $("more").getBoundingClientRect().top < innerHeight + SCROLL_AHEAD) requestAnimationFrame(loadMore);
}

const dayName = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const shortDate = (r) => (r.date ? dayName.format(new Date(r.date)) : "");

function tile(r, open) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "tile";
  button.title = r.path;
  const img = new Image();
  img.loading = "lazy";
  img.decoding = "async";
  img.src = r.thumbnail_url;
  img.alt = baseName(r.path);
  if (r.width && r.height) [img.width, img.height] = [r.width, r.height];
  const caption = document.createElement("span");
  caption.className = "caption";
  caption.innerHTML = `<span class="name"></span><span class="score" title="similarity score"></span>`;
  caption.firstChild.textContent = baseName(r.path);
  caption.lastChild.textContent = r.score == null ? shortDate(r) : score(r);
  if (r.score == null) caption.lastChild.title = r.date_source === "file" ? "the file's date (no time taken)" : "taken";
  if (r.offline) {
    // Its library folder is missing (unplugged, or moved): the photo cannot be shown, only found.
    const badge = Object.assign(document.createElement("span"), { className: "badge", textContent: "offline" });
    caption.insertBefore(badge, caption.lastChild);
    button.classList.add("offline");
    button.title += " (offline: its library folder is missing)";
  }
  button.append(img, caption);
  button.addEventListener("click", open);
  li.append(button);
  return li;
}

// Infinite scroll: the "More" button loads the next page by itself when it scrolls into view.
new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting) && view.more) loadMore();
}, { rootMargin: `${SCROLL_AHEAD}px` }).observe($("more"));
$("more").addEventListener("click", loadMore);

// Arrow keys move between thumbnails in the grid.
$("grid").addEventListener("keydown", (event) => {
  const tiles = [...$("grid").querySelectorAll(".tile")];
  const at = tiles.indexOf(document.activeElement);
  if (at < 0) return;
  const columns = tiles.filter((t) => t.offsetTop === tiles[0].offsetTop).length || 1;
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns }[event.key];
  const target = step && tiles[at + step];
  if (target) {
    event.preventDefault();
    target.focus();
  }
});

// ---- the large view ----------------------------------------------------------------------------------
const viewer = { list: [], index: 0, shown: 0 };

function openViewer(list, index) {
  Object.assign(viewer, { list, index });
  showPhoto(); // first: it disables ‹ or ›, which must not be what showModal focuses
  if (!$("viewer").open) $("viewer").showModal();
}

async function showPhoto() {
  const r = viewer.list[viewer.index];
  const shown = ++viewer.shown;
  const img = $("v-img");
  img.src = r.thumbnail_url;
  img.alt = baseName(r.path);
  $("v-title").textContent = baseName(r.path);
  const focused = document.activeElement;
  $("v-prev").disabled = viewer.index === 0;
  $("v-next").disabled = viewer.index === viewer.list.length - 1;
  $("v-original").href = r.original_url;
  $("v-less").disabled = view.kind !== "search"; // nothing to subtract from in a timeline
  $("v-details").replaceChildren(...(r.score == null ? [] : [row("Match", score(r))]));
  $("v-similar").replaceChildren();
  // Focus on a button that just went away or got disabled: keep it in the view (keys keep working).
  if ($("viewer").open && (focused.disabled || !focused.isConnected)) $("viewer").focus();
  $("v-similar").setAttribute("aria-busy", "true");
  const [details, similar] = await Promise.allSettled([
    api(`/api/photos/${r.id}`),
    api(`/api/photos/${r.id}/similar?k=${SIMILAR}`),
  ]);
  if (shown !== viewer.shown) return;
  if (details.status === "fulfilled") {
    const d = details.value;
    fillDetails(d, r);
    if (BROWSER_FORMATS.has(d.format)) {
      const original = new Image();
      original.onload = () => shown === viewer.shown && (img.src = original.src);
      original.src = d.original_url;
    }
  } else {
    $("v-details").append(row("Error", details.reason.message));
  }
  $("v-similar").removeAttribute("aria-busy");
  if (similar.status === "fulfilled") {
    const items = similar.value.results;
    $("v-similar").replaceChildren(...items.map((s, i) => tile(s, () => openViewer(items, i))));
    if (!items.length) $("v-similar").innerHTML = `<li class="muted">No other photos yet.</li>`;
  } else {
    $("v-similar").innerHTML = `<li class="error"></li>`;
    $("v-similar").firstChild.textContent = similar.reason.message;
  }
}

function row(term, value, href) {
  const frag = document.createDocumentFragment();
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = term;
  if (href) {
    const a = Object.assign(document.createElement("a"), { href, textContent: value, target: "_blank", rel: "noopener" });
    dd.append(a);
  } else dd.textContent = value;
  frag.append(dt, dd);
  return frag;
}

function fillDetails(d, r) {
  const rows = [row("Path", d.path)];
  rows[0].lastChild.className = "path";
  if (d.taken_at) rows.push(row("Taken", new Date(d.taken_at).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" })));
  const make = d.camera_make?.trim() || "";
  const model = d.camera_model?.trim() || "";
  const camera = model.toLowerCase().startsWith(make.toLowerCase()) ? model : `${make} ${model}`.trim();
  if (camera) rows.push(row("Camera", camera));
  if (d.width && d.height) rows.push(row("Size", `${d.width} × ${d.height} · ${(d.width * d.height / 1e6).toFixed(1)} MP`));
  rows.push(row("File", [d.format, bytes(d.size)].filter(Boolean).join(" · ")));
  if (d.gps_lat != null && d.gps_lon != null) {
    const lat = d.gps_lat.toFixed(5), lon = d.gps_lon.toFixed(5);
    rows.push(row("Location", `${lat}, ${lon}`, `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=15/${lat}/${lon}`));
  }
  if (d.status !== "indexed") rows.push(row("Status", [d.status, d.error].filter(Boolean).join(": ")));
  if (r.score != null) rows.push(row("Match", score(r)));
  $("v-details").replaceChildren(...rows);
}

function bytes(n) {
  if (!n) return "";
  const units = ["B", "KB", "MB", "GB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1000)));
  return `${(n / 1000 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

function step(by) {
  const next = viewer.index + by;
  if (next < 0 || next >= viewer.list.length) return;
  viewer.index = next;
  showPhoto();
}

$("v-more").addEventListener("click", () => refine(viewer.list[viewer.index].id, true));
$("v-less").addEventListener("click", () => refine(viewer.list[viewer.index].id, false));
$("v-prev").addEventListener("click", () => step(-1));
$("v-next").addEventListener("click", () => step(1));
$("v-close").addEventListener("click", () => $("viewer").close());
addEventListener("keydown", (event) => {
  if (!$("viewer").open || event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.key === "ArrowLeft") step(-1);
  else if (event.key === "ArrowRight") step(1);
  else return;
  event.preventDefault();
});
$("viewer").addEventListener("click", (event) => event.target === $("viewer") && $("viewer").close());
$("viewer").addEventListener("close", () => {
  // Back to the thumbnail of the photo last shown, when it is one of the page's results.
  const at = viewer.list === view.items ? viewer.index : -1;
  const target = $("grid").querySelectorAll(".tile")[at];
  if (target) {
    target.focus();
    target.scrollIntoView({ block: "nearest" });
  }
  $("v-img").removeAttribute("src");
});

// ---- indexing progress -------------------------------------------------------------------------------
async function pollStatus() {
  if (document.hidden) return setTimeout(pollStatus, 10000); // a background tab asks nothing
  let busy = false;
  try {
    const s = await api("/api/status");
    const daemon = s.daemon || {};
    const waiting = Math.max(daemon.queue || 0, s.pending || 0);
    const reindex = s.reindex; // a new index being built beside this one: search keeps using this one
    busy = waiting > 0 || Boolean(reindex);
    const parts = [`${nf.format(s.indexed)} photos`];
    if (reindex) parts.push(`reindexing ${nf.format(reindex.done)} of ${nf.format(reindex.total)}`);
    if (waiting > 0) parts.push(`indexing ${nf.format(waiting)} waiting`);
    else if (daemon.running && !reindex) parts.push("watching");
    if (s.failed) parts.push(`${nf.format(s.failed)} failed`);
    $("status").textContent = parts.join(" · ");
    loadFacets(s.indexed);
    const empty = !s.roots?.length;
    if (empty !== libraryEmpty) {
      libraryEmpty = empty;
      if (view.kind === "timeline" && !view.items.length && !view.loading) summarize();
    }
    if (!empty && !$("start").hidden) fromUrl(); // a folder was added: its photos arrive as they are indexed
    else if (view.kind === "timeline" && !view.items.length && !view.loading && s.indexed > 0
      && !FILTERS.some((key) => key !== "sort" && view.params.get(key))) fromUrl(); // the first photos are in
    const library = s.roots?.length ? `Library: ${s.roots.join(", ")}` : "No library folders yet";
    $("status").title = reindex
      ? `${library}\nReindexing with ${reindex.model}; search uses the current index until it completes`
      : library;
    const missing = s.missing_roots?.length || 0;
    $("offline").hidden = !missing && !$("include-offline").checked;
    $("offline-label").textContent = `Include missing folders (${nf.format(missing)})`;
  } catch (error) {
    $("status").textContent = "offline";
    $("status").title = error.message;
  }
  $("status").classList.toggle("busy", busy);
  setTimeout(pollStatus, busy ? 2000 : 10000);
}

// Photos of missing library folders are left out unless asked for: the same search again, with them.
$("include-offline").addEventListener("change", () => fromUrl());

// ---- access token ------------------------------------------------------------------------------------
function showTokenForm() {
  if (!$("token").hidden) return;
  $("token").hidden = false;
  $("token-input").focus();
}

$("token").addEventListener("submit", async (event) => {
  event.preventDefault();
  const url = new URL(location.href);
  url.searchParams.set("token", $("token-input").value.trim());
  location.assign(url); // the server answers with a cookie; the token then leaves the address bar (below)
});

// ---- search box, file picker, drag and drop, keyboard ------------------------------------------------
$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  searchText($("q").value);
});
$("pick").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", () => {
  searchImage($("file").files[0]);
  $("file").value = "";
});

let dragDepth = 0;
const carriesFiles = (event) => event.dataTransfer?.types.includes("Files");
addEventListener("dragenter", (event) => {
  if (!carriesFiles(event)) return;
  dragDepth += 1;
  $("drop").hidden = false;
});
addEventListener("dragleave", (event) => {
  if (carriesFiles(event) && --dragDepth <= 0) [dragDepth, $("drop").hidden] = [0, true];
});
addEventListener("dragover", (event) => carriesFiles(event) && event.preventDefault());
addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  [dragDepth, $("drop").hidden] = [0, true];
  searchImage(event.dataTransfer.files[0]);
});

addEventListener("keydown", (event) => {
  const typing = event.target.closest?.("input, textarea, select, [contenteditable]");
  if (event.key === "/" && !typing && !$("viewer").open && !event.ctrlKey && !event.metaKey && !event.altKey) {
    event.preventDefault();
    $("q").focus();
    $("q").select();
  }
});

function fromUrl() {
  const params = stateParams();
  $("q").value = params.get("q") || "";
  for (const key of FILTERS) {
    const input = $(`f-${key}`);
    const value = params.get(key) || "";
    if (input.tagName === "SELECT" && value && ![...input.options].some((o) => o.value === value)) {
      input.append(new Option(value, value)); // a bookmarked value the facets do not list (yet)
    }
    input.value = value;
  }
  const query = params.has("q") || params.has("like") || params.has("upload");
  if (!query && !params.get("sort")) $("f-sort").value = "newest"; // what a timeline shows without a query
  $("f-sort").options[0].disabled = !query;
  if (!params.has("upload")) $("example").hidden = true;
  const what = describe(params);
  document.title = what ? `${what} · photosearch` : "photosearch";
  startView({ kind: query ? "search" : "timeline", params, file: params.has("upload") });
  return loadMore();
}

// The filter bar: each change is a new URL (so the back button steps through them).
$("filters").addEventListener("change", (event) => {
  if (event.target.matches("input:invalid")) return;
  const params = stateParams();
  for (const key of FILTERS) {
    // The order shown for a timeline without one chosen is its default, not a choice to keep for a search.
    if (key === "sort" && event.target.id !== "f-sort" && !params.has("sort")) continue;
    const value = $(`f-${key}`).value.trim();
    if (value) params.set(key, value);
    else params.delete(key);
  }
  go(params);
});
$("filters").addEventListener("submit", (event) => event.preventDefault());
$("filters").addEventListener("reset", (event) => {
  event.preventDefault();
  const params = stateParams();
  for (const key of FILTERS) params.delete(key);
  go(params);
});

// The values present, with counts, for the filter bar's menus.
let facetsTotal = -1;
async function loadFacets(total) {
  if (total === facetsTotal) return;
  facetsTotal = total;
  try {
    const f = await api("/api/facets");
    fillSelect("f-camera", f.cameras.map((c) => {
      const name = c.model.toLowerCase().startsWith(c.make.toLowerCase()) ? c.model : `${c.make} ${c.model}`.trim();
      return [`${c.make} ${c.model}`.trim(), `${name} (${nf.format(c.count)})`];
    }));
    const places = [
      ...f.places.countries.map((p) => [p.country, `${p.country} (${nf.format(p.count)})`]),
      ...f.places.cities.slice(0, 200).map((p) => [`${p.city}, ${p.country}`, `${p.city}, ${p.country} (${nf.format(p.count)})`]),
    ];
    fillSelect("f-place", places);
    fillSelect("f-type", f.types.map((t) => [t.type, `${t.type.toUpperCase()} (${nf.format(t.count)})`]));
  } catch (error) {
    facetsTotal = -1;
  }
}

function fillSelect(id, options) {
  const select = $(id);
  const value = select.value;
  select.replaceChildren(select.options[0], ...options.map(([v, label]) => new Option(label, v)));
  if (value && ![...select.options].some((o) => o.value === value)) select.append(new Option(value, value));
  select.value = value;
}

// ---- a first run, and the library's folders ----------------------------------------------------------
let libraryEmpty = false; // no folders yet (pollStatus): the page shows how to start

function showStart() {
  $("start").hidden = false;
  $("summary").textContent = "";
}

async function addFolder(input, errorBox) {
  const path = input.value.trim();
  if (!path) return;
  try {
    await api("/api/roots", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ path }) });
    input.value = "";
    errorBox.hidden = true;
    await listFolders();
    pollStatus();
  } catch (error) {
    errorBox.textContent = `Adding ${path} failed: ${error.message}`;
    errorBox.hidden = false;
  }
}

async function listFolders() {
  const list = $("folders-list");
  try {
    const data = await api("/api/roots");
    list.replaceChildren(...data.roots.map(folderRow));
    if (!data.roots.length) list.innerHTML = `<li class="muted">No folders yet: add one below.</li>`;
  } catch (error) {
    $("folders-error").textContent = error.message;
    $("folders-error").hidden = false;
  }
}

function folderRow(root) {
  const li = document.createElement("li");
  const path = Object.assign(document.createElement("span"), { className: "path", textContent: root.path });
  const count = Object.assign(document.createElement("span"), { className: "count" });
  count.textContent = `${nf.format(root.photos)} photo${root.photos === 1 ? "" : "s"}${root.missing ? " · missing" : ""}`;
  const move = Object.assign(document.createElement("button"), { type: "button", className: "quiet", textContent: "Move…" });
  move.title = "Point this folder at where it is now (nothing is re-read)";
  move.addEventListener("click", async () => {
    const to = prompt(`Where is ${root.path} now?`, root.moved_to || root.path);
    if (!to || to === root.path) return;
    await folderChange(`/api/roots/${root.id}/move`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ path: to }) });
  });
  const remove = Object.assign(document.createElement("button"), { type: "button", className: "quiet", textContent: "Remove" });
  remove.title = "Forget this folder and its photos (the files stay)";
  remove.addEventListener("click", async () => {
    if (confirm(`Forget ${root.path} and its ${root.photos} photos? The files stay where they are.`)) {
      await folderChange(`/api/roots/${root.id}`, { method: "DELETE" });
    }
  });
  li.append(path, count, move, remove);
  return li;
}

async function folderChange(path, init) {
  try {
    await api(path, init);
    $("folders-error").hidden = true;
  } catch (error) {
    $("folders-error").textContent = error.message;
    $("folders-error").hidden = false;
  }
  await listFolders();
  pollStatus();
  fromUrl();
}

$("folders-open").addEventListener("click", () => {
  $("folders-error").hidden = true;
  listFolders();
  $("folders").showModal();
});
$("folders-close").addEventListener("click", () => $("folders").close());
$("folders-add").addEventListener("submit", (event) => {
  event.preventDefault();
  addFolder($("folders-path"), $("folders-error"));
});
$("start-add").addEventListener("submit", async (event) => {
  event.preventDefault();
  await addFolder($("start-path"), $("error"));
  fromUrl();
});

addEventListener("popstate", () => fromUrl());
const start = new URL(location.href);
if (start.searchParams.has("token")) {
  start.searchParams.delete("token"); // the server has set its cookie: keep the token out of history
  history.replaceState({}, "", start);
}
fromUrl();
pollStatus();
