"""sendmail runs once per message: its start-up must not import what only
some options need (docs/performance.md, "changes and their effect")."""

import subprocess
import sys

# Imported only by options or paths that need them; each costs milliseconds
# (asyncio 20-100 ms on a loaded machine) on every submission.
HEAVY = ("asyncio", "subprocess", "email.utils", "fulmar.ipc.channel", "shutil", "sysconfig")


def test_sendmail_import_leaves_heavy_modules_out():
    code = ("import sys, fulmar.cli.sendmail, fulmar.cli._common\n"
            "print(' '.join(m for m in %r if m in sys.modules))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == []
