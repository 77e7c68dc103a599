"""Entry point: `python -I -m local` (started by master)."""

from fulmar import daemon
from local.deliver import serve

if __name__ == "__main__":
    daemon.main("local", serve, keep_root=True)
