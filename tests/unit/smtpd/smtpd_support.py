"""Helpers for the smtpd unit tests: Postfix-default settings and a driver."""

from fulmar.smtp.reply import Reply
from smtpd import protocol as P

HOST = "mx.example.test"


def make_settings(**kw) -> P.Settings:
    base = dict(
        myhostname=HOST, banner=f"{HOST} ESMTP Postfix", helo_required=False,
        hard_error_limit=20, soft_error_limit=10, junk_command_limit=100,
        recipient_limit=1000, message_size_limit=10240000, line_length_limit=2048,
        forbid_bare_newline="normalize", bare_newline_reject_code=550,
        forbid_unauth_pipelining=True, disable_vrfy=False,
        discard_ehlo_keywords=frozenset(), smtputf8_enable=True,
        strict_rfc821_envelopes=False,
    )
    base.update(kw)
    return P.Settings(**base)


class Driver:
    """Feeds bytes, answers decisions with a policy function, collects output."""

    def __init__(self, decide=None, start=True, **kw):
        self.p = P.ServerProtocol(make_settings(**kw))
        self.decide = decide or (lambda e: None)
        self.events = []
        self.content = bytearray()
        self.out = bytearray()
        if start:
            self.p.start()
            self._pump()

    def _pump(self):
        while True:
            evs = self.p.events()
            if not evs:
                break
            for e in evs:
                self.events.append(e)
                if isinstance(e, P.DataChunk):
                    self.content += e.data
            pending = self.p.pending
            if pending is not None:
                if isinstance(pending, P.DataEnd) and pending.error is None:
                    r = self.decide(pending)
                    self.p.respond(r if r is not None else Reply(250, "2.0.0", "Ok: queued as TESTQID"))
                else:
                    self.p.respond(self.decide(pending))
        self.out += self.p.data_to_send()

    def send(self, data: bytes):
        self.p.receive_data(data)
        self._pump()
        return self

    def replies(self):
        """Reply lines so far, then forget them."""
        text = bytes(self.out).decode()
        self.out.clear()
        return [line for line in text.split("\r\n") if line]

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]
