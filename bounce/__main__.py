"""Entry point: `python -I -m bounce` (started by master for bounce, defer, trace)."""

from fulmar import daemon
from bounce.service import serve

if __name__ == "__main__":
    daemon.main("bounce", serve, background=True)
