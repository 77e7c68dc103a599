"""What local(8) does with one recipient: aliases, .forward, then the mailbox.

NAME
    local.expand -- turn a local recipient into delivery actions

SYNOPSIS
    ex = Expander(settings)               # Settings.from_config(cfg)
    actions = ex.expand("list@host.example", delivered={"x@y"})
    for a in actions: a.kind in ("mailbox", "maildir", "file", "command",
                                 "forward", "pass", "error")

DESCRIPTION
    Postfix's local(8) order for an address in a local domain:

    1. Delivered-To: already naming the address: error 5.4.6 "mail
       forwarding loop for <addr>".
    2. alias_maps: the local part (with the extension, then without) is
       looked up.  The value is an aliases(5) list: addresses, "|command",
       "/file" (a trailing "/" is a Maildir), ":include:/file" and
       "\\user" (the mailbox, no further aliasing).  Commands and files run
       with the rights of the alias table's owner, or of default_privs
       when that is root; allow_mail_to_commands / allow_mail_to_files
       (classes alias, forward, include) decide whether they may run at
       all (else 5.7.1 "mail to command is restricted").  With
       owner_request_special, an "owner-<name>" alias makes
       "owner-<name>@$myorigin" the sender of copies forwarded for <name>.
    3. The user must exist in the password database (name folded to
       lower case, extension removed); otherwise fallback_transport (a
       "pass" action), luser_relay (forwarded, $user/$local/$extension/
       $domain/$recipient expanded), or error 5.1.1 'unknown user: "name"'.
    4. forward_path: the first .forward file that exists, is a regular
       file and belongs to the user; its entries are handled like an
       alias value with the user's rights (class forward); the user's own
       name (or "\\user") in it means the mailbox.  Entries of
       forward_path that use an empty ${extension} are skipped.
    5. The mailbox: mailbox_transport_maps / mailbox_transport ("pass"
       to that transport), mailbox_command_maps / mailbox_command
       (a command as the user), home_mailbox ("Maildir/" or a file in
       the home directory), else $mail_spool_directory/<user> (mbox; a
       Maildir when mail_spool_directory ends in "/").

    Addresses that are not local become "forward" actions (a new message
    through cleanup).  A local address in an expansion is expanded in turn.

LOOPS AND LIMITS
    An alias, include file or .forward that appears again inside its own
    expansion ends that branch with error 5.4.6 "mail forwarding loop for
    <addr>" (never an empty, silently discarded expansion).  The same
    destination reached twice is delivered once.  More than
    EXPANSION_DEPTH_LIMIT nested levels is a loop as well.

FAILURE BEHAVIOUR
    A table answering RETRY gives error 4.3.0 "alias database
    unavailable" (or "... lookup failure"), which defers the recipient.
    An unreadable include file defers (4.3.0); a missing one bounces
    (5.3.0), as Postfix.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from dataclasses import dataclass, field

from fulmar import tables
from fulmar.tables.addr import split_address, split_extension

#: Nesting of alias → local address → alias ... before it counts as a loop;
#: Postfix's local(8) uses 100 (the recursion guard in local.c).
EXPANSION_DEPTH_LIMIT = 100
#: Largest .forward or :include: file read (bytes); Postfix has no
#: explicit limit but reads line by line; this bounds memory.
MAX_INCLUDE_SIZE = 1 << 20


@dataclass
class Privs:
    uid: int
    gid: int
    user: str
    home: str
    shell: str = "/bin/sh"


@dataclass
class Action:
    kind: str                  # mailbox maildir file command forward pass error
    address: str               # the address this delivery is for (log "to=")
    target: str = ""           # path, command, forward address, transport:nexthop
    privs: Privs | None = None
    status: str = ""           # error actions: deferred / bounced
    dsn: str = ""
    reason: str = ""
    sender: str | None = None  # forward: owner- alias sender
    env: dict = field(default_factory=dict)   # command: extra environment
    klass: str = "mailbox"     # where it came from: mailbox alias forward include


@dataclass
class Settings:
    myorigin: str
    myhostname: str
    delimiter: str
    alias_maps: object
    forward_path: list[str]
    mailbox_transport: str
    mailbox_transport_maps: object
    mailbox_command: str
    mailbox_command_maps: object
    home_mailbox: str
    spool: str
    luser_relay: str
    fallback_transport: str
    allow_commands: set
    allow_files: set
    default_privs: str
    owner_request_special: bool
    is_local: object           # domain -> bool

    @classmethod
    def from_config(cls, cfg, is_local) -> Settings:
        def get(name, default=""):
            try:
                return cfg.get(name)
            except KeyError:
                return default
        cache: dict = {}
        return cls(
            myorigin=cfg.get("myorigin"), myhostname=cfg.get("myhostname"),
            delimiter=get("recipient_delimiter"),
            alias_maps=tables.open_maps(cfg, "alias_maps", cache),
            forward_path=_split_forward_path(cfg.raw("forward_path")),
            mailbox_transport=get("mailbox_transport"),
            mailbox_transport_maps=tables.open_maps(cfg, "mailbox_transport_maps", cache),
            mailbox_command=cfg.raw("mailbox_command") if get("mailbox_command") else "",
            mailbox_command_maps=tables.open_maps(cfg, "mailbox_command_maps", cache),
            home_mailbox=get("home_mailbox"), spool=cfg.get("mail_spool_directory"),
            luser_relay=cfg.raw("luser_relay") if get("luser_relay") else "",
            fallback_transport=get("fallback_transport"),
            allow_commands={c.lower() for c in get("allow_mail_to_commands", [])},
            allow_files={c.lower() for c in get("allow_mail_to_files", [])},
            default_privs=get("default_privs", "nobody"),
            owner_request_special=get("owner_request_special", True),
            is_local=is_local)


def _split_forward_path(raw: str) -> list[str]:
    from fulmar.tables.text import split_braced
    return split_braced(raw)


_MACRO_RE = re.compile(r"\$(?:\{(\w+)(?:([?:])((?:[^{}]|\{[^{}]*\})*))?\}|(\w+))")


class Undefined(Exception):
    """A ${name} with an empty value: the forward_path entry is skipped."""


def expand_macros(text: str, attrs: dict[str, str], strict: bool = False) -> str:
    """$name, ${name}, ${name?text}, ${name:text} with local(8)'s attributes."""
    def rep(m: re.Match) -> str:
        name = m.group(1) or m.group(4)
        value = attrs.get(name, "")
        if m.group(2) == "?":
            return expand_macros(m.group(3), attrs) if value else ""
        if m.group(2) == ":":
            return value if value else expand_macros(m.group(3), attrs)
        if strict and not value and name in ("extension", "recipient_delimiter"):
            raise Undefined(name)
        return value
    return _MACRO_RE.sub(rep, text)


