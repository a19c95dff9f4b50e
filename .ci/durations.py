"""Where a test run's time goes: per-file sums and which xdist worker ran each file.

Reads the output of `python -m pytest -v -n 2 --dist loadfile --durations=0 ...` (a file
name, or stdin) and prints each worker's total, the files by time, and the slowest tests.
With `--dist loadfile` the wall time is about the busier worker's total.

    python -m pytest -v -n 2 --dist loadfile --durations=0 tests > run.log
    python .ci/durations.py run.log 40
"""

import collections
import re
import sys


def main(text, top):
    worker = {}
    for match in re.finditer(r"\[(gw\d+)\] \[\s*\d+%\] [A-Z]+ (\S+)", text):
        worker[match.group(2).split("::")[0]] = match.group(1)
    per_file, per_test = collections.Counter(), collections.Counter()
    for match in re.finditer(r"^([\d.]+)s (?:setup|call|teardown)\s+(\S+)", text, re.M):
        seconds, test = float(match.group(1)), match.group(2)
        per_file[test.split("::")[0]] += seconds
        per_test[test] += seconds
    per_worker = collections.Counter()
    for name, seconds in per_file.items():
        per_worker[worker.get(name, "?")] += seconds
    print("workers:", ", ".join(f"{w} {s:.0f} s" for w, s in sorted(per_worker.items())))
    for name, seconds in per_file.most_common():
        print(f"{seconds:8.1f} s  {worker.get(name, '?'):4}  {name}")
    print(f"slowest {top} tests:")
    for name, seconds in per_test.most_common(top):
        print(f"{seconds:8.1f} s  {name}")


if __name__ == "__main__":
    source = open(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "-" else sys.stdin
    main(source.read(), int(sys.argv[2]) if len(sys.argv) > 2 else 30)
