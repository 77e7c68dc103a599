"""qmgr.manager: when incoming/ is scanned.

cleanup's wakeup names each new file, so qmgr activates it directly; a
finished message asks for a directory scan at most once a second (it used
to, once per message: an opendir/getdents/close and a Python loop on the
delivery path), enough to pick up a file whose wakeup was lost.
A scan cut short by qmgr_message_active_limit reports it, so run() scans
again once there is room.
"""
from __future__ import annotations

import os
import time

from fulmar.queue import qfile
from qmgr import manager


def _qm(daemon_context, active_limit=20000):
    ctx, qdir = daemon_context("qmgr", f"mydestination =\nqmgr_message_active_limit = {active_limit}\n")
    return manager.QueueManager(ctx), qdir


async def _wake(qm, tmp_path, qid, until):
    """Send cleanup's wakeup for qid to qm.handle; wait until until() is true."""
    import asyncio
    from fulmar.ipc import channel
    path = str(tmp_path / "qmgr.sock")
    server = await channel.serve(path, "qmgr", qm.handle)
    ch = await channel.connect(path, protocol="qmgr", timeout=5)
    await ch.send_attr({"request": "wakeup", "queue_id": qid})
    await ch.flush()
    for _ in range(100):
        if until():
            break
        await asyncio.sleep(0.01)
    return server, ch


def _agent(qm, status):
    """A delivery agent answering every recipient with status; its requests."""
    requests = []

    async def request(transport, req):
        requests.append(req)
        return [{"offset": r["offset"], "status": status, "dsn": "4.0.0", "reason": "x",
                 "relay": "none"} for r in req["recipients"]]
    qm.transports.request = request
    return requests


def _message(qdir):
    w = qfile.QueueWriter.create(qdir)
    w.set_arrival(time.time())
    w.set_sender("a@example.org")
    w.add_recipient(qfile.Recipient("b@one.example"))
    w.write_content(b"Subject: x\r\n\r\nx\r\n")
    w.end_content()
    w.commit()
    return w.queue_id


async def test_finishing_a_message_asks_for_a_scan_at_most_once_a_second(daemon_context):
    qm, qdir = _qm(daemon_context)
    first, second = _message(qdir), _message(qdir)
    qm.incoming_wanted = False
    qm.incoming_scanned = time.time()            # a scan just ran
    qm.activate(first, manager.INCOMING)
    await qm.finish(qm.messages[first])
    assert not os.path.exists(qfile.path_of(qdir, "active", first))
    assert first not in qm.messages
    assert qm.incoming_wanted is False
    qm.incoming_scanned = time.time() - manager.INCOMING_RESCAN   # long enough ago
    qm.activate(second, manager.INCOMING)
    await qm.finish(qm.messages[second])
    assert qm.incoming_wanted is True


async def test_scan_cut_short_by_the_active_limit_says_so(daemon_context):
    qm, qdir = _qm(daemon_context, active_limit=1)
    first, second = _message(qdir), _message(qdir)
    assert qm.scan(manager.INCOMING, time.time()) is False
    assert len(qm.messages) == 1
    await qm.finish(next(iter(qm.messages.values())))
    assert qm.scan(manager.INCOMING, time.time()) is True
    assert set(qm.messages) <= {first, second} and len(qm.messages) == 1


async def test_active_message_keeps_only_what_requests_need(daemon_context):
    # qmgr_message_active_limit envelopes stay in memory: not the file's
    # bytes, not the client attributes.
    qm, qdir = _qm(daemon_context)
    w = qfile.QueueWriter.create(qdir)
    w.set_arrival(time.time())
    for k, v in {"client_name": "c.example", "helo_name": "h.example", "dsn_envid": "E1",
                 "body_type": "8BITMIME"}.items():
        w.add_attr(k, v)
    w.set_sender("a@example.org")
    w.add_recipient(qfile.Recipient("b@one.example"))
    w.write_content(b"Subject: x\r\n\r\nx\r\n")
    w.end_content()
    w.commit()
    qm.activate(w.queue_id, manager.INCOMING)
    env = qm.messages[w.queue_id].env
    assert env.data is None
    assert env.attrs == {"dsn_envid": "E1", "body_type": "8BITMIME"}


