"""cidr: tables (Postfix cidr_table(5)): "network/prefix result", first match wins.

Keys that are not IP addresses are not found.  IPv6 networks may be written
bare or in brackets ("[::1]/128").  A line that does not parse makes the
whole table unavailable (every lookup RETRY), as Postfix refuses such a file.
"""

from __future__ import annotations

import ipaddress

from fulmar.tables import FOUND, NOT_FOUND, BaseTable, Result


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """"1.2.3.0/24", "1.2.3.4", "[::1]/128", "::1" → network (strict host bits, as Postfix)."""
    t = text.strip()
    if t.startswith("["):
        close = t.find("]")
        if close < 0:
            raise ValueError(f"bad network: {text}")
        t = t[1:close] + t[close + 1:]
    return ipaddress.ip_network(t, strict=True)


class CidrTable(BaseTable):
    def __init__(self, name: str, rules: list[tuple[object, str]]):
        self.name = name
        self.rules = rules

    @classmethod
    def from_file(cls, spec: str, path: str) -> CidrTable:
        with open(path, encoding="utf-8") as f:
            return cls.from_text(spec, f.read())

    @classmethod
    def from_text(cls, spec: str, text: str) -> CidrTable:
        rules = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            if len(parts) != 2:
                raise ValueError(f"{spec}, line {lineno}: no lookup result")
            try:
                net = parse_network(parts[0])
            except ValueError as e:
                raise ValueError(f"{spec}, line {lineno}: {e}") from None
            rules.append((net, parts[1].strip()))
        return cls(spec, rules)

    def lookup(self, key: str) -> Result:
        try:
            addr = ipaddress.ip_address(key.strip("[]"))
        except ValueError:
            return NOT_FOUND
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        for net, value in self.rules:
            if addr.version == net.version and addr in net:
                return Result(FOUND, value)
        return NOT_FOUND
