"""The dashboard in headless Chromium, driven by Selenium (tests/tests/dashboard.rs runs it
against the real `picket-collector serve --http` with an enrolled agent that found EICAR).

Arguments: a JSON object on the command line with
  base        https://127.0.0.1:PORT
  spki_hex    SHA-256 of the SubjectPublicKeyInfo of the listener's browser certificate
              (DIR/tls/https.pem): the one key Chromium is told to accept; no other
              certificate error is ignored
  ca          DIR/tls/ca.pem, for the TAXII contribution (Python's TLS offers Ed25519 and so
              verifies the collector's own certificate)
  operator, password
  member, member_password, community
  indicator   the EICAR indicator's STIX id
  agent       the agent's id
  hostile     strings that must be shown as text
  location    the name of the file the agent found (hostile too), shown redacted but as text
  screenshot  a path to write the sightings page to, or ""
Exits non-zero with a message on the first expectation that fails.
"""

import base64
import json
import ssl
import sys
import time
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

args = json.loads(sys.argv[1])
base = args["base"]
TAXII = "application/taxii+json;version=2.1"


def fail(why):
    sys.exit(f"dashboard test: {why}")


def contribute():
    """The member posts a sighting of the indicator to the community's contributions
    collection, so the community's k = 2 is cleared."""
    ctx = ssl.create_default_context(cafile=args["ca"])
    auth = base64.b64encode(f"{args['member']}:{args['member_password']}".encode()).decode()
    headers = {"Accept": TAXII, "Authorization": f"Basic {auth}"}
    root = f"{base}/{args['community']}/"
    req = urllib.request.Request(root + "collections/", headers=headers)
    cols = json.load(urllib.request.urlopen(req, context=ctx, timeout=20))["collections"]
    writable = [c for c in cols if c.get("can_write")]
    if len(writable) != 1:
        fail(f"expected one writable collection, got {cols}")
    t = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    sighting = {"type": "sighting", "spec_version": "2.1", "id": f"sighting--{uuid.uuid4()}",
                "created": t, "modified": t, "sighting_of_ref": args["indicator"], "count": 2,
                "first_seen": t, "last_seen": t}
    body = json.dumps({"objects": [sighting]}).encode()
    req = urllib.request.Request(root + f"collections/{writable[0]['id']}/objects/", data=body,
                                 headers=dict(headers, **{"Content-Type": TAXII}), method="POST")
    status = json.load(urllib.request.urlopen(req, context=ctx, timeout=20))
    if status.get("success_count") != 1:
        fail(f"the contribution was not accepted: {status}")


options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
          "--ignore-certificate-errors-spki-list="
          + base64.b64encode(bytes.fromhex(args["spki_hex"])).decode()]:
    options.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(20)


def text():
    return driver.find_element(By.TAG_NAME, "body").text


def expect(cond, why):
    if not cond:
        fail(f"{why}\n--- page {driver.current_url} ---\n{text()[:3000]}")


def arrived(suffix, why):
    """Waits (bounded) until a click's navigation has reached a URL ending with `suffix`."""
    try:
        WebDriverWait(driver, 10).until(lambda d: d.current_url.endswith(suffix))
    except Exception:
        fail(f"{why}: at {driver.current_url}, not at ...{suffix}\n{text()[:2000]}")


def submitted(button):
    """Clicks a form's submit button and waits until the next page replaced this one."""
    old = driver.find_element(By.TAG_NAME, "html")
    button.click()
    try:
        WebDriverWait(driver, 10).until(lambda d: not old.is_displayed())
    except Exception:
        pass  # a stale element raises inside is_displayed: the page changed


def inert():
    """No script ran and no element was injected by a hostile value."""
    try:
        alert = driver.switch_to.alert
        fail(f"an alert was opened: {alert.text!r}")
    except NoAlertPresentException:
        pass
    expect(not driver.find_elements(By.TAG_NAME, "script"), "a <script> element is on the page")
    expect(not driver.find_elements(By.TAG_NAME, "img"), "an <img> element is on the page")
    expect(not driver.find_elements(By.CSS_SELECTOR, "[onerror]"), "an onerror attribute is on the page")


