"""Required attributes per IPC message type.

NAME
    fulmar.ipc.schema - what each attribute frame must carry

SYNOPSIS
    from fulmar.ipc import schema
    schema.check("cleanup.open", attrs)          # raises SchemaError
    kind = schema.check_request("qmgr", attrs)   # "flush", "wakeup", ...
    schema.SCHEMAS["delivery.deliver"]           # the Schema object

DESCRIPTION
    A message type is "<protocol>.<message>" (plus "hello", the greeting
    every server sends first).  Requests are named after their "request"
    attribute ("cleanup.open", "qmgr.flush"); replies after what they answer
    ("cleanup.open_reply", "cleanup.commit_reply", "qmgr.flush_reply",
    "delivery.result", "bounce.reply").  See docs/internals.md, "Protocols".

    A Schema names its required attributes and, optionally, attributes that
    may be absent but are type-checked when present.  A type is one of

        str, int, bool       exactly that JSON type (true is not an integer)
        float                a JSON number (integer or not)
        ("a", "b", ...)      a string, one of those values
        [Schema]             a list of objects, each checked against Schema

    Names not in the schema are tolerated (rule 4 of docs/STYLE: unknown
    attributes are tolerated), so an older peer can talk to a newer one.

    check_request(protocol, attrs) reads attrs["request"], checks it names a
    request of that protocol, checks the attributes, and returns the request
    name.

DIAGNOSTICS
    SchemaError (a ValueError) with a one-line reason that names the message
    type and the attribute, e.g.
        cleanup.open: missing attribute "origin"
        delivery.deliver: attribute "recipients[2].offset" must be an integer
    The caller logs it as a warning and closes the connection.  Asking for a
    message type that does not exist is a programming error (KeyError).
"""


class SchemaError(ValueError):
    """An attribute is missing or has the wrong type; str() says which."""


class Schema:
    """Required and optional attribute names with their types."""

    __slots__ = ("required", "optional")

    def __init__(self, required: dict, optional: dict | None = None):
        self.required = required
        self.optional = optional or {}


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number",
               bool: "a boolean"}


def _check_value(message_type, name, want, value):
    got = type(value)
    if want is float:
        ok = got is float or got is int
    elif type(want) is tuple:
        if got is not str or value not in want:
            raise SchemaError('%s: attribute "%s" must be one of %s'
                              % (message_type, name, ", ".join(want)))
        return
    elif type(want) is list:
        if got is not list:
            raise SchemaError('%s: attribute "%s" must be a list'
                              % (message_type, name))
        item_schema = want[0]
        for index, item in enumerate(value):
            label = "%s[%d]" % (name, index)
            if type(item) is not dict:
                raise SchemaError('%s: attribute "%s" must be an object'
                                  % (message_type, label))
            _check(message_type, item_schema, item, label + ".")
        return
    else:
        ok = got is want
    if not ok:
        raise SchemaError('%s: attribute "%s" must be %s'
                          % (message_type, name, _TYPE_NAMES[want]))


def _check(message_type, spec, attrs, prefix=""):
    for name, want in spec.required.items():
        try:
            value = attrs[name]
        except KeyError:
            raise SchemaError('%s: missing attribute "%s%s"'
                              % (message_type, prefix, name)) from None
        _check_value(message_type, prefix + name, want, value)
    for name, want in spec.optional.items():
        if name in attrs:
            _check_value(message_type, prefix + name, want, attrs[name])


def check(message_type: str, attrs: dict) -> dict:
    """Return attrs if it satisfies the schema of message_type."""
    _check(message_type, SCHEMAS[message_type], attrs)
    return attrs


def check_request(protocol: str, attrs: dict) -> str:
    """Check a request of protocol; return its "request" name."""
    request = attrs.get("request")
    if type(request) is not str:
        raise SchemaError('%s: missing attribute "request"' % protocol)
    message_type = "%s.%s" % (protocol, request)
    if message_type not in REQUESTS.get(protocol, ()):
        raise SchemaError('%s: unknown request "%.100s"' % (protocol, request))
    _check(message_type, SCHEMAS[message_type], attrs)
    return request


