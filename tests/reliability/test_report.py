"""tests/reliability/report.py: run on a throwaway test file, its table counts each category's cases, outcomes, the
data lost the cases record, and the bad inputs refused with a clear error; the markdown goes to --out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPORT = Path(__file__).with_name("report.py")
CASES = """
import pytest

@pytest.mark.reliability("kill")
def test_survives(record_property):
    record_property("data_lost", 0)

@pytest.mark.reliability("kill")
def test_loses_data(record_property):
    record_property("data_lost", 2)
    assert False

@pytest.mark.reliability("bad_input")
@pytest.mark.parametrize("value", [1, 2, 3])
def test_refused(value):
    assert value < 3

@pytest.mark.reliability("storage")
def test_skipped():
    pytest.skip("no server")

def test_not_in_the_report():
    pass
"""


def test_the_report_counts_every_category(tmp_path):
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    reliability(category): a report case\n")
    out = tmp_path / "report" / "reliability.md"
    done = subprocess.run(
        [sys.executable, str(REPORT), "--out", str(out), "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout[-2000:]  # a case failed
    table = out.read_text()
    assert table in done.stdout
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-2]] for line in table.splitlines()[2:6]}
    assert rows["kill"] == ["2", "1", "1", "0", "2", "–"]
    assert rows["storage"] == ["1", "0", "0", "1", "–", "–"]
    assert rows["bad_input"] == ["3", "2", "1", "0", "–", "2"]
    assert rows["**all**"] == ["6", "3", "2", "1", "2", "2"]
    assert "failed: `test_cases.py::test_loses_data`" in table
