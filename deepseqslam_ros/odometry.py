"""A short buffer of odometry positions, interpolated at camera frame stamps. No ROS here."""
from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable


class OdometryBuffer:
    """(stamp, x, y) samples in time order; `position_at` interpolates between neighbours.

    Problems are counted in `problems` and passed to `on_problem(kind, message)`, never raised:
    non-finite values ('odom_nan'), stamps going backwards ('time_backwards', e.g. a bag replayed in
    a loop: the buffer restarts) and frames without odometry close enough ('no_odom', 'odom_gap',
    'odom_too_old').
    """

    def __init__(self, horizon: float = 10.0, max_gap: float = 0.5,
                 on_problem: Callable[[str, str], None] | None = None):
        self.horizon, self.max_gap, self.on_problem = horizon, max_gap, on_problem
        self.stamps: list[float] = []
        self.xy: list[tuple[float, float]] = []
        self.problems: Counter[str] = Counter()

    def _problem(self, kind: str, message: str) -> None:
        self.problems[kind] += 1
        if self.on_problem is not None:
            self.on_problem(kind, message)

    def add(self, stamp: float, x: float, y: float) -> bool:
        if not all(math.isfinite(v) for v in (stamp, x, y)):
            self._problem('odom_nan', f'odometry at {stamp:.3f}: non-finite pose')
            return False
        if self.stamps and stamp < self.stamps[-1]:
            self._problem('time_backwards', f'odometry stamp {stamp:.3f} < {self.stamps[-1]:.3f}: buffer restarted')
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
            self._problem('no_odom', f'frame at {stamp:.3f}: no odometry received yet')
            return None
        i = bisect.bisect_left(self.stamps, stamp)
        if i == 0 or i == len(self.stamps):
            nearest = 0 if i == 0 else len(self.stamps) - 1
            if abs(self.stamps[nearest] - stamp) > self.max_gap:
                self._problem('odom_too_old' if i == 0 else 'odom_gap',
                              f'frame at {stamp:.3f}: no odometry within {self.max_gap} s')
                return None
            return self.xy[nearest]
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        if min(stamp - t0, t1 - stamp) > self.max_gap:
            self._problem('odom_gap', f'frame at {stamp:.3f}: no odometry within {self.max_gap} s')
            return None
        a = (stamp - t0) / (t1 - t0) if t1 > t0 else 0.0
        (x0, y0), (x1, y1) = self.xy[i - 1], self.xy[i]
        return x0 + a * (x1 - x0), y0 + a * (y1 - y0)