def login(password):
    driver.get(base + "/ui/")
    expect(driver.current_url.endswith("/ui/login"), "an unauthenticated visit goes to the login")
    driver.find_element(By.NAME, "name").send_keys(args["operator"])
    driver.find_element(By.NAME, "password").send_keys(password)
    submitted(driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))


def goto(path):
    driver.get(base + path)
    inert()


try:
    # A wrong password gets no session.
    login("not the password")
    expect("wrong name or password" in text(), "a wrong password is refused")
    expect(not any(c["name"] == "__Host-picket" for c in driver.get_cookies()),
           "a wrong password set no session cookie")
    # The right one does, and the cookie is what it should be.
    login(args["password"])
    arrived("/ui/", "a login lands on the fleet page")
    cookie = next((c for c in driver.get_cookies() if c["name"] == "__Host-picket"), None)
    expect(cookie is not None, "a login sets __Host-picket")
    expect(cookie["secure"] and cookie["httpOnly"] and cookie.get("sameSite") == "Strict",
           f"the cookie's flags: {cookie}")

    # Fleet: the agent is there and live.
    inert()
    expect(args["agent"][:12] in text(), "the agent is on the fleet page")
    row = driver.find_element(By.XPATH, f"//code[@title='{args['agent']}']/ancestor::tr")
    expect("live" in row.text, f"the agent is live: {row.text}")

    # Sightings: the timeline and the indicator.
    goto("/ui/sightings")
    expect(args["indicator"] in text(), "the sighting is on the sightings page")
    expect(driver.find_elements(By.CSS_SELECTOR, "svg.timeline rect.bar"), "the timeline has a bar")
    if args["screenshot"]:
        driver.save_screenshot(args["screenshot"])

    # The indicator page: hostile values are text.
    driver.find_element(By.LINK_TEXT, args["indicator"]).click()
    arrived("/ui/indicator?id=" + urllib.parse.quote(args["indicator"], safe=""), "the link opens the indicator")
    inert()
    page = text()
    for h in args["hostile"] + [args["location"]]:
        expect(h in page, f"the literal {h!r} is shown on the indicator page")
    expect("host-" in page and "EICAR" not in args["agent"], "sightings are shown by host pseudonym")
    expect(args["agent"] not in driver.page_source, "the raw agent id is not on the indicator page")

    # Sharing before: k is cleared by the member's contribution, a sighting leaves, no opinion.
    contribute()
    goto(f"/ui/sharing")
    bundle = driver.find_element(By.CSS_SELECTOR, "pre.bundle").text
    expect('"type": "sighting"' in bundle, "the preview holds a sighting once k is cleared")
    expect("strongly-disagree" not in bundle, "no false-positive opinion before the mark")
    expect(args["member"] in text(), "the member is in the reciprocity ledger")

    # Mark it a false positive, through the form.
    goto("/ui/indicator?id=" + urllib.parse.quote(args["indicator"], safe=""))
    driver.find_element(By.ID, "fp-reason").send_keys('our lab\'s test file <b>"bold"</b>')
    submitted(driver.find_element(By.ID, "fp-mark"))
    inert()
    status = driver.find_element(By.ID, "fp-status").text
    expect("Marked a false positive" in status and '<b>"bold"</b>' in status,
           f"the mark and its reason (as text) are shown: {status}")

    # Sharing after: the community is told it is a false positive.
    goto("/ui/sharing")
    bundle = driver.find_element(By.CSS_SELECTOR, "pre.bundle").text
    expect("strongly-disagree" in bundle and "false positive" in bundle,
           "the preview carries the false-positive opinion after the mark")

    # Undo it.
    goto("/ui/indicator?id=" + urllib.parse.quote(args["indicator"], safe=""))
    submitted(driver.find_element(By.ID, "fp-undo"))
    inert()
    expect("Not marked" in driver.find_element(By.ID, "fp-status").text, "the undo took effect")

    # Sources: the hostile source name is text there too.
    goto("/ui/sources")
    for h in args["hostile"]:
        expect(h in text(), f"the literal {h!r} is shown on the sources page")

    # Log out: the session is gone.
    submitted(driver.find_element(By.CSS_SELECTOR, "form.logout button"))
    arrived("/ui/login", "logout goes to the login")
    driver.get(base + "/ui/sightings")
    expect(driver.current_url.endswith("/ui/login"), "after logout the pages need a login again")
finally:
    driver.quit()
print("dashboard test: ok")
