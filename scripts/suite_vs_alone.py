"""Each slow test's time in the whole suite against its time alone, side by side, in one run.

    python scripts/suite_vs_alone.py [--top 25] [--suite-xml suite.xml]

First the whole suite runs once in one process (`scripts/test.sh` runs it in two workers, where each test shares
the cores with another: here like is compared with like), then each of its `--top`
slowest tests runs alone in a fresh pytest process, one after another. A test's time is pytest's: its setup, call
and teardown. A module fixture is paid by the first test that uses it in the suite and by every test alone, so a
test sharing one reads faster in the suite (ratio below 1). The issue's bar: no test over 45 s, each within 1.3x of
its time alone. Run it on an idle machine: on 2 cores any other heavy process doubles both columns unevenly.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pytest_times(xml: Path, *args: str) -> dict[str, float]:
    """Run pytest with `args`, writing `xml`; {node id: seconds}."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *args]
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return read_times(xml)


def read_times(xml: Path) -> dict[str, float]:
    """{node id: seconds} from a JUnit XML report."""
    times = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/") + ".py"
        times[f"{module}::{case.get('name')}"] = float(case.get("time", 0))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=25, help="how many of the slowest tests to run alone")
    parser.add_argument("--suite-xml", type=Path, help="a JUnit report of a whole-suite run to reuse")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        suite = read_times(args.suite_xml) if args.suite_xml else pytest_times(Path(tmp) / "suite.xml")
        slowest = sorted(suite, key=suite.get, reverse=True)[:args.top]
        print(f"suite: {len(suite)} tests, {sum(suite.values()):.0f} s in tests\n")
        print("| test | in the suite (s) | alone (s) | ratio |\n|---|---|---|---|")
        worst = 0.0
        for i, node in enumerate(slowest):
            alone = pytest_times(Path(tmp) / f"{i}.xml", node).get(node, float("nan"))
            ratio = suite[node] / alone
            worst = max(worst, ratio)
            print(f"| `{node}` | {suite[node]:.1f} | {alone:.1f} | {ratio:.2f} |", flush=True)
        print(f"\nlongest in the suite {max(suite.values()):.1f} s; worst ratio {worst:.2f}")


if __name__ == "__main__":
    main()
