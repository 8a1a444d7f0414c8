"""A short buffer of odometry positions, interpolated at camera frame stamps. No ROS here."""
from __future__ import annotations

import bisect
import math
from collections import Counter


class OdometryBuffer:
    """(stamp, x, y) samples in time order; `position_at` interpolates between neighbours.

    Bad samples are counted in `problems` (never raised): non-finite values ('odom_nan') and
    stamps going backwards ('time_backwards', e.g. a bag replayed in a loop: the buffer restarts).
    """

    def __init__(self, horizon: float = 10.0, max_gap: float = 0.5):
        self.horizon, self.max_gap = horizon, max_gap
        self.stamps: list[float] = []
        self.xy: list[tuple[float, float]] = []
        self.problems: Counter[str] = Counter()

    def add(self, stamp: float, x: float, y: float) -> bool:
        if not all(math.isfinite(v) for v in (stamp, x, y)):
            self.problems['odom_nan'] += 1
            return False
        if self.stamps and stamp < self.stamps[-1]:
            self.problems['time_backwards'] += 1
            self.stamps.clear()
            self.xy.clear()
        self.stamps.append(stamp)
        self.xy.append((x, y))
        while self.stamps[-1] - self.stamps[0] > self.horizon:
            self.stamps.pop(0)
            self.xy.pop(0)
        return True

    def position_at(self, stamp: float) -> tuple[float, float] | None:
        """Interpolated (x, y) at `stamp`; None (and counted) when no odometry is close enough."""
        if not self.stamps:
            self.problems['no_odom'] += 1
            return None
        i = bisect.bisect_left(self.stamps, stamp)
        if i == 0 or i == len(self.stamps):
            nearest = 0 if i == 0 else len(self.stamps) - 1
            if abs(self.stamps[nearest] - stamp) > self.max_gap:
                self.problems['odom_too_old' if i == 0 else 'odom_gap'] += 1
                return None
            return self.xy[nearest]
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        if min(stamp - t0, t1 - stamp) > self.max_gap:
            self.problems['odom_gap'] += 1
            return None
        a = (stamp - t0) / (t1 - t0) if t1 > t0 else 0.0
        (x0, y0), (x1, y1) = self.xy[i - 1], self.xy[i]
        return x0 + a * (x1 - x0), y0 + a * (y1 - y0)
