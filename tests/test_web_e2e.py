"""The web page in a real headless Chromium against a real `photosearch serve` process.

Chromium is Debian's (/usr/bin/chromium, or PHOTOSEARCH_CHROMIUM), driven by Playwright's Python API; nothing
is downloaded. Without Chromium the test fails with a message saying so: CI installs it. Screenshots go to
PHOTOSEARCH_SCREENSHOTS if set (else the test's tmp folder) so a person can look at the page.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from helpers import Counted, make_config, make_photo
from serveproc import clean_env, free_port, start_serve

from photosearch.library import Library

CHROMIUM = Path(os.environ.get("PHOTOSEARCH_CHROMIUM", "/usr/bin/chromium"))
# The machine's closed network refuses Chromium's background connections: turn them off.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP evil.example 127.0.0.1",  # a name rebound to this machine (DNS rebinding)
]  # fmt: skip
PHOTOS = 33  # one more page than the page's first (30), plus the GPS sample below
GPS_PHOTO = "DSCN0010.jpg"  # NIKON COOLPIX P6000, 43.46745 N 11.88513 E
TIMEOUT_MS = 60_000  # the first search loads the model: slow on a loaded 2-core machine


@pytest.fixture(scope="module")
def server(module_backend, tmp_path_factory, tiny_model_dir, exif_samples):
    """A library of made photos and one real camera photo with GPS, indexed, served by `photosearch serve`; on
    each backend (the embedded stores, the servers)."""
    base = tmp_path_factory.mktemp("web")
    root = base / "lib"
    for i in range(PHOTOS):
        make_photo(root / ("holiday" if i % 2 else "home") / f"p{i:02d}.jpg", seed=i, size=(400, 300))
    (root / "camera").mkdir()
    (root / "camera" / GPS_PHOTO).write_bytes((exif_samples / "jpg" / "gps" / GPS_PHOTO).read_bytes())
    config = make_config(base / "data", tiny_model_dir)
    with Library.open(config, embedder_factory=Counted()) as library:
        report = library.index([root])
    assert report.failed == 0

    env = clean_env(base)
    port = free_port()
    cmd = [sys.executable, "-m", "photosearch", "--data-dir", str(config.data_dir), "--model", str(tiny_model_dir),
           "serve", "--no-watch"]  # fmt: skip
    proc, url = start_serve(cmd, env, base / "serve.log", port), f"http://127.0.0.1:{port}"
    yield url, root
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.exists(), (
        f"the web page test needs Chromium at {CHROMIUM}: install it (apt-get install chromium) or point "
        "PHOTOSEARCH_CHROMIUM at one"
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - a setup problem, reported plainly
        pytest.fail(f"the web page test needs the playwright package (pip install -e '.[dev]'): {exc}")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("PHOTOSEARCH_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _page(browser, width: int, height: int, **options):
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.crashes: list[str] = []  # uncaught script errors on the page
    page.on("pageerror", lambda error: page.crashes.append(str(error)))
    return page


def _wait_images_loaded(page, selector: str, at_least: int) -> None:
    """At least ``at_least`` of the images matching ``selector`` have really loaded (naturalWidth > 0)."""
    page.wait_for_function(
        "([sel, n]) => [...document.querySelectorAll(sel)].filter(i => i.complete && i.naturalWidth > 0).length >= n",
        arg=[selector, at_least],
    )


def _wait_similar(page, n: int = 12) -> None:
    """The large view's "Similar photos" strip has arrived for the photo shown (n of them)."""
    page.wait_for_function(
        "n => !document.getElementById('v-similar').hasAttribute('aria-busy') "
        "&& document.querySelectorAll('#v-similar .tile').length === n",
        arg=n,
    )


