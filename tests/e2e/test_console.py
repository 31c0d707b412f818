"""The web console in a real browser: Debian's chromium, headless, driven by Playwright
(PyPI) — overview, a topic and its records, a lagging group with its ERR/STOP status, on a
phone-sized screen too. Screenshots are saved under target/test-artifacts/console/. The
page may talk to this tern only."""

import json
import pathlib
import shutil
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from harness import ROOT, Tern

ARTIFACTS = ROOT / "target" / "test-artifacts" / "console"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def tern(tmp_path):
    t = Tern(tmp_path / "tern", config="""
[lag]
window = 5
min_distance_ms = 100
sample_interval_ms = 200
""")
    t.start()
    yield t
    t.kill()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "chromium missing: apt-get install chromium (tests/run does)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


def setup_site(tern):
    producer = Producer({"bootstrap.servers": tern.bootstrap})
    for i in range(40):
        producer.produce("door-state", key=f"door-{i % 4}".encode(),
                         value=json.dumps({"door": i % 4, "locked": i % 3 == 0, "battery": 90 - i}).encode(),
                         headers=[("source", b"mqtt")])
    assert producer.flush(30) == 0
    # A group that committed with lag and then went quiet: STOP, group ERR.
    for offset in (5, 10, 15, 20):
        c = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": "dashboard", "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition("door-state", 0, offset)], asynchronous=False)
        c.close()
        time.sleep(0.25)
    time.sleep(1.5)


def test_console_in_a_real_browser(tern, browser):
    setup_site(tern)
    base = f"http://127.0.0.1:{tern.http_port}/"
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests, weight = [], {"bytes": 0}
    page.on("request", lambda r: requests.append(r.url))
    page.on("response", lambda r: weight.__setitem__("bytes", weight["bytes"] + len(r.body() or b"")))

    started = time.time()
    page.goto(base)
    page.wait_for_selector("main[data-ready=overview]")
    first_render_ms = (time.time() - started) * 1000
    assert "Gateway tern" in page.inner_text("h1")
    overview = page.inner_text("main")
    assert "dashboard" in overview and "ERR" in overview, overview
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    # Topics → door-state → the newest records, JSON pretty-printed.
    page.click("header a[data-nav=topics]")
    page.wait_for_selector("main[data-ready=topics]")
    page.click("text=door-state")
    page.wait_for_selector("#records[data-loaded='20']")
    records = page.inner_text("#records")
    assert '"locked": false' in records and "door-3" in records and "source" in records, records
    # From offset 3, two records.
    page.fill("input[name=offset]", "3")
    page.fill("input[name=limit]", "2")
    page.click("form.browse button")
    page.wait_for_selector("#records[data-loaded='2']")
    rows = page.locator("#records tbody tr")
    assert rows.count() == 2 and rows.nth(0).inner_text().startswith("3")
    page.screenshot(path=str(ARTIFACTS / "topic-records.png"), full_page=True)
    # A bad offset is explained, not a blank page.
    page.fill("input[name=offset]", "999999")
    page.click("form.browse button")
    page.wait_for_selector("#records .error")
    assert "outside the log" in page.inner_text("#records .error")

    # The lagging group: why it lags.
    page.goto(base + "#/groups/dashboard")
    page.wait_for_selector("main[data-ready=groups]")
    group = page.inner_text("main")
    assert "ERR" in group and "STOP" in group and "20" in group, group
    page.screenshot(path=str(ARTIFACTS / "group-lagging.png"), full_page=True)

    # Nothing but this tern was asked for anything.
    assert requests and all(u.startswith(base) for u in requests), [u for u in requests if not u.startswith(base)]
    print(f"console: first render {first_render_ms:.0f} ms, {weight['bytes']} bytes over {len(requests)} requests")

    # On a phone: the overview fits and the navigation works.
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(base)
    phone.wait_for_selector("main[data-ready=overview]")
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    phone.screenshot(path=str(ARTIFACTS / "phone-overview.png"), full_page=True)
    phone.click("header a[data-nav=groups]")
    phone.wait_for_selector("main[data-ready=groups]")
    assert "dashboard" in phone.inner_text("main")


def test_console_page_is_small_and_self_contained(tern):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{tern.http_port}/", timeout=10) as r:
        body = r.read()
        csp = r.headers["Content-Security-Policy"]
    assert len(body) < 300 * 1024, len(body)
    assert "connect-src 'self'" in csp and "default-src 'none'" in csp
    assert b"http://" not in body and b"https://" not in body
