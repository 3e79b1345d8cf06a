"""The reliability report: runs every test marked `reliability(<category>)` and prints one table, per category: the
cases tried, how many survived (passed), the data lost (the sum of the `data_lost` property that cases record with
`record_property`; it must be 0), the bad inputs refused with a clear one-line error (the `clear_error` property, or
else every passed `bad_input` case), and the time they took. The same table, as markdown, goes to --out.

    make reliability OUT=reliability.md
    .venv/bin/python tests/reliability/report.py --out reliability.md [pytest args, e.g. -k kill]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = ("kill", "concurrent", "storage", "reward", "guard", "bad_input", "security")


@dataclass
class Row:
    """One category's results."""

    cases: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    data_lost: int | None = None
    clear_errors: int | None = None
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


class Collector:
    """A pytest plugin: the category of every collected case and the outcome, time and properties of each."""

    def __init__(self):
        self.category: dict[str, str] = {}
        self.rows: dict[str, Row] = defaultdict(Row)
        self.outcome: dict[str, str] = {}
        self.properties: dict[str, dict] = {}

    def pytest_collection_modifyitems(self, items):
        for item in items:
            marker = item.get_closest_marker("reliability")
            if marker is not None:
                self.category[item.nodeid] = marker.args[0] if marker.args else "uncategorised"

    def pytest_runtest_logreport(self, report):
        category = self.category.get(report.nodeid)
        if category is None:
            return
        row = self.rows[category]
        row.seconds += report.duration
        self.properties[report.nodeid] = dict(report.user_properties)  # each phase's report carries them all
        if report.failed or report.skipped or report.when == "call":
            self.outcome.setdefault(report.nodeid, "failed" if report.failed else report.outcome)
            if report.failed:
                self.outcome[report.nodeid] = "failed"

    def finish(self) -> dict[str, Row]:
        """Rows with the cases counted, in the categories' order."""
        for nodeid, outcome in self.outcome.items():
            row = self.rows[self.category[nodeid]]
            row.cases += 1
            setattr(row, outcome, getattr(row, outcome) + 1)
            if outcome == "failed":
                row.failures.append(nodeid)
            properties = self.properties.get(nodeid, {})
            if "data_lost" in properties:
                row.data_lost = (row.data_lost or 0) + int(properties["data_lost"])
            if "clear_error" in properties:
                row.clear_errors = (row.clear_errors or 0) + bool(properties["clear_error"])
        order = [c for c in CATEGORIES if c in self.rows] + sorted(set(self.rows) - set(CATEGORIES))
        return {c: self.rows[c] for c in order}


def _clear_errors(name: str, row: Row) -> str:
    if row.clear_errors is not None:
        return str(row.clear_errors)
    return str(row.passed) if name == "bad_input" else "–"


def markdown(rows: dict[str, Row], wall_s: float) -> str:
    """The report as a markdown table (and the failed cases under it)."""
    lines = [
        "| category | cases tried | survived / passed | failed | skipped | data lost | bad inputs with a clear error "
        "| time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lost = "–" if row.data_lost is None else str(row.data_lost)
        lines.append(
            f"| {name} | {row.cases} | {row.passed} | {row.failed} | {row.skipped} | {lost} | "
            f"{_clear_errors(name, row)} | {row.seconds:.0f} |"
        )
    total = Row(
        cases=sum(r.cases for r in rows.values()),
        passed=sum(r.passed for r in rows.values()),
        failed=sum(r.failed for r in rows.values()),
        skipped=sum(r.skipped for r in rows.values()),
    )
    lost = sum(r.data_lost or 0 for r in rows.values())
    lines.append(
        f"| **all** | {total.cases} | {total.passed} | {total.failed} | {total.skipped} | {lost} | "
        f"{sum(int(c) for c in (_clear_errors(n, r) for n, r in rows.items()) if c.isdigit())} | {wall_s:.0f} |"
    )
    failures = [f"- failed: `{nodeid}`" for row in rows.values() for nodeid in row.failures]
    return "\n".join(lines + ([""] + failures if failures else [])) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the table as markdown here too")
    args, pytest_args = parser.parse_known_args(argv)
    sys.path.insert(0, str(PROJECT_ROOT))  # this checkout's packages, not an installed copy's
    collector, started = Collector(), time.monotonic()
    code = pytest.main(["-q", "-m", "reliability", "-p", "no:cacheprovider", *pytest_args], plugins=[collector])
    table = markdown(collector.finish(), time.monotonic() - started)
    sys.stdout.write("\nReliability report\n\n" + table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0 if code in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED) and collector.rows else int(code or 1)


if __name__ == "__main__":
    sys.exit(main())