def _names(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")


def test_search_view_similar_and_search_by_example(server, browser, shots, record_property):
    url, root = server
    page = _page(browser, 1280, 820)
    page.goto(url)
    page.wait_for_function("document.getElementById('status').textContent.includes('34 photos')")
    page.wait_for_function(f"document.querySelectorAll('#grid .tile').length === {PHOTOS + 1}")  # the timeline
    assert page.is_hidden("#start")
    page.screenshot(path=str(shots / "desktop-start.png"))

    # `/` focuses the search box; typing and Enter searches, and the address bar keeps the query.
    page.locator("body").click(position={"x": 5, "y": 400})
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("a red ball")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('summary').textContent.includes('a red ball')")
    assert page.locator("#grid .tile").count() == 30  # the first page
    assert "?q=a+red+ball" in page.url
    _wait_images_loaded(page, "#grid .tile img", 12)
    assert all(float(s) <= 1.0 for s in _names(page, "#grid .score"))

    # Infinite scroll: the rest arrives at the bottom, and the summary says that is all.
    page.locator("#more").scroll_into_view_if_needed()
    page.wait_for_function(f"document.querySelectorAll('#grid .tile').length === {PHOTOS + 1}")
    page.wait_for_function("document.getElementById('summary').textContent.startsWith('All 34')")
    assert page.is_hidden("#more")
    page.evaluate("scrollTo(0, 0)")
    main_shot = shots / "desktop-results.png"
    page.screenshot(path=str(main_shot))
    record_property("screenshot", str(main_shot))
    print(f"\nscreenshots: {shots} (main: {main_shot})")

    # Click a photo: the large view with its details and similar photos.
    first, second = _names(page, "#grid .tile .name")[:2]
    page.locator("#grid .tile").first.click()
    page.wait_for_selector("#viewer[open]")
    assert page.inner_text("#v-title") == first
    page.wait_for_selector("#v-details dd.path")
    assert page.inner_text("#v-details dd.path").endswith(first)
    assert "400 \u00d7 300" in page.inner_text("#v-details")  # the multiplication sign
    _wait_similar(page)
    assert first not in _names(page, "#v-similar .name")
    _wait_images_loaded(page, "#v-similar img", 12)
    _wait_images_loaded(page, "#v-img", 1)
    page.screenshot(path=str(shots / "desktop-viewer.png"))

    # Arrow keys move between the results; a similar photo opens in the same view; Escape closes it.
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"document.getElementById('v-title').textContent === {second!r}")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"document.getElementById('v-title').textContent === {first!r}")
    _wait_similar(page)
    similar = _names(page, "#v-similar .name")[0]
    page.locator("#v-similar .tile").first.click()
    page.wait_for_function(f"document.getElementById('v-title').textContent === {similar!r}")
    page.wait_for_function(f"document.querySelector('#v-details dd.path')?.textContent.endsWith({similar!r})")
    _wait_similar(page)
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")

    # The camera photo shows its camera, date and place.
    page.locator("#grid .tile", has_text=GPS_PHOTO).click()
    page.wait_for_selector("#viewer[open]")
    page.wait_for_function("document.getElementById('v-details').textContent.includes('Location')")
    details = page.inner_text("#v-details")
    assert "COOLPIX P6000" in details and "43.46745, 11.88513" in details and "2008" in details
    _wait_similar(page)
    _wait_images_loaded(page, "#v-similar img", 12)
    _wait_images_loaded(page, "#v-img", 1)
    page.screenshot(path=str(shots / "desktop-viewer-camera.png"))
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")
    assert page.evaluate("document.activeElement.textContent").startswith(GPS_PHOTO)  # focus went back

    # Keyboard: Enter opens the focused thumbnail, Escape closes it.
    page.locator("#grid .tile").nth(2).focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[open]")
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")

    # A reload (a bookmark) runs the same search again.
    page.reload()
    page.wait_for_selector("#grid .tile img")
    assert page.input_value("#q") == "a red ball"

    # Search by example through the file picker: the same picture comes first.
    page.set_input_files("#file", str(root / "home" / "p04.jpg"))
    page.wait_for_function("document.getElementById('summary').textContent.includes('like p04.jpg')")
    page.wait_for_selector("#grid .tile img")
    assert _names(page, "#grid .tile .name")[0] == "p04.jpg"
    assert float(_names(page, "#grid .score")[0]) > 0.99
    assert "?q=" not in page.url
    _wait_images_loaded(page, "#grid .tile img", 12)
    page.screenshot(path=str(shots / "desktop-by-example.png"))
    page.locator("#more").scroll_into_view_if_needed()  # paging works for an example too
    page.wait_for_function(f"document.querySelectorAll('#grid .tile').length === {PHOTOS + 1}")

    # Search by example by dropping a file anywhere on the page.
    dropped = (root / "holiday" / "p07.jpg").read_bytes()
    files = page.evaluate_handle(
        "bytes => { const t = new DataTransfer();"
        " t.items.add(new File([new Uint8Array(bytes)], 'p07.jpg', {type: 'image/jpeg'})); return t; }",
        list(dropped),
    )
    page.dispatch_event("main", "dragenter", {"dataTransfer": files})
    assert page.is_visible("#drop")
    page.screenshot(path=str(shots / "desktop-drop.png"))
    page.dispatch_event("main", "drop", {"dataTransfer": files})
    page.wait_for_function("document.getElementById('summary').textContent.includes('like p07.jpg')")
    assert page.is_hidden("#drop")
    assert _names(page, "#grid .tile .name")[0] == "p07.jpg"

    # An error from the API is one readable line.
    not_an_image = root.parent / "notes.jpg"
    not_an_image.write_text("this is not a picture")
    page.set_input_files("#file", str(not_an_image))
    page.wait_for_selector("#error:not([hidden])")
    error = page.inner_text("#error")
    assert error.startswith("Search by image failed: ") and "\n" not in error
    page.screenshot(path=str(shots / "desktop-error.png"))
    assert not page.crashes, page.crashes


