"""master/privilege.py: mail_owner checks when started as root."""

from types import SimpleNamespace

import pytest

from master import privilege

MAIN_CF = "/etc/postfix/main.cf"


def users(**table):
    def getpwnam(name):
        if name not in table:
            raise KeyError(name)
        uid, gid = table[name]
        return SimpleNamespace(pw_uid=uid, pw_gid=gid)
    return getpwnam


def test_root_uses_mail_owner():
    assert privilege.queue_owner("postfix", MAIN_CF, euid=0,
                                 getpwnam=users(postfix=(105, 110))) == (105, 110)


def test_root_refuses_privileged_mail_owner():
    with pytest.raises(privilege.PrivilegeError) as e:
        privilege.queue_owner("toor", MAIN_CF, euid=0, getpwnam=users(toor=(0, 0)))
    assert str(e.value) == ("file /etc/postfix/main.cf: parameter mail_owner: "
                            "user toor has privileged user ID")


def test_root_refuses_missing_mail_owner():
    with pytest.raises(privilege.PrivilegeError, match="unknown user name value: postfix"):
        privilege.queue_owner("postfix", MAIN_CF, euid=0, getpwnam=users())


def test_ordinary_user_ignores_mail_owner():
    assert privilege.queue_owner("nosuchuser", MAIN_CF, euid=1000, getpwnam=users()) is None
    assert privilege.setgid_gid("nosuchgroup", MAIN_CF, euid=1000) is None


def test_setgid_group():
    def getgrnam(name):
        if name != "postdrop":
            raise KeyError(name)
        return SimpleNamespace(gr_gid=120)
    assert privilege.setgid_gid("postdrop", MAIN_CF, euid=0, getgrnam=getgrnam) == 120
    with pytest.raises(privilege.PrivilegeError, match="setgid_group"):
        privilege.setgid_gid("nope", MAIN_CF, euid=0, getgrnam=getgrnam)
