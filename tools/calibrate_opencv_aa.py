"""Measure OpenCV's anti-aliased thin-line profile, to calibrate the rasterizer's 'opencv' profile.

OpenCV (5.0) draws a 1-px LINE_AA line by stepping along its major axis and writing three pixels across
it, with weights that depend on the pixel's offset from the line (in minor-axis pixels) and on the slope.
This script draws long lines at many slopes and sub-pixel offsets, bins the drawn values by
(slope, offset) and by distance from an end point, and prints the two tables that
``omnidirector_jax/camera/raster.py`` embeds (``_AA_PROFILE`` and ``_AA_END_RAMP``).

Run: python tools/calibrate_opencv_aa.py
"""

import cv2
import numpy as np

SLOPES = np.arange(9) / 8.0  # |minor / major| in [0, 1]
OFFSETS = np.arange(-24, 25) / 16.0  # minor-axis offset of a pixel centre from the line, in pixels
RAMP = np.arange(-24, 25) / 16.0  # major-axis distance of a column inside the end point (positive = inside)


def _line(img, p0, p1):
    q = lambda p: (int(round(p[0] * 16)), int(round(p[1] * 16)))  # noqa: E731
    cv2.line(img, q(p0), q(p1), (255, 255, 255), 1, cv2.LINE_AA, 4)


def profile_table() -> np.ndarray:
    table = np.zeros((len(SLOPES), len(OFFSETS)))
    for i, slope in enumerate(SLOPES):
        sums, counts = np.zeros(len(OFFSETS)), np.zeros(len(OFFSETS))
        for k in range(32):
            y0 = 20 + k / 32.0
            x0, x1 = 4.0, 196.0
            y1 = y0 + (x1 - x0) * slope
            img = np.zeros((int(y1) + 24, 204, 3), np.uint8)
            _line(img, (x0, y0), (x1, y1))
            p0 = np.round(np.array([x0, y0]) * 16) / 16
            p1 = np.round(np.array([x1, y1]) * 16) / 16
            m = (p1[1] - p0[1]) / (p1[0] - p0[0])
            for x in range(20, 180):
                y = p0[1] + (x - p0[0]) * m
                yc = int(np.floor(y + 0.5))
                for r in (yc - 1, yc, yc + 1):
                    b = int(np.round((r - y) * 16)) + 24
                    if 0 <= b < len(OFFSETS):
                        sums[b] += img[r, x, 0]
                        counts[b] += 1
        filled = counts > 0
        table[i, filled] = sums[filled] / counts[filled] / 255.0
        # Offsets never sampled (|d| > 1.5 is never written) stay 0.
    return table


def end_ramp() -> np.ndarray:
    sums, counts = np.zeros(len(RAMP)), np.zeros(len(RAMP))
    for k in range(16):
        x0, x1, y = 10 + k / 16, 60 + k / 16, 20.0
        img = np.zeros((40, 80, 3), np.uint8)
        _line(img, (x0, y), (x1, y))
        for x in range(6, 66):
            for s in (x - x0, x1 - x):  # distance inside each end point
                b = int(np.round(s * 16)) + 24
                if 0 <= b < len(RAMP) and min(x - x0, x1 - x) == s:
                    sums[b] += img[20, x, 0] / 232.0  # 232: the mid-line value of a horizontal line
                    counts[b] += 1
    ramp = np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)
    ramp[RAMP >= 1.5] = 1.0
    return np.clip(ramp, 0.0, 1.0)


if __name__ == "__main__":
    np.set_printoptions(linewidth=120, precision=3, suppress=True)
    print("_AA_PROFILE = np.array([")
    for row in profile_table():
        print("    [" + ", ".join(f"{v:.3f}" for v in row) + "],")
    print("])")
    print("_AA_END_RAMP = np.array([" + ", ".join(f"{v:.3f}" for v in end_ramp()) + "])")