def test_phone_width(server, browser, shots):
    url, _ = server
    page = _page(browser, 375, 740, is_mobile=True, has_touch=True, device_scale_factor=2)
    page.goto(f"{url}/?q=sunset")
    page.wait_for_selector("#grid .tile img")
    _wait_images_loaded(page, "#grid .tile img", 4)
    columns = page.evaluate("getComputedStyle(document.getElementById('grid')).gridTemplateColumns.split(' ').length")
    assert columns == 2
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing sticks out sideways
    page.screenshot(path=str(shots / "phone-results.png"))

    page.locator("#grid .tile").first.tap()
    page.wait_for_selector("#viewer[open]")
    _wait_similar(page)
    _wait_images_loaded(page, "#v-img", 1)
    box = page.locator("#viewer").bounding_box()
    assert box is not None and box["width"] <= 375
    page.screenshot(path=str(shots / "phone-viewer.png"))
    page.locator("#v-close").tap()
    page.wait_for_selector("#viewer", state="hidden")
    assert not page.crashes, page.crashes


def test_indexing_progress_and_token_form(server, browser, shots):
    """What the page shows while the daemon works, and when the server wants its token (answers faked)."""
    url, _ = server
    page = _page(browser, 375, 740, is_mobile=True, has_touch=True, device_scale_factor=2)
    busy = {"indexed": 12345, "pending": 80, "failed": 3, "daemon": {"running": True, "queue": 120}}
    page.route("**/api/status", lambda route: route.fulfill(json=busy))
    page.goto(url)
    page.wait_for_function("document.getElementById('status').textContent.includes('waiting')")
    assert page.inner_text("#status") == "12,345 photos · indexing 120 waiting · 3 failed"
    page.screenshot(path=str(shots / "phone-indexing.png"))
    target = {"model": "openai/clip-vit-large-patch14 @ 32bd642 (768-d)", "done": 4000, "total": 12000}
    reindexing = {**busy, "pending": 0, "daemon": {"running": True, "queue": 0}, "reindex": target}
    page.route("**/api/status", lambda route: route.fulfill(json=reindexing))
    page.reload()
    page.wait_for_function("document.getElementById('status').textContent.includes('reindexing')")
    assert page.inner_text("#status") == "12,345 photos · reindexing 4,000 of 12,000 · 3 failed"
    assert "clip-vit-large-patch14" in page.get_attribute("#status", "title")

    denied = {"error": "Unauthorized", "detail": "this server needs its access token (server.token)"}
    page.route("**/api/**", lambda route: route.fulfill(status=401, json=denied))
    page.fill("#q", "cats")
    page.keyboard.press("Enter")
    page.wait_for_selector("#token-input")
    assert page.evaluate("document.activeElement.id") == "token-input"
    assert page.is_hidden("#error")  # the form says it all
    page.screenshot(path=str(shots / "phone-token.png"))
    page.fill("#token-input", "s3cret")
    with page.expect_request(lambda r: r.resource_type == "document" and "token=s3cret" in r.url):
        page.keyboard.press("Enter")
    page.wait_for_load_state()
    page.wait_for_function("!location.search.includes('token')")  # the token leaves the address bar
    assert not page.crashes, page.crashes


