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
const score = (r) => r.score.toFixed(2);

function showError(what, error) {
  if (error && !$("token").hidden) return; // the token form says it
  $("error").textContent = error ? `${what}: ${error.message}` : "";
  $("error").hidden = !error;
}

// ---- results: text search, search by example, paging -------------------------------------------------
let view = { kind: null, items: [] };

function startView(next) {
  view = { items: [], more: false, loading: false, ...next };
  $("grid").replaceChildren();
  $("empty").hidden = true;
  $("example").hidden = next.kind !== "image";
  showError();
}

function searchText(q, push = true) {
  q = q.trim();
  if (!q) return;
  $("q").value = q;
  const url = new URL(location.href);
  url.search = new URLSearchParams({ q }).toString();
  if (url.href !== location.href) history[push ? "pushState" : "replaceState"]({}, "", url);
  document.title = `${q} · photosearch`;
  startView({ kind: "text", q });
  return loadMore();
}

function searchImage(file) {
  if (!file) return;
  if ($("viewer").open) $("viewer").close();
  if (location.search) history.pushState({}, "", location.pathname);
  document.title = `Like ${file.name} · photosearch`;
  $("q").value = "";
  URL.revokeObjectURL($("example").src);
  $("example").onerror = () => ($("example").hidden = true);
  $("example").src = URL.createObjectURL(file);
  $("example").alt = `Example: ${file.name}`;
  startView({ kind: "image", file });
  return loadMore();
}

async function loadMore() {
  const v = view;
  if (v.loading || !v.kind) return;
  v.loading = true;
  v.failed = false;
  $("more").disabled = true;
  $("summary").textContent = v.items.length ? "Loading more…" : "Searching…";
  try {
    let data;
    const offline = $("include-offline").checked ? "&include_offline=true" : "";
    if (v.kind === "text") {
      const params = new URLSearchParams({ q: v.q, k: PAGE, offset: v.items.length });
      data = await api(`/api/search?${params}${offline}`);
    } else {
      // The upload endpoint has no offset: ask again for one page more (and one beyond, to know if there
      // is more) and keep the new tail.
      const wanted = Math.min(MAX_K - 1, v.items.length + PAGE);
      const form = new FormData();
      form.append("file", v.file);
      data = await api(`/api/search/image?k=${wanted + 1}${offline}`, { method: "POST", body: form });
      data.more = data.results.length > wanted;
      data.results = data.results.slice(v.items.length, wanted);
    }
    if (v !== view) return;
    const start = v.items.length;
    v.items.push(...data.results);
    v.more = data.more && v.items.length < MAX_K;
    showError();
    $("grid").append(...data.results.map((r, i) => tile(r, () => openViewer(v.items, start + i))));
  } catch (error) {
    if (v !== view) return;
    showError(v.kind === "text" ? "Search failed" : "Search by image failed", error);
    v.failed = true;
  } finally {
    if (v === view) {
      v.loading = false;
      summarize();
    }
  }
}

function summarize() {
  const { kind, items, more } = view;
  const what = kind === "text" ? `for “${view.q}”` : `like ${view.file.name}`;
  const n = nf.format(items.length);
  if (view.failed && !items.length) $("example").hidden = true;
  $("summary").textContent = view.failed && !items.length ? "" : items.length
    ? `${more ? "Best" : "All"} ${n} ${items.length === 1 ? "match" : "matches"} ${what}${more ? " · scroll for more" : ""}`
    : `No photos ${what} yet`;
  $("more").hidden = !more || (view.failed && !items.length);
  $("more").disabled = false;
  // Still near the bottom after a page (a tall window): the observer sees no change, so go on here.
  if (more && !view.failed && $("more").getBoundingClientRect().top < innerHeight + SCROLL_AHEAD) requestAnimationFrame(loadMore);
}

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
  caption.lastChild.textContent = score(r);
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
  $("v-details").replaceChildren(row("Match", score(r)));
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
$("include-offline").addEventListener("change", () => {
  if (view.kind) {
    startView({ kind: view.kind, q: view.q, file: view.file });
    loadMore();
  }
});

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

function fromUrl(push = false) {
  const q = new URLSearchParams(location.search).get("q");
  if (q) searchText(q, push);
  else if (view.kind === "text") {
    startView({ kind: null });
    $("q").value = "";
    $("summary").textContent = "";
    $("more").hidden = true;
    $("empty").hidden = false;
  }
}

addEventListener("popstate", () => fromUrl());
const start = new URL(location.href);
if (start.searchParams.has("token")) {
  start.searchParams.delete("token"); // the server has set its cookie: keep the token out of history
  history.replaceState({}, "", start);
}
fromUrl();
pollStatus();
