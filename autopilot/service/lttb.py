"""Largest-Triangle-Three-Buckets downsampling (Steinarsson, 2013) for the metrics API.

A long run's series of 100k points is sent as ``threshold`` points that keep its shape:
the first and last points, and in each bucket between them the point that spans the
largest triangle with its neighbours, so spikes and dips survive where a stride would
drop them.

Example:
    >>> import numpy as np
    >>> x = np.arange(10_000.0)
    >>> y = np.sin(x / 100)
    >>> y[5_000] = 50.0  # a spike
    >>> keep = lttb(x, y, 200)
    >>> len(keep), 5_000 in keep
    (200, True)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def lttb(x: npt.ArrayLike, y: npt.ArrayLike, threshold: int) -> npt.NDArray[np.intp]:
    """The indices of the points to keep, ascending (every index when there are no more
    than ``threshold`` points).

    Args:
        x: the points' x values (steps), ascending.
        y: their y values, finite.
        threshold: how many points to keep, at least 3.

    Raises:
        ValueError: ``threshold`` below 3, or ``x`` and ``y`` of different lengths.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if threshold < 3:
        raise ValueError(f"threshold must be at least 3, got {threshold}")
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-d and of one length, got {xs.shape} and {ys.shape}")
    n = len(xs)
    if n <= threshold:
        return np.arange(n, dtype=np.intp)
    edges = np.linspace(1, n - 1, threshold - 1).astype(np.intp)  # buckets of the inner points
    # each bucket's next-bucket centroid, all at once (the last one's "next" is the last point)
    starts = edges[1:]
    ends = np.append(edges[2:], n)
    counts = ends - starts
    sum_x, sum_y = np.add.reduceat(xs, starts), np.add.reduceat(ys, starts)
    empty = counts <= 0
    cxs = np.where(empty, xs[-1], sum_x / np.maximum(counts, 1))
    cys = np.where(empty, ys[-1], sum_y / np.maximum(counts, 1))
    keep = np.empty(threshold, dtype=np.intp)
    keep[0], keep[-1] = 0, n - 1
    a = 0
    for i in range(threshold - 2):
        lo = int(edges[i])
        hi = max(int(edges[i + 1]), lo + 1)
        ax, ay, cx, cy = xs[a], ys[a], cxs[i], cys[i]
        area = np.abs((ax - cx) * (ys[lo:hi] - ay) - (ax - xs[lo:hi]) * (cy - ay))
        a = lo + int(area.argmax())
        keep[i + 1] = a
    return keep