def test_photos_of_a_missing_folder_are_offered_with_a_badge(server, browser, shots, tiny_model_dir):
    """A second library folder, indexed, then unplugged: its photos are left out, the page offers them, and
    they come marked offline. The folder is forgotten again at the end, so the library is as the other tests
    expect it."""
    url, root = server
    drive = root.parent / "drive"
    for i in range(2):
        make_photo(drive / f"d{i}.jpg", seed=200 + i, size=(400, 300))
    config = make_config(root.parent / "data", tiny_model_dir)
    with Library.open(config, embedder_factory=Counted()) as library:
        library.index([drive])
    drive.rename(root.parent / "drive-unplugged")
    try:
        page = _page(browser, 1280, 820)
        page.goto(f"{url}/?q=a+red+ball")
        page.wait_for_selector("#offline:not([hidden])")
        assert page.inner_text("#offline") == "Include missing folders (1)"
        _load_all(page, PHOTOS + 1)
        assert page.locator("#grid .badge").count() == 0

        page.check("#include-offline")
        _load_all(page, PHOTOS + 3)
        badged = _names(page, "#grid .tile:has(.badge) .name")
        assert sorted(badged) == ["d0.jpg", "d1.jpg"] and set(_names(page, "#grid .badge")) == {"offline"}
        assert "its library folder is missing" in page.locator("#grid .tile:has(.badge)").first.get_attribute("title")
        page.locator("#grid .tile:has(.badge)").first.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "desktop-offline.png"))
        page.uncheck("#include-offline")
        _load_all(page, PHOTOS + 1)
        assert not page.crashes, page.crashes
        page.context.close()
    finally:
        with Library.open(config, embedder_factory=Counted()) as library:
            library.remove_root(drive)


def _load_all(page, n: int) -> None:
    """Scroll until the search has shown all ``n`` results."""
    page.wait_for_function(f"document.getElementById('summary').textContent.includes('{n}') || "
                           "document.querySelectorAll('#grid .tile').length >= 30")  # fmt: skip
    page.locator("#more").scroll_into_view_if_needed()
    page.wait_for_function(f"document.getElementById('summary').textContent.startsWith('All {n}')")
    assert page.locator("#grid .tile").count() == n


