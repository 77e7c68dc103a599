"""bench/profile.py: profile Fulmar's per-message path (`make profile`).

Not implemented yet (issue 7): prints one line and exits 69 (EX_UNAVAILABLE)
so that nobody mistakes the placeholder for a result.
"""
import sys

EX_UNAVAILABLE = 69

if __name__ == "__main__":
    print("bench/profile.py: not implemented yet (see issue 7)", file=sys.stderr)
    sys.exit(EX_UNAVAILABLE)
