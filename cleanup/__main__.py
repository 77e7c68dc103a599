"""Entry point: `python -I -m cleanup` (started by master)."""

from fulmar import daemon
from cleanup.service import serve

if __name__ == "__main__":
    daemon.main("cleanup", serve)
