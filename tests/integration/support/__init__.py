"""Helpers for Fulmar's integration tests (real processes on loopback).

Modules: ``addrs`` (127.x.y.z addresses and free ports per test and per
xdist worker), ``dns`` (a real knotd serving the test zones), ``sink`` (a
programmable SMTP peer), ``instance`` (a Fulmar started with
``postfix -c DIR start``), ``pflogsumm`` (Debian's pflogsumm on a maillog),
``certs`` (a test CA and server certificates).  ``conftest.py`` in the
parent directory turns them into fixtures.
"""