async def test_wakeup_activates_at_once_when_there_is_room(daemon_context, tmp_path):
    # cleanup's wakeup is handled in the connection's handler, not by
    # waking run(); past the active limit it waits for run() as before.
    import asyncio
    from fulmar.ipc import channel
    qm, qdir = _qm(daemon_context, active_limit=1)
    scheduled = []
    qm.schedule = lambda now: scheduled.append(now)
    first, second = _message(qdir), _message(qdir)
    path = str(tmp_path / "qmgr.sock")
    server = await channel.serve(path, "qmgr", qm.handle)
    try:
        ch = await channel.connect(path, protocol="qmgr", timeout=5)
        for qid in (first, second):
            await ch.send_attr({"request": "wakeup", "queue_id": qid})
        await ch.flush()
        for _ in range(100):
            if qm.pending_ids:
                break
            await asyncio.sleep(0.01)
        assert list(qm.messages) == [first] and len(scheduled) == 1
        assert os.path.exists(qfile.path_of(qdir, "active", first))
        assert qm.pending_ids == [second] and qm.kick.is_set()
        await ch.close()
    finally:
        server.close()


async def test_queue_active_line_is_logged_after_the_delivery_is_scheduled(daemon_context, tmp_path,
                                                                          monkeypatch):
    # The delivery request goes out first; the line follows in the same
    # handler, and still comes before any line qmgr itself logs for it.
    qm, qdir = _qm(daemon_context)
    logged = []
    monkeypatch.setattr(manager.log, "info", lambda fmt, *a: logged.append(fmt % a))
    seen_at_schedule = []

    def schedule(now):
        seen_at_schedule.append(list(logged))
        qm._log_results(manager.Job(qm.messages[qid], "smtp", "nexthop",
                                    qm.messages[qid].env.recipients),
                        [{"status": "deferred", "dsn": "4.4.1", "reason": "dead"}], relay="none")
    qm.schedule = schedule
    qid = _message(qdir)
    server, ch = await _wake(qm, tmp_path, qid, lambda: seen_at_schedule)
    try:
        assert seen_at_schedule == [[]]
        assert logged[0] == f"{qid}: from=<a@example.org>, size=17, nrcpt=1 (queue active)"
        assert "status=deferred" in logged[1] and len(logged) == 2
        assert qm.held_log is None
        await ch.close()
    finally:
        server.close()


async def test_a_woken_up_small_message_takes_its_file_bytes_to_the_agent(daemon_context, tmp_path):
    # The request made in the wakeup's handler carries the file qmgr has
    # just read; one made later (a scan, a retry) does not, and qmgr keeps
    # no file bytes.
    import asyncio
    qm, qdir = _qm(daemon_context)
    requests = _agent(qm, "deferred")
    first, second = _message(qdir), _message(qdir)
    with open(qfile.path_of(qdir, "incoming", first), "rb") as f:
        first_bytes = f.read()
    server, ch = await _wake(qm, tmp_path, first, lambda: requests)
    try:
        assert requests[0]["content"].encode("latin-1") == first_bytes
        assert qm.fresh is None
        qm.activate(second, manager.INCOMING)
        qm.schedule(time.time())
        await asyncio.sleep(0.05)
        assert [r["queue_id"] for r in requests] == [first, second]
        assert "content" not in requests[1]
        await ch.close()
    finally:
        server.close()


async def test_a_wakeup_whose_job_waits_for_a_rate_delay_wakes_run(daemon_context, tmp_path):
    # The wakeup's handler schedules the new message itself; when its
    # destination's rate delay holds it back (the first delivery, to the
    # same destination, started less than 60 s ago), run() must be woken
    # to set its timer for it (else it waits for queue_run_delay).
    import asyncio
    ctx, qdir = daemon_context("qmgr", "mydestination =\ndefault_destination_rate_delay = 60s\n")
    qm = manager.QueueManager(ctx)
    requests = _agent(qm, "sent")
    first, second = _message(qdir), _message(qdir)
    server, ch = await _wake(qm, tmp_path, first, lambda: requests and first not in qm.messages)
    try:
        assert first not in qm.messages
        qm.kick.clear()
        await ch.send_attr({"request": "wakeup", "queue_id": second})
        await ch.flush()
        for _ in range(100):
            if second in qm.messages:
                break
            await asyncio.sleep(0.01)
        assert len(requests) == 1 and qm.scheduler.next_wakeup is not None
        assert qm.kick.is_set()
        await ch.close()
    finally:
        server.close()


