"""Text on the learner pages stays readable: every visible piece of text has at least the
WCAG AA contrast against the background it sits on (4.5:1, 3:1 for large text), and buttons
and form fields are written in the page's typeface, not the browser's default."""

from __future__ import annotations

import pytest

from tests.browser.conftest import make_learner, sign_in
from tests.factories import make_classroom, make_instrument

pytestmark = pytest.mark.browser

# Each element that holds text of its own, with its colour's contrast against the first
# opaque background behind it.
LOW_CONTRAST = """() => {
  function rgba(value) {
    const m = value.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(",").map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  }
  function luminance(c) {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  }
  function background(el) {
    for (; el; el = el.parentElement) {
      const c = rgba(getComputedStyle(el).backgroundColor);
      if (c && c.a > 0.5) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  }
  const low = [];
  document.querySelectorAll("body *").forEach((el) => {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) return;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden") return;
    const a = luminance(rgba(style.color)), b = luminance(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const large = size >= 24 || (size >= 18.66 && bold);
    if (ratio < (large ? 3 : 4.5)) low.push(`${el.textContent.trim().slice(0, 40)}: ${ratio.toFixed(2)}`);
  });
  return low;
}"""


# The typeface of every visible button, input and select that differs from the page's.
OTHER_TYPEFACES = """() => {
  const page = getComputedStyle(document.body).fontFamily;
  return [...document.querySelectorAll("button, input, select")]
    .filter((el) => el.getClientRects().length && el.type !== "range" && el.type !== "radio")
    .filter((el) => getComputedStyle(el).fontFamily !== page)
    .map((el) => `${el.tagName} ${el.name || el.textContent.trim()}: ${getComputedStyle(el).fontFamily}`);
}"""


@pytest.mark.django_db(transaction=True)
def test_every_text_on_the_pages_reaches_aa_contrast_in_the_page_typeface(live_server, browser):
    classroom = make_classroom(name="Contrast class")
    make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "rosa")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        # Signed out: the sign-up button in the top bar is the way in for a new student.
        for path in ("/", "/login/", "/signup/"):
            page.goto(f"{live_server.url}{path}")
            assert page.locator(".topbar").get_by_role("link", name="Sign up").is_visible()
            assert page.evaluate(LOW_CONTRAST) == [], path
        sign_in(page, live_server.url, "rosa")
        for path in (f"/accounts/{account.pk}/", f"/accounts/{account.pk}/trade/"):
            page.goto(f"{live_server.url}{path}")
            assert page.evaluate(LOW_CONTRAST) == [], path
            assert page.evaluate(OTHER_TYPEFACES) == [], path
    finally:
        context.close()


# The contrast between the darkest and the lightest pixel of a PNG screenshot, read in a blank
# page of its own (the site's CSP rightly refuses data: images).
SPREAD = """async (png) => {
  const image = new Image();
  image.src = "data:image/png;base64," + png;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const data = context.getImageData(0, 0, image.width, image.height).data;
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  let low = 1, high = 0;
  for (let i = 0; i < data.length; i += 4) {
    const l = 0.2126 * f(data[i]) + 0.7152 * f(data[i + 1]) + 0.0722 * f(data[i + 2]);
    low = Math.min(low, l);
    high = Math.max(high, l);
  }
  return (high + 0.05) / (low + 0.05);
}"""


@pytest.mark.django_db(transaction=True)
def test_the_date_fields_calendar_button_stands_out_from_the_dark_field(live_server, browser):
    """The browser draws a date field's calendar button itself: in its light scheme, black on
    the page's near-black field, where it could not be seen (3:1 is WCAG's minimum for a
    control)."""
    import base64

    make_learner(make_classroom(name="Calendar class"), "cal")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, live_server.url, "cal")
        page.goto(f"{live_server.url}/api-keys/")
        box = page.locator("input[type=date]").bounding_box()
        assert box is not None
        # The button sits at the field's right end; the field's border is left out.
        button = {"x": box["x"] + box["width"] - 32, "y": box["y"] + 4, "width": 28}
        png = page.screenshot(clip={**button, "height": box["height"] - 8})
        blank = context.new_page()
        spread = blank.evaluate(SPREAD, base64.b64encode(png).decode())
        assert spread >= 3, spread
    finally:
        context.close()
