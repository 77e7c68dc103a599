"""bench/run.py: Fulmar and Postfix side by side (`make bench`, QUICK=1 for the short run).

Not implemented yet (issue 7): prints one line and exits 69 (EX_UNAVAILABLE)
so that nobody mistakes the placeholder for a result.
"""
import sys

EX_UNAVAILABLE = 69

if __name__ == "__main__":
    print("bench/run.py: not implemented yet (see issue 7)", file=sys.stderr)
    sys.exit(EX_UNAVAILABLE)
