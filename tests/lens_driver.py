"""Driving the latent lens (``app/lens``) from Playwright, for the browser tests: its
selectors, its test hooks (``window.__latentLens[key]``, ``data-decoded-z``) and the
geometry of its sliders. Playwright's CSS locators pierce the component's shadow root."""

from __future__ import annotations

import numpy as np

LENS = ".latent-lens[data-key='lens']"
API = "window.__latentLens && window.__latentLens.lens"
WAIT_MS = 60_000


def decodes(page) -> int:
    """How many images the browser has decoded so far."""
    return page.evaluate(f"() => {API}.decodes")


def wait_decodes_above(page, n: int) -> None:
    """Wait until the browser decoded again and two more frames were painted."""
    page.wait_for_function(f"() => {API}.decodes > {n}", timeout=WAIT_MS)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => "
                  "requestAnimationFrame(r)))")


def pixels(page) -> tuple[np.ndarray, list[float]]:
    """The decoded canvas as (H, W, 3) and the z it shows (``data-decoded-z``)."""
    (h, w, data), z = page.locator(LENS).evaluate("""root => {
        const c = root.querySelector('canvas.lens-image');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
        return [[c.height, c.width, Array.from(d.data)], JSON.parse(root.dataset.decodedZ)];
    }""")
    return np.asarray(data, dtype=np.float64).reshape(h, w, 4)[..., :3], z


def slider_thumb(page, dim: int) -> tuple[float, float, float]:
    """(x, y) of slider z<dim>'s thumb and the slider's width, in viewport pixels."""
    box, fraction = page.locator(f"{LENS} input[aria-label='z{dim}']").evaluate(
        """el => { const r = el.getBoundingClientRect();
                   return [[r.x, r.y, r.width, r.height],
                           (el.valueAsNumber - el.min) / (el.max - el.min)]; }""")
    x, y, w, h = box
    thumb = 16  # Chromium's range thumb; its centre travels over width - thumb
    return x + thumb / 2 + fraction * (w - thumb), y + h / 2, w
