"""Input images made in code: the init image, the inpainting mask and the canny control image.

The source benchmark downloaded its images from URLs; sdtop must run offline and give
the same bytes on every run, so the inputs are drawn procedurally from a seed (numpy only,
no cv2). What matters for a benchmark is their size and that they are ordinary images
(smooth regions, hard edges), not what they depict; still, the scene is a small landscape
with a castle, after the seed prompt.

Same seed, same size -> identical bytes; a different seed -> a different image.
Worker only (imports numpy and PIL).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

# The source document's inputs were 512x512; draw there, then scale to the cell's size so a
# 64x64 tiny cell and a 1024x1024 SDXL cell show the same scene.
BASE_SIZE = 512

FloatImage = NDArray[np.float64]


def _scene(seed: int) -> FloatImage:
    """An RGB landscape in [0, 1], BASE_SIZE square: sky, sun, hills, a castle, grain."""
    rng = np.random.default_rng(seed)
    n = BASE_SIZE
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) / n

    sky_top = rng.uniform([0.15, 0.25, 0.55], [0.35, 0.45, 0.85])
    sky_low = rng.uniform([0.75, 0.55, 0.45], [0.95, 0.8, 0.7])
    img = sky_top[None, None, :] * (1 - y[..., None]) + sky_low[None, None, :] * y[..., None]

    sx, sy, sr = rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.3), rng.uniform(0.04, 0.09)
    sun = (x - sx) ** 2 + (y - sy) ** 2 < sr**2
    img[sun] = rng.uniform([0.9, 0.75, 0.3], [1.0, 0.95, 0.6])

    # Two ridges of summed sines, each filled below its line.
    for depth, base in ((0, 0.55), (1, 0.7)):
        freqs = rng.uniform(1.0, 6.0, size=3)
        phases = rng.uniform(0, 2 * np.pi, size=3)
        ridge = base + sum(
            0.04 / (k + 1) * np.sin(2 * np.pi * f * x[0] + p)
            for k, (f, p) in enumerate(zip(freqs, phases, strict=True))
        )
        colour = rng.uniform([0.1, 0.3, 0.1], [0.3, 0.6, 0.3]) * (1.0 - 0.3 * depth)
        img[y > ridge[None, :]] = colour

    # A castle: a keep, two towers and crenellations, all axis-aligned boxes.
    stone = rng.uniform(0.45, 0.7) * np.ones(3)
    cx = rng.uniform(0.3, 0.7)
    boxes = [
        (cx - 0.12, cx + 0.12, 0.42, 0.72),  # keep
        (cx - 0.17, cx - 0.09, 0.32, 0.72),  # left tower
        (cx + 0.09, cx + 0.17, 0.32, 0.72),  # right tower
    ]
    boxes += [(cx - 0.12 + i * 0.048, cx - 0.096 + i * 0.048, 0.39, 0.42) for i in range(5)]
    for x0, x1, y0, y1 in boxes:
        img[(x >= x0) & (x < x1) & (y >= y0) & (y < y1)] = stone
    door = (np.abs(x - cx) < 0.03) & (y > 0.62) & (y < 0.72)
    img[door] = stone * 0.35

    img += rng.normal(0.0, 0.015, size=img.shape)
    return np.clip(img, 0.0, 1.0)


def _to_uint8(img: FloatImage) -> NDArray[np.uint8]:
    return np.asarray(np.round(img * 255.0), dtype=np.uint8)


def init_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """The img2img/inpaint starting image: RGB, ``width`` x ``height``."""
    base = Image.fromarray(_to_uint8(_scene(seed)), mode="RGB")
    if (width, height) == base.size:
        return base
    return base.resize((width, height), Image.Resampling.BICUBIC)


def inpaint_mask(width: int, height: int, seed: int = 0) -> Image.Image:
    """Mode "L": 255 where inpainting repaints (an off-centre ellipse, ~1/5 of the area)."""
    rng = np.random.default_rng(seed + 1_000_003)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    cx, cy = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.35, 0.65)
    rx, ry = width * rng.uniform(0.2, 0.3), height * rng.uniform(0.2, 0.3)
    inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0
    return Image.fromarray(np.where(inside, 255, 0).astype(np.uint8), mode="L")


def _convolve_rows(a: FloatImage, k: FloatImage) -> FloatImage:
    pad = len(k) // 2
    p = np.pad(a, ((0, 0), (pad, pad)), mode="edge")
    return np.asarray(sum(w * p[:, i : i + a.shape[1]] for i, w in enumerate(k)))


def _blur(a: FloatImage, sigma: float = 1.0) -> FloatImage:
    r = max(1, round(2 * sigma))
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(t**2) / (2 * sigma**2))
    k /= k.sum()
    return _convolve_rows(_convolve_rows(a, k).T, k).T


def canny_edges(gray: FloatImage, low: float = 0.08, high: float = 0.2) -> NDArray[np.bool_]:
    """Canny in numpy: blur, Sobel, non-maximum suppression, hysteresis (one dilation pass).

    Thresholds are fractions of the largest gradient, so the result does not depend on the
    image's contrast. One hysteresis pass (weak pixels touching a strong one) is enough for
    a control image; full connectivity tracing would add code, not signal.
    """
    g = _blur(gray)
    p = np.pad(g, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    mag = np.hypot(gx, gy)
    peak = float(mag.max())
    if peak == 0.0:
        return np.zeros(gray.shape, dtype=bool)
    mag /= peak

    # Quantise the gradient direction to 0/45/90/135 degrees; keep local maxima along it.
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = (np.round(angle / 45.0).astype(np.int64)) % 4
    m = np.pad(mag, 1)
    h, w = mag.shape
    neighbours = {0: ((0, 1), (0, -1)), 1: ((1, 1), (-1, -1)), 2: ((1, 0), (-1, 0)), 3: ((1, -1), (-1, 1))}
    keep = np.zeros_like(mag, dtype=bool)
    for s, ((dy1, dx1), (dy2, dx2)) in neighbours.items():
        n1 = m[1 + dy1 : 1 + dy1 + h, 1 + dx1 : 1 + dx1 + w]
        n2 = m[1 + dy2 : 1 + dy2 + h, 1 + dx2 : 1 + dx2 + w]
        keep |= (sector == s) & (mag >= n1) & (mag >= n2)
    thin = np.where(keep, mag, 0.0)

    strong = thin >= high
    weak = (thin >= low) & ~strong
    sp = np.pad(strong, 1)
    near_strong = np.zeros_like(strong)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near_strong |= sp[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    return np.asarray(strong | (weak & near_strong))


def control_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """The ControlNet canny input: white edges of :func:`init_image` on black, RGB."""
    rgb = np.asarray(init_image(width, height, seed), dtype=np.float64) / 255.0
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    edges = np.where(canny_edges(gray), 255, 0).astype(np.uint8)
    return Image.fromarray(np.repeat(edges[..., None], 3, axis=2), mode="RGB")
