"""The whole DDP/FSDP matrix: every strategy with every task killed with SIGKILL after its first validation and
resumed to the uninterrupted run's weights (the test suite runs five of the six cells and kills one, FSDP with
the language model, to stay in its budget), plus the rest of tests/test_distributed.py.
Prints each test with pass/fail and seconds.

    python benchmarks/distributed_matrix.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from save_results import save

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        env = {**os.environ, "BUILDER_FULL_MATRIX": "1"}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                        str(ROOT / "tests" / "test_distributed.py")], cwd=ROOT, env=env)
        cases = ET.parse(report).getroot().iter("testcase")
        rows = [{"test": c.get("name"), "seconds": float(c.get("time")),
                 "result": "fail" if c.find("failure") is not None or c.find("error") is not None else
                 "skip" if c.find("skipped") is not None else "pass"} for c in cases]
    lines = ["# tests/test_distributed.py with every matrix cell killed and resumed", "",
             "`python benchmarks/distributed_matrix.py`", "", "| test | result | seconds |", "|---|---|---|"]
    lines += [f"| {r['test']} | {r['result']} | {r['seconds']:.1f} |" for r in rows]
    print("\n".join(lines))
    save("distributed_matrix", {"rows": rows}, lines)


if __name__ == "__main__":
    main()
