"""The code stays ruff-clean (pyproject.toml's rules), so style does not drift between reviews."""

import subprocess
import sys

from testing.program import ROOT


def test_ruff_reports_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
