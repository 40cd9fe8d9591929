"""A stand-in for a remote host's execnet socket server: ``python tests/remote_server.py
HOST:PORT [--thread]`` (port 0: a free one), which prints ``listening PORT`` once it
listens. With ``--thread`` each worker runs outside its process's main thread.

It speaks execnet's ``socketserver`` protocol (one line of Python source, run with the
connection as ``clientsock``), but serves each connection in a forked child, as sshd serves
each login: a worker that is killed takes only its own connection with it, and the next one
(xdist's replacement worker) is accepted at once. Run in a private mount namespace
(:mod:`tests.remote_hosts`), it is a host of its own as far as ``/tmp`` goes.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading

from execnet.gateway_base import get_execmodel


def serve(connection: socket.socket, address: object, model: str) -> None:
    source = eval(connection.makefile("rb").readline().rstrip())
    namespace = {"clientsock": connection, "address": address, "execmodel": get_execmodel(model)}
    exec(compile(source + "\n", "<socket server>", "exec"), namespace)


def serve_in_a_thread(connection: socket.socket, address: object) -> None:
    """As execnet's own socketserver may (its 'thread' execmodel): the worker runs in a
    thread that is not the process's main thread."""
    thread = threading.Thread(target=serve, args=(connection, address, "thread"))
    thread.start()
    thread.join()


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, int(port)))
    server.listen(16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # no zombies of finished connections
    sys.stdout.write(f"listening {server.getsockname()[1]}\n")
    sys.stdout.flush()
    while True:
        connection, address = server.accept()
        if os.fork() == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a worker waits for its children
            server.close()
            try:
                if "--thread" in sys.argv:
                    serve_in_a_thread(connection, address)
                else:  # a worker in the main thread, as xdist's own popen and ssh ones
                    serve(connection, address, "main_thread_only")
            finally:
                os._exit(0)
        connection.close()


if __name__ == "__main__":
    main()
