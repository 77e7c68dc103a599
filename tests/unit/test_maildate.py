"""fulmar.maildate: Postfix's date form, and its one-second cache."""

import os
import time

import pytest

from fulmar import maildate


@pytest.fixture
def utc():
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    maildate._last = (-1, "")
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()
    maildate._last = (-1, "")


def test_postfix_form_with_space_padded_day(utc):
    assert maildate.mail_date(1796281154.9) == "Thu,  3 Dec 2026 06:59:14 +0000 (UTC)"


def test_each_second_is_formatted_from_its_own_time(utc):
    # The cache keeps one second: the next second, or an earlier one, is
    # never served the cached text.
    t = 1796281154
    assert maildate.mail_date(t + 0.1) == maildate.mail_date(t + 0.9)
    assert maildate.mail_date(t + 1).endswith("06:59:15 +0000 (UTC)")
    assert maildate.mail_date(t - 60).endswith("06:58:14 +0000 (UTC)")
    assert maildate.mail_date(t).endswith("06:59:14 +0000 (UTC)")
