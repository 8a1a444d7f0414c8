"""Static checks (pyflakes errors, syntax, 120-column lines) over every Python file, with ruff."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--no-cache', '--select', 'F,E9,E501',
                           '--line-length', '120', 'deepseqslam_ros', 'training', 'test', 'benchmarks', 'launch',
                           'setup.py'], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
