"""Entry point: `python -I -m qmgr` (started by master)."""

from fulmar import daemon
from qmgr.manager import serve

if __name__ == "__main__":
    daemon.main("qmgr", serve, background=True)
