"""qmgr.manager: a message split into several jobs ends exactly once.

Regression: when the non-last job of a message was still writing its done
marks (qfile.mark_done, in a worker thread), the last job finished the
message and removed the file; the first job then logged "queue file
vanished" and, having seen jobs == 0 after its wait, finished the message a
second time (`removed` logged twice).
"""
from __future__ import annotations

import asyncio
import os
import threading

from fulmar import log
from fulmar.queue import qfile
from qmgr import manager
from qmgr.scheduler import Job


def _setup(daemon_context):
    ctx, qdir = daemon_context("qmgr", "mydestination =\n")
    qm = manager.QueueManager(ctx)
    w = qfile.QueueWriter.create(qdir)
    w.set_arrival(1.0)
    w.set_sender("a@example.org")
    for r in ("b@one.example", "c@two.example"):
        w.add_recipient(qfile.Recipient(r))
    w.write_content(b"Subject: x\r\n\r\nx\r\n")
    w.end_content()
    w.commit()
    qid = w.queue_id
    qfile.move(qdir, qid, "incoming", "active")
    env = qfile.read_envelope(qfile.path_of(qdir, "active", qid))
    msg = manager.Message(qid, env, "incoming")
    msg.jobs = 2
    jobs = [Job(msg, "smtp", f"{i}.example", [r]) for i, r in enumerate(env.recipients)]
    return qm, msg, jobs, qfile.path_of(qdir, "active", qid)


def _sent(rcpt):
    return {"offset": rcpt.offset, "status": "sent", "dsn": "2.0.0", "reason": "ok",
            "relay": "x"}


async def test_two_jobs_end_the_message_once(daemon_context, monkeypatch):
    qm, msg, (job1, job2), path = _setup(daemon_context)
    lines: list[str] = []
    monkeypatch.setattr(log, "info", lambda fmt, *a: lines.append("info: " + fmt % a))
    monkeypatch.setattr(log, "warning", lambda fmt, *a: lines.append("warning: " + fmt % a))
    release = threading.Event()
    real_mark_done = qfile.mark_done

    def slow_mark_done(p, offsets):
        release.wait(10)
        real_mark_done(p, offsets)

    monkeypatch.setattr(qfile, "mark_done", slow_mark_done)
    t1 = asyncio.create_task(qm.job_done(job1, [_sent(job1.recipients[0])]))
    await asyncio.sleep(0)                # job 1 now waits in mark_done
    t2 = asyncio.create_task(qm.job_done(job2, [_sent(job2.recipients[0])]))
    done, _ = await asyncio.wait([t2], timeout=0.2)
    assert not done and os.path.exists(path)   # the last job waits for job 1's marks
    release.set()
    await asyncio.gather(t1, t2)
    assert not os.path.exists(path)
    assert lines.count(f"info: {msg.queue_id}: removed") == 1, lines
    assert not [ln for ln in lines if ln.startswith("warning")], lines


async def test_a_delivered_message_leaves_its_inode_for_the_next_one(daemon_context):
    """finish() recycles the file (qfile.Recycler): in recycle/, its bytes
    kept for the next message to be written over, and cleanup's next queue
    file is made on the same inode."""
    qm, msg, (job1, job2), path = _setup(daemon_context)
    qm.recycler.enabled = True          # (the test's file system may have a journal)
    ino, size = os.stat(path).st_ino, os.stat(path).st_size
    await qm.job_done(job1, [_sent(job1.recipients[0])])
    await qm.job_done(job2, [_sent(job2.recipients[0])])
    assert not os.path.exists(path)
    spare = os.path.join(qm.queue_dir, "recycle", msg.queue_id)
    assert (os.stat(spare).st_ino, os.stat(spare).st_size) == (ino, size)
    w = qfile.QueueWriter.create(qm.queue_dir, reuse=True)
    assert os.stat(w.path).st_ino == ino
    w.abort()


def test_recycling_is_on_only_where_the_file_system_scans_freed_inodes(daemon_context, monkeypatch):
    from fulmar.queue import fsinfo
    ctx, _ = daemon_context("qmgr", "mydestination =\n")
    for answer in (False, True):
        monkeypatch.setattr(fsinfo, "scans_freed_inodes", lambda path, a=answer: a)
        assert manager.QueueManager(ctx).recycler.enabled is answer