def parse_alias_value(value: str) -> list[str]:
    """Split an alias value on commas outside double quotes; quotes removed."""
    items, cur, quoted = [], [], False
    for ch in value:
        if ch == '"':
            quoted = not quoted
            continue
        if ch == "," and not quoted:
            items.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    items.append("".join(cur).strip())
    return [i for i in items if i]


class Expander:
    def __init__(self, s: Settings, getpwnam=pwd.getpwnam, read_file=None, stat_file=os.stat):
        self.s = s
        self.getpwnam = getpwnam
        self.read_file = read_file or _read_file
        self.stat_file = stat_file

    # -- helpers --------------------------------------------------------------

    def _privs_of_uid(self, uid: int) -> Privs:
        """The rights of a file's owner; root means default_privs (never root)."""
        try:
            if uid != 0:
                pw = pwd.getpwuid(uid)
                return Privs(pw.pw_uid, pw.pw_gid, pw.pw_name, pw.pw_dir, pw.pw_shell)
        except KeyError:
            return Privs(uid, uid, str(uid), "/")
        pw = self.getpwnam(self.s.default_privs)
        return Privs(pw.pw_uid, pw.pw_gid, pw.pw_name, pw.pw_dir, pw.pw_shell)

    def _alias_privs(self) -> Privs:
        uid = 0
        for t in getattr(self.s.alias_maps, "tables", []):
            path = getattr(t, "path", None)
            if path:
                try:
                    uid = self.stat_file(path).st_uid
                except OSError:
                    pass
                break
        return self._privs_of_uid(uid)

    def _qualify(self, address: str) -> str:
        return address if "@" in address else "%s@%s" % (address, self.s.myorigin)

    # -- expansion -------------------------------------------------------------

    def expand(self, address: str, delivered: set[str] | None = None) -> list[Action]:
        self.delivered = {d.lower() for d in (delivered or ())}
        self.seen: set[tuple] = set()
        out: list[Action] = []
        self._address(self._qualify(address), out, stack=(), no_alias=False, no_forward=False)
        return out

    def _add(self, out: list[Action], action: Action) -> None:
        key = (action.kind, action.target.lower() if action.kind == "forward" else action.target,
               action.privs.uid if action.privs else None)
        if action.kind != "error" and key in self.seen:
            return
        self.seen.add(key)
        out.append(action)

    def _loop(self, out, address: str) -> None:
        out.append(Action("error", address, status="bounced", dsn="5.4.6",
                          reason="mail forwarding loop for %s" % address))

    def _address(self, address: str, out, stack, no_alias: bool, no_forward: bool) -> None:
        s = self.s
        if len(stack) > EXPANSION_DEPTH_LIMIT:
            return self._loop(out, address)
        if address.lower() in self.delivered:
            return self._loop(out, address)
        local, domain = split_address(address)
        user, ext = split_extension(local, s.delimiter)
        if not no_alias and s.alias_maps:
            names = [local.lower()] + ([user.lower()] if ext is not None else [])
            for name in names:
                r = s.alias_maps.lookup(name)
                if r.status == tables.RETRY:
                    out.append(Action("error", address, status="deferred", dsn="4.3.0",
                                      reason="alias database unavailable"))
                    return
                if not r.found:
                    continue
                key = ("alias", name)
                if key in stack:
                    return self._loop(out, address)
                sender = None
                if s.owner_request_special and not name.startswith("owner-"):
                    o = s.alias_maps.lookup("owner-" + name)
                    if o.found:
                        sender = "owner-%s@%s" % (name, s.myorigin)
                self._items(parse_alias_value(r.value or ""), address, out, stack + (key,),
                            klass="alias", privs=self._alias_privs(), owner=name, sender=sender)
                return
        try:
            pw = self.getpwnam(user.lower())
        except KeyError:
            return self._unknown(address, user, ext, domain, out)
        privs = Privs(pw.pw_uid, pw.pw_gid, pw.pw_name, pw.pw_dir, pw.pw_shell)
        if not no_forward and s.forward_path:
            key = ("forward", pw.pw_name)
            if key in stack:
                return self._loop(out, address)
            items = self._forward_items(privs, local, user, ext, domain, address)
            if items is not None:
                if isinstance(items, Action):
                    out.append(items)
                    return
                self._items(items, address, out, stack + (key,), klass="forward", privs=privs,
                            owner=pw.pw_name, sender=None)
                return
        self._mailbox(address, privs, local, user, ext, domain, out)

    def _attrs(self, address, local, user, ext, domain, home="", shell="") -> dict[str, str]:
        return {"user": user, "local": local, "extension": ext or "", "domain": domain,
                "recipient": address, "recipient_delimiter": self.s.delimiter if ext else "",
                "home": home, "shell": shell, "mailbox": user}

    def _forward_items(self, privs: Privs, local, user, ext, domain, address):
        attrs = self._attrs(address, local, user, ext, domain, privs.home, privs.shell)
        for entry in self.s.forward_path:
            try:
                path = expand_macros(entry, attrs, strict=True)
            except Undefined:
                continue
            try:
                st = self.stat_file(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_uid != privs.uid:
                continue
            try:
                text = self.read_file(path)
            except OSError as e:
                return Action("error", address, status="deferred", dsn="4.3.0",
                              reason="cannot open forward file %s: %s" % (path, e.strerror or e))
            items = []
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    items.extend(parse_alias_value(line))
            if items:
                return items
        return None

    def _unknown(self, address, user, ext, domain, out) -> None:
        s = self.s
        if s.fallback_transport:
            out.append(Action("pass", address, target=s.fallback_transport))
        elif s.luser_relay:
            attrs = self._attrs(address, split_address(address)[0], user, ext, domain)
            target = self._qualify(expand_macros(s.luser_relay, attrs))
            self._add(out, Action("forward", address, target=target))
        else:
            out.append(Action("error", address, status="bounced", dsn="5.1.1",
                              reason='unknown user: "%s"' % user.lower()))

    def _mailbox(self, address, privs: Privs, local, user, ext, domain, out) -> None:
        s = self.s
        transport = s.mailbox_transport
        if s.mailbox_transport_maps:
            r = s.mailbox_transport_maps.lookup(privs.user)
            if r.status == tables.RETRY:
                out.append(Action("error", address, status="deferred", dsn="4.3.0",
                                  reason="mailbox_transport_maps lookup failure"))
                return
            if r.found:
                transport = r.value or transport
        if transport:
            out.append(Action("pass", address, target=transport, privs=privs))
            return
        command = s.mailbox_command
        if s.mailbox_command_maps:
            r = s.mailbox_command_maps.lookup(privs.user)
            if r.status == tables.RETRY:
                out.append(Action("error", address, status="deferred", dsn="4.3.0",
                                  reason="mailbox_command_maps lookup failure"))
                return
            if r.found:
                command = r.value or command
        if command:
            # Not subjected to $name expansion (postconf(5)): "$EXTENSION" is
            # for the shell, which gets it from the environment.
            self._add(out, Action("command", address, target=command, privs=privs,
                                  klass="mailbox"))
            return
        if s.home_mailbox:
            path = os.path.join(privs.home, s.home_mailbox)
            kind = "maildir" if s.home_mailbox.endswith("/") else "mailbox"
            self._add(out, Action(kind, address, target=path, privs=privs, klass="mailbox"))
            return
        if s.spool.endswith("/"):        # mail_spool_directory = /var/mail/ : Maildir spool
            self._add(out, Action("maildir", address, target=os.path.join(s.spool, privs.user) + "/",
                                  privs=privs, klass="mailbox"))
            return
        self._add(out, Action("mailbox", address, target=os.path.join(s.spool, privs.user),
                              privs=privs, klass="mailbox"))

    def _items(self, items: list[str], address: str, out, stack, *, klass: str, privs: Privs,
               owner: str, sender: str | None) -> None:
        s = self.s
        before = len(out)
        for item in items:
            if item.startswith("|"):
                if klass not in s.allow_commands:
                    out.append(Action("error", address, status="bounced", dsn="5.7.1",
                                      reason="mail to command is restricted"))
                    continue
                self._add(out, Action("command", address, target=item[1:].strip(), privs=privs,
                                      klass=klass))
            elif item.startswith("/"):
                if klass not in s.allow_files:
                    out.append(Action("error", address, status="bounced", dsn="5.7.1",
                                      reason="mail to file is restricted"))
                    continue
                kind = "maildir" if item.endswith("/") else "file"
                self._add(out, Action(kind, address, target=item, privs=privs, klass=klass))
            elif item.lower().startswith(":include:"):
                self._include(item[len(":include:"):].strip(), address, out, stack, klass=klass,
                              owner=owner, sender=sender)
            elif item.startswith("\\"):
                name = item[1:]
                self._address(self._qualify(name), out, stack, no_alias=True, no_forward=True)
            else:
                target = self._qualify(item)
                t_local, t_domain = split_address(target)
                if s.is_local(t_domain.lower()):
                    same = (klass in ("alias", "include") and t_local.lower() == owner.lower()) or \
                           (klass == "forward" and t_local.lower() == owner.lower())
                    self._address(target, out, stack, no_alias=same, no_forward=same)
                else:
                    self._add(out, Action("forward", address, target=target, sender=sender,
                                          klass=klass))
        if len(out) == before and not items:
            out.append(Action("error", address, status="bounced", dsn="5.1.1",
                              reason="alias %s has no destination" % owner))

    def _include(self, path: str, address: str, out, stack, *, klass: str, owner: str,
                 sender: str | None) -> None:
        s = self.s
        key = ("include", path)
        if key in stack:
            return self._loop(out, address)
        allowed = "include" in s.allow_commands or "include" in s.allow_files
        if not allowed and klass not in s.allow_commands | s.allow_files:
            out.append(Action("error", address, status="bounced", dsn="5.7.1",
                              reason="mail to :include: file is restricted"))
            return
        try:
            st = self.stat_file(path)
            text = self.read_file(path)
        except FileNotFoundError:
            out.append(Action("error", address, status="bounced", dsn="5.3.0",
                              reason="cannot open include file %s: No such file or directory" % path))
            return
        except OSError as e:
            out.append(Action("error", address, status="deferred", dsn="4.3.0",
                              reason="cannot open include file %s: %s" % (path, e.strerror or e)))
            return
        items = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                items.extend(parse_alias_value(line))
        self._items(items, address, out, stack + (key,), klass="include",
                    privs=self._privs_of_uid(st.st_uid), owner=owner, sender=sender)


def _read_file(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        data = os.read(fd, MAX_INCLUDE_SIZE)
    finally:
        os.close(fd)
    return data.decode("utf-8", "surrogateescape")
