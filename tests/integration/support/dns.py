"""A real authoritative DNS server (Knot DNS) for the test zones.

    srv = KnotServer(workdir, port=None, host="127.0.0.1")
    srv.start()                      # knotd in the foreground of a subprocess
    srv.add_zone("foo.test", "@ MX 10 mx\\nmx A 127.20.0.5\\n")
    srv.set_zone("foo.test", text)   # replace the records and reload the zone
    srv.reload(name=None)            # knotc zone-reload (all zones, or one)
    srv.add_ptr("127.20.0.5", "mx.foo.test")
    srv.address  -> "127.0.0.1:PORT" (the form dns_server_addresses takes)
    srv.resolver() -> dns.resolver.Resolver asking only this server
    srv.stop()                       # TERM the knotd PID we started, then KILL

Zone text is ordinary master-file records relative to the zone origin; the
SOA and NS records are added here and the SOA serial is bumped on every
change, so ``reload`` waits until the server answers with the new serial.
Records carry a short TTL (ZONE_TTL) so that nothing caches a stale answer
across tests.

``127.in-addr.arpa`` is always served (PTR records from ``add_ptr``), so
that reverse lookups of test hosts get an authoritative answer instead of
REFUSED.

Failure: ``start`` raises RuntimeError with knotd's output when it does not
come up or a zone does not load; ``KNOTD``/``KNOTC`` are None when Knot is
not installed (the fixture skips then).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import dns.resolver

from . import addrs

KNOTD = shutil.which("knotd") or (os.path.exists("/usr/sbin/knotd") and "/usr/sbin/knotd") or None
KNOTC = shutil.which("knotc") or (os.path.exists("/usr/sbin/knotc") and "/usr/sbin/knotc") or None
ZONE_TTL = 5
START_TIMEOUT = 15.0
RELOAD_TIMEOUT = 10.0
POLL_TIMEOUT = 0.2        # per SOA probe while waiting for knotd
REVERSE_ZONE = "127.in-addr.arpa"


class KnotServer:
    def __init__(self, workdir: str | os.PathLike, port: int | None = None,
                 host: str = "127.0.0.1") -> None:
        self.dir = Path(workdir)
        self.host = host
        self.port = port or addrs.ALLOCATOR.port(host)
        self.zones: dict[str, str] = {}
        self.serials: dict[str, int] = {}
        self.ptrs: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None
        self.conf = self.dir / "knot.conf"
        self.zonedir = self.dir / "zones"
        self.sock = self.dir / "knot.sock"
        self.logfile = self.dir / "knotd.log"
        self.zones[REVERSE_ZONE] = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- zone files ---------------------------------------------------

    def _write_zone(self, name: str) -> None:
        serial = self.serials.get(name, 0) + 1
        self.serials[name] = serial
        body = self.zones[name]
        if name == REVERSE_ZONE:
            body = "".join(f"{_ptr_label(a)} PTR {n.rstrip('.')}.\n"
                           for a, n in sorted(self.ptrs.items()))
        text = (f"$ORIGIN {name}.\n$TTL {ZONE_TTL}\n"
                f"@ SOA ns.{name}. hostmaster.{name}. {serial} 3600 600 86400 {ZONE_TTL}\n"
                f"@ NS ns.{name}.\nns A {self.host}\n" + body + "\n")
        self.zonedir.mkdir(parents=True, exist_ok=True)
        tmp = self.zonedir / f".{name}.zone.tmp"
        tmp.write_text(text)
        tmp.rename(self.zonedir / f"{name}.zone")

    def _write_conf(self) -> None:
        (self.dir / "db").mkdir(parents=True, exist_ok=True)
        zones = "".join(f"  - domain: {z}\n" for z in sorted(self.zones))
        self.conf.write_text(f"""\
server:
    rundir: "{self.dir}"
    pidfile: "{self.dir}/knot.pid"
    listen: [ {self.host}@{self.port} ]
control:
    listen: "{self.sock}"
database:
    storage: "{self.dir}/db"
log:
  - target: "{self.logfile}"
    any: info
