"""local.expand: aliases, :include:, .forward, mailbox choice, loops; local.worker; local.error."""

import errno
import os
import pwd
from types import SimpleNamespace

import pytest
from hypothesis import given, strategies as st

from fulmar import tables
from local import worker
from local.deliver import SYSEXITS, delivered_to, mbox_quote
from local.error import outcome
from local.expand import Expander, Settings, expand_macros, parse_alias_value

ME = pwd.getpwuid(os.getuid())


def pw(name, uid=1000, home=None):
    return pwd.struct_passwd((name, "x", uid, uid, "", home or f"/home/{name}", "/bin/sh"))


def settings(aliases=None, **kw):
    base = dict(myorigin="host.example", myhostname="host.example", delimiter="+",
                alias_maps=tables.TableList("alias_maps", [tables.open_table(
                    "inline:{%s}" % aliases)] if aliases else []),
                forward_path=["$home/.forward${recipient_delimiter}${extension}", "$home/.forward"],
                mailbox_transport="", mailbox_transport_maps=tables.TableList("m", []),
                mailbox_command="", mailbox_command_maps=tables.TableList("c", []),
                home_mailbox="", spool="/var/mail", luser_relay="", fallback_transport="",
                allow_commands={"alias", "forward"}, allow_files={"alias", "forward"},
                default_privs="nobody", owner_request_special=True,
                is_local=lambda d: d in ("host.example", "localhost"))
    base.update(kw)
    return Settings(**base)


USERS = {"bob": pw("bob", 1001), "carol": pw("carol", 1002), "nobody": pw("nobody", 65534)}


def expander(s, files=None, owners=None):
    files = files or {}

    def getpwnam(n):
        return USERS[n]

    def read(path):
        if path not in files:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return files[path]

    def stat(path):
        if path not in files:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return SimpleNamespace(st_uid=(owners or {}).get(path, 0), st_mode=0o100644)
    return Expander(s, getpwnam=getpwnam, read_file=read, stat_file=stat)


def kinds(actions):
    return [(a.kind, a.address, a.target, a.status, a.dsn) for a in actions]


def test_plain_user_gets_spool_mailbox_and_unknown_bounces():
    ex = expander(settings())
    assert kinds(ex.expand("Bob+tag@host.example")) == [
        ("mailbox", "Bob+tag@host.example", "/var/mail/bob", "", "")]
    [a] = ex.expand("zed@host.example")
    assert (a.kind, a.status, a.dsn, a.reason) == ("error", "bounced", "5.1.1", 'unknown user: "zed"')


def test_home_mailbox_command_transport_and_luser_relay():
    assert ex_one(settings(home_mailbox="Maildir/")) == ("maildir", "/home/bob/Maildir/")
    assert ex_one(settings(home_mailbox="Mailbox")) == ("mailbox", "/home/bob/Mailbox")
    assert ex_one(settings(spool="/var/mail/")) == ("maildir", "/var/mail/bob/")
    assert ex_one(settings(mailbox_command='/usr/bin/procmail -a "$EXTENSION"')) == (
        "command", '/usr/bin/procmail -a "$EXTENSION"')
    assert ex_one(settings(mailbox_transport="lmtp:unix:/run/lmtp")) == ("pass", "lmtp:unix:/run/lmtp")
    [a] = expander(settings(luser_relay="$user@elsewhere.example")).expand("zed@host.example")
    assert (a.kind, a.target) == ("forward", "zed@elsewhere.example")
    [a] = expander(settings(fallback_transport="relay:[mx]")).expand("zed@host.example")
    assert (a.kind, a.target) == ("pass", "relay:[mx]")


def ex_one(s):
    [a] = expander(s).expand("bob+x@host.example")
    return a.kind, a.target


def test_aliases_lists_commands_files_includes_and_owner():
    s = settings(aliases="{list=bob, carol@remote.example, \"|/bin/cmd a, b\", /tmp/f, "
                         ":include:/etc/inc}, owner-list=bob, {root=bob}")
    ex = expander(s, files={"/etc/inc": "# c\ncarol\n\n"}, owners={"/etc/inc": 1002})
    acts = ex.expand("list@host.example")
    assert kinds(acts) == [
        ("mailbox", "bob@host.example", "/var/mail/bob", "", ""),
        ("forward", "list@host.example", "carol@remote.example", "", ""),
        ("command", "list@host.example", "/bin/cmd a, b", "", ""),
        ("file", "list@host.example", "/tmp/f", "", ""),
        ("mailbox", "carol@host.example", "/var/mail/carol", "", "")]
    assert acts[1].sender == "owner-list@host.example"
    assert acts[2].privs.user == "nobody"          # root-owned alias table: default_privs
    assert kinds(ex.expand("root@host.example"))[0][:3] == ("mailbox", "bob@host.example", "/var/mail/bob")


def test_commands_in_includes_are_restricted_by_default():
    ex = expander(settings(aliases="{x=:include:/inc}"), files={"/inc": "|/bin/evil\n"})
    [a] = ex.expand("x@host.example")
    assert (a.status, a.dsn, a.reason) == ("bounced", "5.7.1", "mail to command is restricted")


