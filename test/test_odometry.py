import math

from deepseqslam_ros.odometry import OdometryBuffer


def test_interpolation_and_problems():
    odom = OdometryBuffer(horizon=5.0, max_gap=0.5)
    for t in range(4):
        odom.add(10.0 + t, float(t), 2.0 * t)
    assert odom.position_at(11.5) == (1.5, 3.0)
    assert odom.position_at(13.2) == (3.0, 6.0)            # just after the last sample: held
    assert odom.position_at(20.0) is None and odom.problems['odom_gap'] == 1
    assert odom.position_at(5.0) is None and odom.problems['odom_too_old'] == 1
    assert not odom.add(14.0, math.nan, 0.0) and not odom.add(14.0, 0.0, math.inf)
    assert odom.problems['odom_nan'] == 2
    odom.add(3.0, 7.0, 7.0)                                 # time went backwards: restart
    assert odom.problems['time_backwards'] == 1 and odom.position_at(3.0) == (7.0, 7.0)


def test_horizon_bounds_memory_and_gaps_inside():
    odom = OdometryBuffer(horizon=2.0, max_gap=0.4)
    for i in range(100):
        odom.add(i * 0.1, i, 0)
    assert len(odom.stamps) <= 21
    odom.add(20.0, 0, 0)
    assert odom.position_at(15.0) is None                   # 5 s hole between samples
