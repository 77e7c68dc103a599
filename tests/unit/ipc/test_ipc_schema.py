"""fulmar.ipc.schema: required attributes per message type."""

import pytest
from hypothesis import given, strategies as st

from fulmar.ipc import schema
from fulmar.ipc.schema import SchemaError

DELIVER = {
    "request": "deliver", "id": 3, "queue_name": "active",
    "queue_id": "4Xk2Lm1Qz7z9vRs", "path": "active/4Xk2Lm1Qz7z9vRs",
    "transport": "smtp", "nexthop": "example.org", "sender": "a@b",
    "arrival_time": 1700000000.25, "qmgr_time": 1700000001,
    "dsn_envid": "", "dsn_ret": "", "smtputf8": False,
    "recipients": [{"address": "x@example.org", "orig_address": "",
                    "dsn_orcpt": "", "dsn_notify": 0, "offset": 120}],
}


def test_valid_messages_pass_and_extras_are_tolerated():
    assert schema.check("hello", {"protocol": "cleanup", "version": 1,
                                  "extra": [1]})
    schema.check("delivery.deliver", DELIVER)
    schema.check("cleanup.open", {"request": "open", "id": 1,
                                  "origin": "smtpd", "client_name": "x"})
    schema.check("cleanup.commit_reply", {"id": 1, "status": "ok",
                                          "queue_id": "Q", "reason": ""})
    schema.check("qmgr.wakeup", {"request": "wakeup", "queue_id": "Q"})
    schema.check("delivery.result", {"id": 3, "results": [
        {"offset": 120, "status": "sent", "dsn": "2.0.0",
         "reason": "250 ok", "relay": "mx[192.0.2.1]:25"}]})


@pytest.mark.parametrize("message_type, attrs, message", [
    ("hello", {"protocol": "x"}, 'hello: missing attribute "version"'),
    ("hello", {"protocol": "x", "version": "1"},
     'hello: attribute "version" must be an integer'),
    ("hello", {"protocol": "x", "version": True},
     'hello: attribute "version" must be an integer'),
    ("hello", {"protocol": None, "version": 1},
     'hello: attribute "protocol" must be a string'),
    ("cleanup.open", {"request": "open", "id": 1, "origin": "mars"},
     'cleanup.open: attribute "origin" must be one of smtpd, pickup'),
    ("cleanup.commit_reply", {"id": 1, "status": "ok", "queue_id": "Q",
                              "reason": 5},
     'cleanup.commit_reply: attribute "reason" must be a string'),
    ("delivery.deliver", dict(DELIVER, arrival_time="now"),
     'delivery.deliver: attribute "arrival_time" must be a number'),
    ("delivery.deliver", dict(DELIVER, recipients={"a": 1}),
     'delivery.deliver: attribute "recipients" must be a list'),
    ("delivery.deliver", dict(DELIVER, recipients=["x"]),
     'delivery.deliver: attribute "recipients[0]" must be an object'),
    ("delivery.deliver", dict(DELIVER, recipients=[
        DELIVER["recipients"][0], {"address": "y", "orig_address": "",
                                   "dsn_orcpt": "", "dsn_notify": 0}]),
     'delivery.deliver: missing attribute "recipients[1].offset"'),
    ("delivery.result", {"id": 1, "results": [{"offset": 1, "status": "ok",
                                               "dsn": "", "reason": ""}]},
     'delivery.result: attribute "results[0].status" must be one of sent'),
])
def test_errors_name_the_attribute(message_type, attrs, message):
    with pytest.raises(SchemaError) as info:
        schema.check(message_type, attrs)
    assert str(info.value).startswith(message)


def test_check_request():
    assert schema.check_request("qmgr", {"request": "flush", "id": 2}) == \
        "flush"
    assert schema.check_request("delivery", DELIVER) == "deliver"
    with pytest.raises(SchemaError, match='qmgr: unknown request "open"'):
        schema.check_request("qmgr", {"request": "open", "id": 1})
    with pytest.raises(SchemaError, match='missing attribute "request"'):
        schema.check_request("qmgr", {"id": 1})
    with pytest.raises(SchemaError, match='qmgr.flush: missing attribute "id"'):
        schema.check_request("qmgr", {"request": "flush"})


def test_unknown_message_type_is_a_programming_error():
    with pytest.raises(KeyError):
        schema.check("nope", {})


def test_every_request_type_has_a_schema_with_its_request_name():
    for protocol, types in schema.REQUESTS.items():
        for message_type in types:
            spec = schema.SCHEMAS[message_type]
            assert spec.required["request"] == (message_type.split(".")[1],)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


@given(st.sampled_from(sorted(schema.SCHEMAS)),
       st.dictionaries(st.sampled_from(["id", "request", "status",
                                        "recipients", "results", "queue_id",
                                        "protocol", "version", "x"]),
                       json_values, max_size=6))
def test_random_attrs_only_schema_error(message_type, attrs):
    try:
        schema.check(message_type, attrs)
    except SchemaError:
        pass
