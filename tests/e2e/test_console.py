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

from harness import FAST_LAG, ROOT, Tern

ARTIFACTS = ROOT / "target" / "test-artifacts" / "console"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def tern(tmp_path):
    t = Tern(tmp_path / "tern", config=FAST_LAG)
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


def http(tern, method, path, body=None, token=None, basic=None):
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{tern.http_port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if basic:
        request.add_header("Authorization", "Basic " + base64.b64encode(basic.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def test_actions_are_refused_by_the_api_when_off(tern):
    setup_site(tern)
    for method, path, body in [
        ("POST", "/v1/topics", {"name": "new-topic"}),
        ("PATCH", "/v1/topics/door-state/configs", {"set": {"retention.ms": "1000"}}),
        ("POST", "/v1/topics/door-state/delete-records", {"partition": 0, "before_offset": 10}),
        ("POST", "/v1/groups/dashboard/reset-offsets", {"topic": "door-state", "to": "earliest"}),
    ]:
        code, text, _ = http(tern, method, path, body)
        assert code == 403 and b"actions are off" in text, (path, code, text)
    code, text, _ = http(tern, "GET", "/v1/topics/door-state")
    assert json.loads(text)["partition_details"][0]["log_start"] == 0  # nothing changed


@pytest.fixture
def tern_with_actions(tmp_path):
    t = Tern(tmp_path / "tern", config=FAST_LAG + """
[http]
actions = true
token = "s3cret-token"
""")
    t.start()
    yield t
    t.kill()


def test_enabled_actions_work_from_the_page_behind_a_token(tern_with_actions, browser):
    tern = tern_with_actions
    setup_site(tern)
    # The token guards the page, the API and /metrics; /healthz stays open.
    code, _, headers = http(tern, "GET", "/")
    assert code == 401 and "Basic" in headers["WWW-Authenticate"]
    assert http(tern, "GET", "/v1/topics", token="wrong")[0] == 401
    assert http(tern, "GET", "/metrics")[0] == 401
    assert http(tern, "GET", "/metrics", token="s3cret-token")[0] == 200
    assert http(tern, "GET", "/healthz")[0] == 200

    context = browser.new_context(http_credentials={"username": "admin", "password": "s3cret-token"})
    page = context.new_page()
    base = f"http://127.0.0.1:{tern.http_port}/"

    # Create a topic.
    page.goto(base + "#/topics")
    page.wait_for_selector("form[data-action=create-topic]")
    page.fill("form[data-action=create-topic] input[name=name]", "lock-events")
    page.fill("form[data-action=create-topic] input[name=partitions]", "3")
    page.click("form[data-action=create-topic] button")
    page.wait_for_selector("form[data-action=create-topic] .out:has-text('done')")
    code, text, _ = http(tern, "GET", "/v1/topics/lock-events", token="s3cret-token")
    assert code == 200 and json.loads(text)["partitions"] == 3

    # Delete records and set a config on door-state.
    page.goto(base + "#/topics/door-state")
    page.wait_for_selector("form[data-action=delete-records]")
    page.fill("form[data-action=delete-records] input[name=before]", "10")
    page.click("form[data-action=delete-records] button")
    page.wait_for_selector("form[data-action=delete-records] .out:has-text('done')")
    page.fill("form[data-action=set-config] input[name=key]", "retention.ms")
    page.fill("form[data-action=set-config] input[name=value]", "86400000")
    page.click("form[data-action=set-config] button")
    page.wait_for_selector("form[data-action=set-config] .out:has-text('done')")
    detail = json.loads(http(tern, "GET", "/v1/topics/door-state", token="s3cret-token")[1])
    assert detail["partition_details"][0]["log_start"] == 10
    assert detail["configs"]["retention.ms"] == "86400000"
    # A bad config value is refused with the reason.
    page.fill("form[data-action=set-config] input[name=value]", "soon")
    page.click("form[data-action=set-config] button")
    page.wait_for_selector("form[data-action=set-config] .out.error")

    # Reset the lagging group to the latest offset: its lag goes to 0.
    page.goto(base + "#/groups/dashboard")
    page.wait_for_selector("form[data-action=reset-offsets]")
    page.select_option("form[data-action=reset-offsets] select[name=to]", "latest")
    page.click("form[data-action=reset-offsets] button")
    page.wait_for_selector("form[data-action=reset-offsets] .out:has-text('done')")
    page.screenshot(path=str(ARTIFACTS / "group-reset.png"), full_page=True)
    group = json.loads(http(tern, "GET", "/v1/groups/dashboard", token="s3cret-token")[1])
    assert group["lag"]["total_lag"] == 0 and group["lag"]["partitions"][0]["committed"] == 40

    # The API explains what it refuses.
    code, text, _ = http(tern, "POST", "/v1/topics", {"name": "door-state"}, token="s3cret-token")
    assert code == 409, (code, text)
    code, text, _ = http(tern, "POST", "/v1/topics", {"nom": "x"}, token="s3cret-token")
    assert code == 400 and b"error" in text
    code, text, _ = http(tern, "POST", "/v1/groups/dashboard/reset-offsets", {"topic": "nope", "to": "earliest"},
                         token="s3cret-token")
    assert code == 404


def test_https_with_a_token(tmp_path):
    import ssl
    import subprocess
    import urllib.error
    import urllib.request

    from harness import TERN_BIN

    certs = tmp_path / "certs"
    for args in (["ca"], ["hub", "--name", "127.0.0.1"]):
        done = subprocess.run([TERN_BIN, "certs", *args, "--dir", str(certs)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    t = Tern(tmp_path / "tern", config=f"""
[http]
token = "t0ken"
cert = "{certs / 'hub.pem'}"
key = "{certs / 'hub.key'}"
""")
    t.start()
    try:
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        url = f"https://127.0.0.1:{t.http_port}/v1/broker"
        request = urllib.request.Request(url, headers={"Authorization": "Bearer t0ken"})
        with urllib.request.urlopen(request, context=context, timeout=10) as r:
            assert r.status == 200 and json.loads(r.read())["version"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, context=context, timeout=10)
        assert refused.value.code == 401
        # Plain HTTP on the HTTPS port gets nothing.
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{t.http_port}/healthz", timeout=5)
        # A client that stalls its handshake does not block others.
        import socket
        stalled = [socket.create_connection(("127.0.0.1", t.http_port)) for _ in range(20)]
        with urllib.request.urlopen(request, context=context, timeout=10) as r:
            assert r.status == 200
        for s in stalled:
            s.close()
    finally:
        t.kill()


def test_mirror_links_on_both_sides(tmp_path, browser):
    from mirror_site import caught_up, mirror_pair, produce, wait_until

    with mirror_pair(tmp_path) as (_, hub, edge):
        produce(edge.bootstrap, "door-events", 500)
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["door-events"]), 60, "the hub to catch up")
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{edge.http_port}/#/mirror")
        page.wait_for_selector("main[data-ready=mirror]")
        text = page.inner_text("main")
        assert "To hub" in text and "OK" in text and "door-events" in text, text
        page.screenshot(path=str(ARTIFACTS / "mirror-edge.png"), full_page=True)
        page.goto(f"http://127.0.0.1:{hub.http_port}/#/mirror")
        page.wait_for_selector("main[data-ready=mirror] h2")
        text = page.inner_text("main")
        assert "gw-1" in text and "OK" in text, text
        page.screenshot(path=str(ARTIFACTS / "mirror-hub.png"), full_page=True)


def test_a_bridge_to_a_dead_broker_shows_as_down(tmp_path, browser):
    from harness import free_port

    t = Tern(tmp_path / "tern", config=f"""
[[bridges.mqtt]]
name = "site-mosquitto"
host = "127.0.0.1"
port = {free_port()}
reconnect_min_ms = 100
reconnect_max_ms = 200
[[bridges.mqtt.inbound]]
filter = "sensors/#"
topic = "sensors"
""")
    t.start()
    try:
        time.sleep(1.5)
        code, text, _ = http(t, "GET", "/v1/bridges")
        bridge = json.loads(text)["bridges"][0]
        assert code == 200 and bridge["name"] == "site-mosquitto" and bridge["direction"] == "in"
        assert bridge["connected"] is False and bridge["errors"] + bridge["reconnects"] > 0, bridge
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{t.http_port}/#/bridges")
        page.wait_for_selector("main[data-ready=bridges]")
        assert "site-mosquitto" in page.inner_text("main") and "DOWN" in page.inner_text("main")
    finally:
        t.kill()
