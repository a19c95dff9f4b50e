"""The command line of the benchmark scripts that write one Markdown table:
`python benchmarks/<script> OUTPUT.md`."""

import os
import sys


def main(argv, script, lines):
    """Writes `lines()` (the Markdown lines, measured only once the arguments are right)
    to the one argument, prints them and returns 0; without exactly one argument, prints
    the usage on stderr and returns 2."""
    if len(argv) != 1:
        print(f"usage: python benchmarks/{os.path.basename(script)} OUTPUT.md", file=sys.stderr)
        return 2
    text = "\n".join(lines()) + "\n"
    with open(argv[0], "w") as f:
        f.write(text)
    print(text)
    return 0
