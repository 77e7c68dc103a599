"""A throwaway daemon that master can supervise in tests (stdlib only).

Started by master through the test hook FULMAR_EXTRA_COMMANDS=dummy=<this
file>, with master's argv (`-c DIR -s NAME -t TYPE [-o n=v]...`), the
listeners named in FULMAR_LISTEN_FDS and a status pipe in FULMAR_STATUS_FD.

Behaviour:
* service name "crasher": exit 1 at once, before ready (throttling tests);
* otherwise write b"R", then for each connection on any listener: send one
  JSON line {"pid", "service", "type", "overrides"}, read one line, answer
  `echo: LINE`, close;
* SIGTERM: stop accepting, let open connections finish, exit 0;
* master gone (the status pipe's read end closed): exit 0.
"""

import json
import os
import selectors
import signal
import socket
import sys
import threading

POLL = 0.05
CONNECTION_TIMEOUT = 30.0


def parse(argv):
    opts = {"overrides": {}}
    i = 0
    while i < len(argv):
        flag = argv[i]
        if flag in ("-c", "-s", "-t", "-o") and i + 1 < len(argv):
            value = argv[i + 1]
            if flag == "-o":
                name, _, val = value.partition("=")
                opts["overrides"][name] = val
            else:
                opts[flag] = value
            i += 2
        else:
            i += 1
    return opts


def serve_one(conn, hello):
    try:
        conn.settimeout(CONNECTION_TIMEOUT)
        conn.sendall(hello)
        data = b""
        while b"\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        conn.sendall(b"echo: " + data.split(b"\n", 1)[0] + b"\n")
    except OSError:
        pass
    finally:
        conn.close()


def main():
    opts = parse(sys.argv[1:])
    if opts.get("-s") == "crasher":
        sys.exit(1)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    status_fd = int(os.environ["FULMAR_STATUS_FD"])
    fds = [int(x) for x in os.environ["FULMAR_LISTEN_FDS"].split(",") if x]
    listeners = [socket.socket(fileno=fd) for fd in fds]
    sel = selectors.DefaultSelector()
    for s in listeners:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    # EPOLLERR on the write end means master closed the read end: it died.
    sel.register(status_fd, selectors.EVENT_READ, "status")
    hello = (json.dumps({"pid": os.getpid(), "service": opts.get("-s"), "type": opts.get("-t"),
                         "overrides": opts["overrides"]}) + "\n").encode()
    os.write(status_fd, b"R")
    threads = []
    while not stopping.is_set():
        for key, _ in sel.select(POLL):
            if key.data == "status":
                stopping.set()
                break
            try:
                conn, _ = key.fileobj.accept()
            except (BlockingIOError, InterruptedError):
                continue
            conn.setblocking(True)
            t = threading.Thread(target=serve_one, args=(conn, hello))
            t.start()
            threads.append(t)
    for s in listeners:
        sel.unregister(s)
        s.close()
    for t in threads:
        t.join()
    sys.exit(0)


if __name__ == "__main__":
    main()