async def test_a_flush_takes_each_deferred_message_once_while_the_destination_defers(
        daemon_context):
    # postqueue -f during an outage: each deferred message gets one more
    # attempt.  Regression: a pass cut short by the active limit started
    # again with the flush still in force and took the messages it had
    # just deferred again, round and round until the destination came back
    # (CPU, and a defer log growing by one entry per message per round).
    import asyncio
    qm, qdir = _qm(daemon_context, active_limit=2)
    _agent(qm, "deferred")

    async def append(lane, qid, entry):
        return True
    qm.bounce.append = append
    ids = [_message(qdir) for _ in range(3)]
    later = time.time() + 3600
    for qid in ids:
        qfile.move(qdir, qid, manager.INCOMING, manager.DEFERRED)
        os.utime(qfile.path_of(qdir, manager.DEFERRED, qid), (later, later))
    taken = []
    activate = qm.activate

    def counting(qid, from_queue):
        if from_queue == manager.DEFERRED:
            taken.append(qid)
        activate(qid, from_queue)
    qm.activate = counting
    run = asyncio.create_task(qm.run())
    await asyncio.sleep(0.05)
    assert taken == []                       # not their time yet
    qm.flush()
    for _ in range(200):
        await asyncio.sleep(0.01)
        if not qm.force_deferred and not qm.messages:
            break
    await asyncio.sleep(0.1)                 # time to go round again, if it would
    qm.ctx.stopping.set()
    qm.kick.set()
    await asyncio.wait_for(run, 5)
    assert sorted(taken) == sorted(ids)
    assert not qm.force_deferred
    for qid in ids:
        assert os.path.exists(qfile.path_of(qdir, manager.DEFERRED, qid))


def _stats_in_deferred(monkeypatch) -> list:
    """The paths in deferred/ that os.stat is called with, from now on."""
    looked_at = []
    stat = os.stat

    def counting_stat(path, *a, **kw):
        if f"{os.sep}{manager.DEFERRED}{os.sep}" in str(path):
            looked_at.append(path)
        return stat(path, *a, **kw)
    monkeypatch.setattr(os, "stat", counting_stat)
    return looked_at


async def test_a_deferred_pass_cut_short_resumes_where_it_stopped(daemon_context, monkeypatch):
    # Each file is looked at once per pass, however often the active limit
    # cuts the pass short.  Regression: every resumption started over and
    # stat()ed every file before it again, quadratic in a large deferred/.
    qm, qdir = _qm(daemon_context, active_limit=1)
    now = time.time()
    # Enough of each that some waiting file comes before some due one in
    # directory order (all due first: 1 chance in 924).
    due, waiting = [_message(qdir) for _ in range(6)], [_message(qdir) for _ in range(6)]
    for qid in due + waiting:
        qfile.move(qdir, qid, manager.INCOMING, manager.DEFERRED)
        t = now - 10 if qid in due else now + 3600
        os.utime(qfile.path_of(qdir, manager.DEFERRED, qid), (t, t))
    looked_at = _stats_in_deferred(monkeypatch)
    taken = []
    for _ in range(20):
        complete = qm.scan(manager.DEFERRED, now)
        taken += list(qm.messages)
        qm.messages.clear()                  # room again
        if complete:
            break
    assert sorted(taken) == sorted(due)
    assert len(looked_at) == len(due) + len(waiting)


async def test_no_new_message_while_the_bounce_daemon_lags(daemon_context, tmp_path):
    # A dead destination defers everything at once and each message waits
    # in memory for its defer log entry: past BOUNCE_BACKLOG outstanding
    # requests, new mail stays on disk (a wakeup is kept for later, a scan
    # takes nothing) until the bounce daemon catches up.
    qm, qdir = _qm(daemon_context)
    first, second = _message(qdir), _message(qdir)
    qm.bounce.waiting = manager.BOUNCE_BACKLOG
    server, ch = await _wake(qm, tmp_path, first, lambda: first in qm.pending_ids)
    try:
        assert first in qm.pending_ids and not qm.messages
        assert qm.scan(manager.INCOMING, time.time()) is False
        assert not qm.messages
        assert os.path.exists(qfile.path_of(qdir, manager.INCOMING, first))
        qm.bounce.waiting = manager.BOUNCE_BACKLOG - 1
        assert qm.scan(manager.INCOMING, time.time()) is True
        assert set(qm.messages) == {first, second}
    finally:
        await ch.close()
        server.close()