def test_timeline_filters_refine_and_the_url(server, browser, shots):
    """No query: the library as a timeline by month. The filter bar narrows it (its menus from the facets, with
    counts); a search keeps the relevant matches first; "more/less like this" refine it; all of it lives in the
    URL, so the back button and a reload give the same page."""
    url, _ = server
    page = _page(browser, 1280, 820)
    page.goto(url)
    page.wait_for_function(f"document.querySelectorAll('#grid .tile').length === {PHOTOS + 1}")
    months = _names(page, "#grid .month h2")
    assert months[-1] == "October 2008" and len(months) == 2  # the made photos are dated by their files: now
    assert _names(page, "#grid .tile .name")[-1] == GPS_PHOTO  # newest first: the 2008 photo last
    page.wait_for_function("[...document.querySelectorAll('#f-camera option')].some(o => o.text.includes('(1)'))")
    cameras = _names(page, "#f-camera option")
    assert "NIKON COOLPIX P6000 (1)" in cameras
    page.screenshot(path=str(shots / "desktop-timeline.png"))

    page.select_option("#f-camera", label="NIKON COOLPIX P6000 (1)")
    page.wait_for_function("document.querySelectorAll('#grid .tile').length === 1")
    assert "camera=NIKON+COOLPIX+P6000" in page.url
    assert _names(page, "#grid .tile .name") == [GPS_PHOTO]
    page.go_back()
    page.wait_for_function(f"document.querySelectorAll('#grid .tile').length === {PHOTOS + 1}")
    assert page.input_value("#f-camera") == ""
    page.fill("#f-from", "2008")
    page.fill("#f-to", "2008")
    page.locator("#f-to").dispatch_event("change")
    page.wait_for_function("document.querySelectorAll('#grid .tile').length === 1")
    assert "from=2008" in page.url and "to=2008" in page.url
    page.reload()
    page.wait_for_function("document.querySelectorAll('#grid .tile').length === 1")
    assert page.input_value("#f-from") == "2008"  # the filters come back from the URL
    page.click("#f-clear")
    page.wait_for_function(f"document.querySelectorAll('#grid .tile').length === {PHOTOS + 1}")

    # A search: relevant matches first, the rest below the divider, marked.
    page.fill("#q", "a red ball")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('summary').textContent.includes('relevant')")
    order = page.eval_on_selector_all(
        "#grid > li", "els => els.map(e => e.className || (e.querySelector('.less') ? 'less' : 'match'))"
    )
    if "divider" in order:
        at = order.index("divider")
        assert set(order[:at]) <= {"match"} and set(order[at + 1 :]) == {"less"}
    else:
        assert set(order) == {"match"}
    # More like this: the photo joins the query as an example (and leaves the results); less like this subtracts.
    page.locator("#grid .tile").first.click()
    page.wait_for_selector("#viewer[open]")
    shown = page.inner_text("#v-title")
    page.click("#v-more")
    page.wait_for_function("location.search.includes('like=')")
    page.wait_for_function("document.getElementById('summary').textContent.includes('like 1 photo')")
    assert "q=a+red+ball" in page.url and shown not in _names(page, "#grid .tile .name")
    page.locator("#grid .tile").first.click()
    page.wait_for_selector("#viewer[open]")
    page.click("#v-less")
    page.wait_for_function("location.search.includes('unlike=')")
    page.wait_for_function("document.getElementById('summary').textContent.includes('less like 1 photo')")
    page.screenshot(path=str(shots / "desktop-refined.png"))
    page.go_back()
    page.wait_for_function("!location.search.includes('unlike=')")
    page.wait_for_function("document.getElementById('summary').textContent.includes('like 1 photo')")
    assert not page.crashes, page.crashes


def test_a_first_run_shows_how_to_start_and_the_folders_can_be_managed(browser, shots, tmp_path, tiny_model_dir):
    """An empty library: the page says how to start; a folder added from the page is indexed by the daemon and
    its photos appear; the folders dialog lists it with its count and forgets it."""
    folder = tmp_path / "new-photos"
    for i in range(3):
        make_photo(folder / f"n{i}.jpg", seed=300 + i, size=(200, 150))
    # A library of its own in its data directory (not the module's, whichever stores that one is on): empty.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HF_HOME": str(tmp_path / "hf")}
    port = free_port()
    cmd = [sys.executable, "-m", "photosearch", "--data-dir", str(tmp_path / "data"), "--model", str(tiny_model_dir),
           "serve"]  # fmt: skip
    proc, url = start_serve(cmd, env, tmp_path / "serve.log", port), f"http://127.0.0.1:{port}"
    try:
        page = _page(browser, 1280, 820)
        page.goto(url)
        page.wait_for_selector("#start:not([hidden])")
        page.screenshot(path=str(shots / "desktop-first-run.png"))
        page.fill("#start-path", str(folder))
        page.click("#start-add button")
        page.wait_for_function("document.querySelectorAll('#grid .tile').length === 3", timeout=120_000)
        assert page.is_hidden("#start")
        page.click("#folders-open")
        page.wait_for_selector("#folders[open]")
        page.wait_for_function("document.getElementById('folders-list').textContent.includes('3 photos')")
        assert str(folder) in page.inner_text("#folders-list")
        page.screenshot(path=str(shots / "desktop-folders.png"))
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#folders-list button:has-text('Remove')")
        page.wait_for_function("document.getElementById('folders-list').textContent.includes('No folders yet')")
        page.click("#folders-close")
        page.wait_for_selector("#start:not([hidden])")
        assert not page.crashes, page.crashes
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