template:
  - id: default
    storage: "{self.zonedir}"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
{zones}""")

    # -- life cycle ---------------------------------------------------

    def start(self) -> None:
        if KNOTD is None or KNOTC is None:
            raise RuntimeError("knotd is not installed (apt-get install knot knot-dnsutils)")
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in self.zones:
            self._write_zone(name)
        self._write_conf()
        subprocess.run([KNOTC, "-c", str(self.conf), "conf-check"], check=True,
                       capture_output=True)
        out = open(self.dir / "knotd.out", "ab")
        self.proc = subprocess.Popen([KNOTD, "-c", str(self.conf)], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        try:
            for name in self.zones:
                self._wait_serial(name, START_TIMEOUT)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _knotc(self, *args: str) -> None:
        r = subprocess.run([KNOTC, "-c", str(self.conf), "-s", str(self.sock), *args],
                           capture_output=True, text=True, timeout=RELOAD_TIMEOUT)
        if r.returncode != 0:
            raise RuntimeError(f"knotc {' '.join(args)} failed: {r.stdout}{r.stderr}")

    # -- changing zones -----------------------------------------------

    def add_zone(self, name: str, records: str) -> None:
        """Serve a new zone ``name`` with ``records`` (relative to its origin)."""
        name = name.rstrip(".").lower()
        new = name not in self.zones
        self.zones[name] = records
        self._write_zone(name)
        if self.proc is None:
            return
        if new:
            self._write_conf()
            self._knotc("reload")       # re-reads knot.conf: picks up the new zone
        else:
            self._knotc("zone-reload", name)
        self._wait_serial(name, RELOAD_TIMEOUT)

    set_zone = add_zone

    def add_ptr(self, addr: str, name: str) -> None:
        self.ptrs[addr] = name
        self.add_zone(REVERSE_ZONE, "")

    def reload(self, name: str | None = None) -> None:
        """Re-read zone files changed on disk by hand (bump the serial yourself)."""
        self._knotc("zone-reload", *([name] if name else []))

    # -- querying -----------------------------------------------------

    def query(self, qname: str, rdtype: str = "A", timeout: float = 2.0) -> dns.message.Message:
        q = dns.message.make_query(qname, rdtype)
        return dns.query.udp(q, self.host, port=self.port, timeout=timeout)

    def resolver(self) -> dns.resolver.Resolver:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [self.host]
        r.port = self.port
        r.lifetime = 5
        r.cache = None
        return r

    def _wait_serial(self, name: str, timeout: float) -> None:
        want = self.serials[name]
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            try:
                ans = self.query(name, "SOA", timeout=POLL_TIMEOUT)
                for rrset in ans.answer:
                    for rd in rrset:
                        if rd.rdtype == dns.rdatatype.SOA and rd.serial >= want:
                            return
                last = f"rcode {ans.rcode()}"
            except (dns.exception.DNSException, OSError) as e:
                last = repr(e)
            time.sleep(0.05)
        raise RuntimeError(f"knotd on {self.address} does not serve {name} serial {want}"
                           f" ({last}); log:\n{self.log_text()}")

    def log_text(self) -> str:
        parts = []
        for f in (self.dir / "knotd.out", self.logfile):
            if f.exists():
                parts.append(f.read_text(errors="replace"))
        return "".join(parts)


def _ptr_label(addr: str) -> str:
    """'127.20.1.5' -> '5.1.20' (relative to 127.in-addr.arpa)."""
    a, b, c, d = addr.split(".")
    return f"{d}.{c}.{b}"


def standard_zones(alloc: addrs.Allocator) -> tuple[dict[str, str], dict[str, str]]:
    """The zones every session starts with, on freshly claimed addresses.

    Returns (zones, hosts): zone name -> records, host name -> address.

    example.test   MX 10 mx1, MX 20 mx2 (each its own address)
    nomx.test      no MX, only A (RFC 5321 5.1 implicit MX)
    nullmx.test    MX 0 . (RFC 7505 null MX) and an A record that must not be used
    twomx.test     MX 10 dead (an address nothing listens on: connection refused),
                   MX 20 live
    """
    h = {n: alloc.host() for n in ("mx1.example.test", "mx2.example.test", "nomx.test",
                                   "nullmx.test", "dead.twomx.test", "live.twomx.test")}
    zones = {
        "example.test": (f"@ MX 10 mx1\n@ MX 20 mx2\n"
                         f"mx1 A {h['mx1.example.test']}\nmx2 A {h['mx2.example.test']}\n"),
        "nomx.test": f"@ A {h['nomx.test']}\n",
        "nullmx.test": f"@ MX 0 .\n@ A {h['nullmx.test']}\n",
        "twomx.test": (f"@ MX 10 dead\n@ MX 20 live\n"
                       f"dead A {h['dead.twomx.test']}\nlive A {h['live.twomx.test']}\n"),
    }
    return zones, h