async def test_a_scan_takes_a_batch_at_a_time(daemon_context, monkeypatch):
    # run() schedules each batch and lets it start before taking more, so
    # that a dead destination's deferrals show in the bounce backlog.
    monkeypatch.setattr(manager, "SCAN_BATCH", 2)
    qm, qdir = _qm(daemon_context)
    ids = {_message(qdir) for _ in range(5)}
    sizes = []
    while True:
        complete = qm.scan(manager.INCOMING, time.time())
        sizes.append(len(qm.messages))
        if complete:
            break
        assert qm.scan_more
        qm.scan_more = False
    assert sizes == [2, 4, 5]
    assert set(qm.messages) == ids


async def test_a_scan_looks_at_a_bounded_number_of_files_per_turn(daemon_context, monkeypatch):
    # A periodic pass over a large deferred/ of messages not yet due takes
    # nothing, but stat()s every file: it goes on in the next turn of
    # run() after SCAN_LOOK of them, so that the event loop (cleanup's
    # wakeups, the agents' results) is not held for the whole directory;
    # each file is still looked at once per pass.
    monkeypatch.setattr(manager, "SCAN_LOOK", 3)
    qm, qdir = _qm(daemon_context)
    now = time.time()
    waiting = [_message(qdir) for _ in range(7)]
    for qid in waiting:
        qfile.move(qdir, qid, manager.INCOMING, manager.DEFERRED)
        os.utime(qfile.path_of(qdir, manager.DEFERRED, qid), (now + 3600, now + 3600))
    looked_at = _stats_in_deferred(monkeypatch)
    turns = []
    while True:
        complete = qm.scan(manager.DEFERRED, now)
        turns.append(len(looked_at))
        if complete:
            break
        assert qm.scan_more
        qm.scan_more = False
    assert turns == [3, 6, 7]
    assert not qm.messages and len(set(looked_at)) == 7


async def test_a_wakeup_without_a_queue_id_asks_for_a_scan(daemon_context, tmp_path):
    # cleanup sends queue_id "" when more wakeups waited for its
    # connection than it keeps (cleanup.service.UNSENT_MAX).
    qm, qdir = _qm(daemon_context)
    qm.incoming_wanted = False
    server, ch = await _wake(qm, tmp_path, "", lambda: qm.incoming_wanted)
    try:
        assert qm.incoming_wanted is True
        assert qm.kick.is_set()
        assert qm.messages == {}
    finally:
        await ch.close()
        server.close()


async def test_a_full_active_set_waits_for_room_without_spinning(daemon_context):
    # A deferred/ pass cut short by the active limit stays due until it
    # completes; run() used to wait for 0 s while the set was full, and so
    # turned about 16 times per message delivered through a 100,000-message
    # flush (docs/performance.md, item 61).  Now it waits for a finished
    # message's kick.
    import asyncio
    qm, qdir = _qm(daemon_context, active_limit=1)
    for _ in range(2):
        qid = _message(qdir)
        qfile.move(qdir, qid, "incoming", "deferred", sync=False)
    stuck = asyncio.Event()

    async def request(transport, req):
        await stuck.wait()                  # the delivery never ends
    qm.transports.request = request
    turns = []
    real_schedule = qm.schedule
    qm.schedule = lambda now: (turns.append(now), real_schedule(now))
    runner = asyncio.get_running_loop().create_task(qm.run())
    try:
        await asyncio.sleep(0.3)
        assert len(qm.messages) == 1                 # full, one file still due
        assert len(turns) < 10, f"{len(turns)} turns in 0.3 s while full"
    finally:
        runner.cancel()
        for task in list(qm.tasks):
            task.cancel()
        await asyncio.gather(runner, *qm.tasks, return_exceptions=True)