# Values, named once (docs/internals.md, "Protocols").
CLEANUP_ORIGINS = ("smtpd", "pickup", "bounce", "sendmail")
CLEANUP_STATUSES = ("ok", "tempfail", "reject", "toolarge", "diskfull")
DELIVERY_STATUSES = ("sent", "deferred", "bounced")
REPLY_STATUSES = ("ok", "fail")
BOUNCE_LOGS = ("bounce", "defer")

_RECIPIENT = Schema({"address": str, "orig_address": str, "dsn_orcpt": str,
                     "dsn_notify": int, "offset": int})
_RESULT = Schema({"offset": int, "status": DELIVERY_STATUSES, "dsn": str,
                  "reason": str},
                 {"relay": str})

SCHEMAS = {
    "hello": Schema({"protocol": str, "version": int}),

    # cleanup: one open/records/E-or-abort exchange per message.
    "cleanup.open": Schema({"request": ("open",), "id": int,
                            "origin": CLEANUP_ORIGINS}),
    "cleanup.open_reply": Schema({"id": int, "status": CLEANUP_STATUSES},
                                 {"queue_id": str, "reason": str}),
    "cleanup.commit_reply": Schema({"id": int, "status": CLEANUP_STATUSES,
                                    "queue_id": str},
                                   {"reason": str, "next_queue_id": str}),
    "cleanup.abort": Schema({"request": ("abort",), "id": int}),

    # qmgr: wakeup has no reply, hence no id.
    "qmgr.wakeup": Schema({"request": ("wakeup",), "queue_id": str}),
    "qmgr.flush": Schema({"request": ("flush",), "id": int}),
    "qmgr.flush_site": Schema({"request": ("flush_site",), "site": str},
                              {"id": int}),
    "qmgr.flush_id": Schema({"request": ("flush_id",), "queue_id": str},
                            {"id": int}),
    "qmgr.flush_reply": Schema({"id": int, "status": REPLY_STATUSES},
                               {"reason": str}),

    # delivery: qmgr -> agent, one request per message and transport.
    "delivery.deliver": Schema({
        "request": ("deliver",), "id": int, "queue_name": str,
        "queue_id": str, "path": str, "transport": str, "nexthop": str,
        "sender": str, "arrival_time": float, "qmgr_time": float,
        "dsn_envid": str, "dsn_ret": str, "smtputf8": bool,
        "recipients": [_RECIPIENT]},
        # From qmgr's read of the envelope: the agent then skips its own.
        {"content_offset": int, "content_size": int, "body_type": str}),
    "delivery.result": Schema({"id": int, "results": [_RESULT]}),

    # bounce: the minimum every request needs; bounce/ documents the rest
    # and may tighten these.
    "bounce.append": Schema({
        "request": ("append",), "id": int, "log": BOUNCE_LOGS,
        "queue_id": str, "address": str, "status": DELIVERY_STATUSES + (
            "expired",), "dsn": str, "reason": str},
        {"orig_address": str, "dsn_orcpt": str, "dsn_notify": int,
         "offset": int, "relay": str}),
    "bounce.flush": Schema({"request": ("flush",), "id": int,
                            "queue_name": str, "queue_id": str,
                            "sender": str}),
    "bounce.warn": Schema({"request": ("warn",), "id": int,
                           "queue_name": str, "queue_id": str,
                           "sender": str}),
    "bounce.success": Schema({"request": ("success",), "id": int,
                              "queue_name": str, "queue_id": str,
                              "sender": str}),
    "bounce.remove": Schema({"request": ("remove",), "id": int,
                             "queue_id": str}),
    "bounce.reply": Schema({"id": int, "status": REPLY_STATUSES},
                           {"queue_id": str, "reason": str}),
}

# Which message types a server of each protocol accepts as requests.
REQUESTS = {
    "cleanup": frozenset({"cleanup.open", "cleanup.abort"}),
    "qmgr": frozenset({"qmgr.wakeup", "qmgr.flush", "qmgr.flush_site",
                       "qmgr.flush_id"}),
    "delivery": frozenset({"delivery.deliver"}),
    "bounce": frozenset({"bounce.append", "bounce.flush", "bounce.warn",
                         "bounce.success", "bounce.remove"}),
}
