"""moto and boto3, imported and warmed once, forked for each test that asks.

Starting moto_server costs about two CPU-seconds (importing moto, then
building its EC2 app and backend on the first EC2 call), and the suite
starts it over a hundred times. This process pays that once: it imports
moto, makes the first EC2 call in-process, then serves a Unix socket. For
each connection it reads one line, `PORT<TAB>DIR<TAB>RECORDING`, forks, and
answers the child's pid. The child is a moto_server as `moto_server -H
127.0.0.1 -p PORT` would be, started with exactly the state a fresh server
has after the same first call: nothing a test made is in it (the parent
never serves a request), its random ids are reseeded, its working directory
and request recording are the test's own.

A line `admin<TAB>JSON`, JSON being `[ENDPOINT, COMMAND, ARGS...]`, asks
for what `ec2_admin.py ENDPOINT COMMAND ARGS...` would print: a forked
child answers `{"ok": ANSWER}` or `{"error": TRACEBACK}`. Run as its own
process, ec2_admin.py spends about half a CPU-second importing boto3 and
loading the EC2 model, and the suite asks it some 450 times; here both are
loaded once.

Usage: moto_zygote.py SOCKET
Exits after IDLE seconds without a request, removing SOCKET.
tests/common/servers.rs (`Server::moto`, `Server::ec2_admin`) starts it and
kills each moto child.
"""

import json
import os
import random
import signal
import socket
import sys
import traceback

IDLE = 30

from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app  # noqa: E402
from werkzeug.serving import run_simple  # noqa: E402
from werkzeug.test import Client  # noqa: E402

import boto3  # noqa: E402
import moto.moto_api  # noqa: E402
from moto.moto_api._internal import mock_random  # noqa: E402

import ec2_admin  # noqa: E402


def warmed_app():
    """moto_server's application, after the first EC2 call a test's
    server used to be warmed with (DescribeVolumes in us-east-1)."""
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    body = "Action=DescribeVolumes&Version=2016-11-15&Filter.1.Name=tag%3AName&Filter.1.Value.1=warm-up"
    auth = (
        "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/ec2/aws4_request, "
        "SignedHeaders=host, Signature=0"
    )
    reply = Client(app).post(
        "/",
        data=body,
        headers={
            "Authorization": auth,
            "Content-Type": "application/x-www-form-urlencoded",
            "Host": "127.0.0.1",
        },
    )
    if reply.status_code != 200:
        sys.exit(f"moto_zygote: the warm-up call failed: {reply.status_code}")
    return app


def warmed_session():
    """A boto3 session that has loaded the EC2 model (its loader caches it
    for every client made from it afterwards)."""
    session = boto3.session.Session()
    ec2_admin.client("http://127.0.0.1:1", session)
    return session


def admin(session, conn, request):
    """The child: answers one ec2_admin.py query on CONN."""
    try:
        endpoint, command, *args = json.loads(request)
        reply = {"ok": ec2_admin.run(ec2_admin.client(endpoint, session), endpoint, command, args)}
    except Exception:  # noqa: BLE001 (the test shows it)
        reply = {"error": traceback.format_exc()}
    conn.settimeout(None)
    conn.sendall(json.dumps(reply).encode())


def serve(app, port, workdir, recording):
    """The child: one moto server on 127.0.0.1:PORT."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.chdir(workdir)
    os.environ["MOTO_PORT"] = str(port)
    os.environ["MOTO_RECORDER_FILEPATH"] = recording
    moto.moto_api.recorder._location = recording
    mock_random.seed()
    random.seed()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    run_simple("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    os._exit(0)


def main():
    path = sys.argv[1]
    app = warmed_app()
    session = warmed_session()
    # Children (killed by the tests, or done answering) are reaped by the
    # kernel, never waited for.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(IDLE)
    while True:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            os.unlink(path)
            return
        with conn:
            conn.settimeout(10)
            try:
                line = conn.makefile().readline().rstrip("\n")
                kind, _, request = line.partition("\t")
                if kind != "admin":
                    port, workdir, recording = line.split("\t")
            except (OSError, ValueError):
                continue  # a connection that only looked whether we listen
            pid = os.fork()
            if pid == 0:
                listener.close()
                try:
                    if kind == "admin":
                        admin(session, conn, request)
                    else:
                        conn.close()
                        serve(app, int(port), workdir, recording)
                finally:
                    os._exit(0 if kind == "admin" else 1)
            if kind != "admin":
                conn.sendall(f"{pid}\n".encode())


if __name__ == "__main__":
    main()
