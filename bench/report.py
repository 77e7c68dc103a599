"""bench/report.py: summarise benchmark samples, print the table, write the JSON.

Interface
    Row(workload, unit, fulmar_samples, postfix_samples, note="")
        one workload; a sample list is empty when that side could not run
        it (the cell shows "n/a").
    rows_to_records(rows) -> list[dict]
        the JSON shape documented in bench/README.md: one object per row
        with workload, unit, fulmar, postfix, ratio, min, max (medians;
        ratio = fulmar / postfix; min and max are Fulmar's range), plus
        postfix_min, postfix_max, runs and note.  Missing values are null.
    format_table(rows) -> str      the human table (one line per row)
    write_json(rows, directory, stamp=None) -> path
        writes <directory>/<stamp>.json (stamp: UTC YYYYmmddTHHMMSSZ).

A workload whose name contains "throughput" is higher-is-better; every
other workload (latency, memory, CPU, time) is lower-is-better.  The table
marks each row with the better side so it reads without that rule.

Pure functions apart from write_json; tests/unit/bench/test_bench_format.py
checks the shape.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field

NA = "n/a"


@dataclass
class Row:
    workload: str
    unit: str
    fulmar_samples: list[float] = field(default_factory=list)
    postfix_samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def higher_is_better(self) -> bool:
        return "throughput" in self.workload


def _median(samples: list[float]) -> float | None:
    return statistics.median(samples) if samples else None


def _ratio(fulmar: float | None, postfix: float | None) -> float | None:
    if fulmar is None or postfix is None or postfix == 0:
        return None
    return fulmar / postfix


def record(row: Row) -> dict:
    f = _median(row.fulmar_samples)
    p = _median(row.postfix_samples)
    return {
        "workload": row.workload,
        "unit": row.unit,
        "fulmar": f,
        "postfix": p,
        "ratio": _ratio(f, p),
        "min": min(row.fulmar_samples) if row.fulmar_samples else None,
        "max": max(row.fulmar_samples) if row.fulmar_samples else None,
        "postfix_min": min(row.postfix_samples) if row.postfix_samples else None,
        "postfix_max": max(row.postfix_samples) if row.postfix_samples else None,
        "runs": max(len(row.fulmar_samples), len(row.postfix_samples)),
        "note": row.note,
    }


def rows_to_records(rows: list[Row]) -> list[dict]:
    return [record(r) for r in rows]


def _num(value: float | None) -> str:
    if value is None:
        return NA
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return "%.0f" % value
    if abs(value) >= 10:
        return "%.1f" % value
    if abs(value) >= 0.1:
        return "%.2f" % value
    return "%.3g" % value


def _better(row: Row, rec: dict) -> str:
    if rec["ratio"] is None:
        return ""
    if rec["fulmar"] == rec["postfix"]:
        return "="
    fulmar_wins = (rec["fulmar"] > rec["postfix"]) == row.higher_is_better
    return "F" if fulmar_wins else "P"


HEADER = ("workload", "unit", "Fulmar", "Postfix", "ratio", "better", "Fulmar min-max",
          "Postfix min-max")


def format_table(rows: list[Row]) -> str:
    lines = [HEADER]
    for row in rows:
        rec = record(row)
        span = (NA if rec["min"] is None else "%s-%s" % (_num(rec["min"]), _num(rec["max"])))
        pspan = (NA if rec["postfix_min"] is None
                 else "%s-%s" % (_num(rec["postfix_min"]), _num(rec["postfix_max"])))
        ratio = NA if rec["ratio"] is None else "%.2fx" % rec["ratio"]
        lines.append((row.workload, row.unit, _num(rec["fulmar"]), _num(rec["postfix"]), ratio,
                      _better(row, rec), span, pspan))
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = []
    for n, line in enumerate(lines):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_json(rows: list[Row], directory: str, stamp: str | None = None) -> str:
    stamp = stamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, stamp + ".json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(rows_to_records(rows), fh, indent=1)
        fh.write("\n")
    return path
