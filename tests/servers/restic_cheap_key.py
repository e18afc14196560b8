"""Test helper: gives a restic repository a key that is cheap to open.

Usage: restic_cheap_key.py REPO PASSWORD
REPO is a local repository `restic init` made, with one key for PASSWORD.
That key is replaced by one for the same password and master key whose
scrypt parameters are N=1024, r=8, p=1 instead of what `restic init`
calibrated (about half a second of CPU on these machines, paid by every
restic command that opens the repository, and some 1.7 CPU-seconds at init).
restic reads the parameters from the key file, so the repository is as
valid as before (restic's own tests open theirs with low ones); only
guessing its password is cheaper, which a test's repository does not mind.

The key file format and its encryption are restic's design document's
(doc/design.rst, "Keys, Encryption and MAC"): scrypt(password, salt) gives
32 bytes of AES-256 key, then 16 of the Poly1305-AES key k and 16 of r; the
data is IV || AES-256-CTR(IV, plaintext) || Poly1305-AES(ciphertext) with
s = AES-128_k(IV).
"""

import base64
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

N, R, P = 1024, 8, 1


def derive(password, salt, n, r, p):
    raw = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=1 << 30, dklen=64)
    return raw[:32], raw[32:48], raw[48:64]


def mac(k, r, iv, ciphertext):
    enc = Cipher(algorithms.AES(k), modes.ECB()).encryptor()
    s = enc.update(iv) + enc.finalize()
    return Poly1305.generate_tag(r + s, ciphertext)


def open_sealed(keys, data):
    enc_key, k, r = keys
    iv, ciphertext, tag = data[:16], data[16:-16], data[-16:]
    if mac(k, r, iv, ciphertext) != tag:
        sys.exit("restic_cheap_key: wrong password or not a restic key (MAC mismatch)")
    dec = Cipher(algorithms.AES(enc_key), modes.CTR(iv)).decryptor()
    return dec.update(ciphertext) + dec.finalize()


def seal(keys, plaintext):
    enc_key, k, r = keys
    iv = os.urandom(16)
    enc = Cipher(algorithms.AES(enc_key), modes.CTR(iv)).encryptor()
    ciphertext = enc.update(plaintext) + enc.finalize()
    return iv + ciphertext + mac(k, r, iv, ciphertext)


def main():
    repo, password = sys.argv[1], sys.argv[2].encode()
    keys_dir = os.path.join(repo, "keys")
    (old_name,) = os.listdir(keys_dir)
    with open(os.path.join(keys_dir, old_name)) as f:
        old = json.load(f)
    old_keys = derive(password, base64.b64decode(old["salt"]), old["N"], old["r"], old["p"])
    master = open_sealed(old_keys, base64.b64decode(old["data"]))
    json.loads(master)  # the master key, as restic wrote it
    salt = os.urandom(64)
    new = dict(old, N=N, r=R, p=P, salt=base64.b64encode(salt).decode())
    new["data"] = base64.b64encode(seal(derive(password, salt, N, R, P), master)).decode()
    body = json.dumps(new).encode()
    # A key file is named for the SHA-256 of its content, as restic names it.
    name = hashlib.sha256(body).hexdigest()
    tmp = os.path.join(keys_dir, ".new")
    with open(tmp, "wb") as f:
        f.write(body)
    os.rename(tmp, os.path.join(keys_dir, name))
    os.unlink(os.path.join(keys_dir, old_name))


if __name__ == "__main__":
    main()
