"""Point labels that never overlap: each number goes next to its point, at the first spot (rings
of growing distance, eight directions each) where its box touches no other label, no point and
stays inside the axes; a thin line leads to a label that had to move away from its point.

The axes' limits, scale and position must be final before the call (the placement is computed
in pixels), so use a fixed layout (``subplots_adjust``), not a constrained one.

>>> place_numbers(ax, [1.0, 1.0], [2.0, 2.0], ["1", "2"])          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

# unit directions, tried in this order: right, up-right, up, down-right, left, up-left, ...
_DIRECTIONS = ((1, 0), (1, 1), (0, 1), (1, -1), (-1, 0), (-1, 1), (0, -1), (-1, -1))
_RINGS = 10

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(a: Box, outer: Box) -> bool:
    return a[0] >= outer[0] and a[1] >= outer[1] and a[2] <= outer[2] and a[3] <= outer[3]


def _candidates(px: float, py: float, w: float, h: float, clear: float, step: float):
    """(ring, label box) candidates around the point (px, py), nearest ring first."""
    for ring in range(_RINGS):
        gap = clear + ring * step
        for ux, uy in _DIRECTIONS:
            cx = px + ux * (gap + w / 2)
            cy = py + uy * (gap + h / 2)
            yield ring, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def place_numbers(
    ax,
    xs: Sequence[float],
    ys: Sequence[float],
    labels: Sequence[str],
    fontsize: float = 8.0,
    marker_px: float = 6.0,
) -> list[Box]:
    """Annotate point i with labels[i]; return the label boxes (pixels), none overlapping."""
    from matplotlib.font_manager import FontProperties

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    font = FontProperties(size=fontsize)
    area = ax.get_window_extent(renderer).extents
    pts = ax.transData.transform(list(zip(xs, ys)))  # (N, 2) pixels
    taken: list[Box] = [
        (x - marker_px, y - marker_px, x + marker_px, y + marker_px) for x, y in pts
    ]
    boxes: list[Box] = []
    for (px, py), (x, y), label in zip(pts, zip(xs, ys), labels):
        w, h, _ = renderer.get_text_width_height_descent(label, font, ismath=False)
        w, h = w + 4, h + 4  # a little air around the digits
        ring, box = next(
            (
                (ring, box)
                for ring, box in _candidates(px, py, w, h, marker_px, h * 0.8)
                if _inside(box, area) and not any(_overlaps(box, t) for t in taken)
            ),
            (0, (px + marker_px, py + marker_px, px + marker_px + w, py + marker_px + h)),
        )
        taken.append(box)
        boxes.append(box)
        to_pt = 72.0 / fig.dpi
        dx, dy = ((box[0] + box[2]) / 2 - px) * to_pt, ((box[1] + box[3]) / 2 - py) * to_pt
        ax.annotate(
            label,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=fontsize,
            zorder=5,
            arrowprops={"arrowstyle": "-", "color": "#888", "lw": 0.6, "shrinkA": 4, "shrinkB": 4}
            if ring > 0
            else None,
        )
    return boxes