def test_loops_end_in_a_bounce():
    ex = expander(settings(aliases="a=b, b=a, self=self, inc=:include:/i"),
                  files={"/i": ":include:/i\n"})
    [a] = ex.expand("a@host.example")
    assert (a.kind, a.dsn, a.reason) == ("error", "5.4.6", "mail forwarding loop for a@host.example")
    [a] = ex.expand("inc@host.example")
    assert (a.kind, a.dsn) == ("error", "5.4.6")
    [a] = expander(settings(aliases="{bob=bob, carol}")).expand("bob@host.example")[:1]
    assert (a.kind, a.target) == ("mailbox", "/var/mail/bob")    # self reference: the mailbox
    [a] = expander(settings()).expand("bob@host.example", delivered={"bob@host.example"})
    assert (a.dsn, a.reason) == ("5.4.6", "mail forwarding loop for bob@host.example")


def test_missing_include_bounces_and_table_failure_defers():
    [a] = expander(settings(aliases="x=:include:/nope")).expand("x@host.example")
    assert (a.status, a.dsn) == ("bounced", "5.3.0")
    s = settings()
    s.alias_maps = tables.TableList("alias_maps", [tables.FailedTable("hash:/x", "down")])
    [a] = expander(s).expand("bob@host.example")
    assert (a.status, a.dsn, a.reason) == ("deferred", "4.3.0", "alias database unavailable")


def test_dot_forward():
    files = {"/home/bob/.forward": "carol, \\bob, |/bin/vacation\n",
             "/home/bob/.forward+x": "bob@remote.example\n"}
    owners = {p: 1001 for p in files}
    ex = expander(settings(), files=files, owners=owners)
    assert kinds(ex.expand("bob@host.example")) == [
        ("mailbox", "carol@host.example", "/var/mail/carol", "", ""),
        ("mailbox", "bob@host.example", "/var/mail/bob", "", ""),
        ("command", "bob@host.example", "/bin/vacation", "", "")]
    assert kinds(ex.expand("bob+x@host.example"))[0][:3] == (
        "forward", "bob+x@host.example", "bob@remote.example")
    owners["/home/bob/.forward"] = 666               # not the user's: ignored
    ex = expander(settings(), files={"/home/bob/.forward": "carol\n"}, owners=owners)
    assert kinds(ex.expand("bob@host.example"))[0][0:3] == ("mailbox", "bob@host.example", "/var/mail/bob")


def test_macros_and_alias_values():
    attrs = {"user": "bob", "extension": "", "home": "/h"}
    assert expand_macros("$home/x${extension?+$extension}", attrs) == "/h/x"
    assert expand_macros("${extension:none}", attrs) == "none"
    assert parse_alias_value('a, "|cmd x, y" ,, /f') == ["a", "|cmd x, y", "/f"]


@given(st.text(max_size=80))
def test_alias_value_parser_never_raises(value):
    assert all(item for item in parse_alias_value(value))


def test_worker_mbox_maildir_and_errors(tmp_path):
    box = tmp_path / "box"
    assert worker.run({"action": "mbox", "path": str(box)}, b"From x\nA\n\n")["status"] == "sent"
    r = worker.run({"action": "mbox", "path": str(box), "size_limit": 5, "fail_prefix": "p. "}, b"x" * 50)
    assert r == {"status": "bounced", "dsn": "5.2.2", "reason": "p. file too large"}
    assert box.read_bytes() == b"From x\nA\n\n"
    md = tmp_path / "deep" / "Maildir"
    assert worker.run({"action": "maildir", "path": str(md) + "/", "hostname": "h"}, b"M\n")["status"] == "sent"
    [f] = list((md / "new").iterdir())
    assert f.read_bytes() == b"M\n" and not list((md / "tmp").iterdir())
    assert worker.dsn_for(errno.ENOSPC) == ("deferred", "4.3.0")
    assert worker.dsn_for(errno.EDQUOT) == ("bounced", "5.2.2")
    assert worker.dsn_for(errno.EIO) == ("deferred", "4.2.0")


def test_error_agent_outcomes_and_helpers():
    assert outcome("5.1.1 User unknown in virtual alias table", retry=False) == (
        "bounced", "5.1.1", "User unknown in virtual alias table")
    assert outcome("4.3.0 Temporary lookup failure", retry=True) == (
        "deferred", "4.3.0", "Temporary lookup failure")
    assert outcome("go away", retry=False) == ("bounced", "5.0.0", "go away")
    assert outcome("5.1.1 x", retry=True)[:2] == ("deferred", "4.1.1")
    assert SYSEXITS[75][:2] == ("deferred", "4.3.0") and SYSEXITS[67][1] == "5.1.1"
    assert delivered_to(b"Subject: x\r\nDelivered-To: Bob@H\r\n\r\nDelivered-To: no@x\r\n") == {"bob@h"}
    assert mbox_quote(b"From a\nb\nFrom c\n") == b">From a\nb\n>From c\n\n"
