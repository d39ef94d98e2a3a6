"""Cold start of a knowledge command next to the floor set by its own libraries.

Measures, in one run and interleaved (so machine noise hits both alike), the wall time of
``unlearn-kb query --intent removal`` and of ``python -c "import typer, rich.table, pydantic,
yaml"``. Target (issue 2): under 0.25 s and at most 2x the floor.

    python benchmarks/cold_start.py [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def wall_time(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    script = shutil.which("unlearn-kb") or str(Path(sys.executable).parent / "unlearn-kb")
    commands = {
        "floor: import typer, rich.table, pydantic, yaml": [sys.executable, "-c",
                                                            "import typer, rich.table, pydantic, yaml"],
        "unlearn-kb query --intent removal": [script, "query", "--intent", "removal"],
        "unlearn-kb query --intent removal --json": [script, "query", "--intent", "removal", "--json"],
        "unlearn-kb --help": [script, "--help"],
    }
    for argv in commands.values():  # warm the file cache once
        wall_time(argv)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, argv in commands.items():
            times[name].append(wall_time(argv))
    floor = statistics.median(next(iter(times.values())))
    print(f"median of {args.runs} interleaved runs, {sys.version.split()[0]}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:50s} {median:6.3f} s  ({median / floor:4.2f}x floor)")


if __name__ == "__main__":
    main()
