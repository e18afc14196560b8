"""Test helper: a proxy in front of fake_gce.py that gives one instance (the
node the tests run as) the devices of the disks attached to it, as the
guest's kernel and udev rules would.

The fake keeps a disk's bytes in a "backing" image (a snapshot copies it, a
disk made from the snapshot gets a copy); a disk with none (made blank by
disks.insert) gets a sparse image of its size here. An instances.attachDisk
of a disk to NODE binds its image to a loop device (read-only when the
attachment's mode is READ_ONLY, as Compute Engine gives the guest a
read-only device) linked where the guest's rules link it
(DEVROOT/disk/by-id/google-DEVICENAME); detachDisk takes both away.

Usage: gce_node.py UPSTREAM DEVROOT WORKDIR NODE   prints its port first
GET /__node__ returns {"devices": {deviceName: loop}}. Binds 127.0.0.1 only.
"""

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import loopback

UPSTREAM, DEVROOT, WORK, NODE = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4]
BY_ID = os.path.join(DEVROOT, "disk", "by-id")
os.makedirs(BY_ID, exist_ok=True)
os.makedirs(WORK, exist_ok=True)
DEVICES = {}
LOCK = threading.Lock()
INSTANCE_VERB = re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)/(attachDisk|detachDisk)$")


def upstream(method, path, body, headers):
    req = urllib.request.Request(UPSTREAM + path, data=body if body else None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "application/json")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "application/json")


def link(device):
    return os.path.join(BY_ID, "google-" + device)


class Handler(loopback.Handler):
    def do_GET(self):
        if self.path.startswith("/__node__"):
            with LOCK:
                return self.reply(200, json.dumps({"devices": DEVICES}), "application/json")
        self.forward("GET", b"")

    def do_POST(self):
        self.forward("POST", self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def do_DELETE(self):
        self.forward("DELETE", b"")

    def forward(self, method, body):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        url = urllib.parse.urlparse(self.path)
        m = INSTANCE_VERB.match(url.path)
        with LOCK:
            status, data, ctype = upstream(method, self.path, body, headers)
            if status == 200 and m and m.group(3) == NODE:
                project, zone, _, verb = m.groups()
                if verb == "attachDisk":
                    self.attached(project, zone, json.loads(body or b"{}"))
                else:
                    device = (urllib.parse.parse_qs(url.query).get("deviceName") or [""])[0]
                    self.detached(device)
        self.reply(status, data, ctype)

    def attached(self, project, zone, body):
        name = body.get("source", "").rsplit("/", 1)[-1]
        device = body.get("deviceName") or name
        # Let the operation finish (the fake applies it then), then look.
        status, data, _ = upstream("GET", "/__fake__/state", b"", {})
        state = json.loads(data)
        disk = state["disks"].get(f"{project}/{zone}/{name}")
        if disk is None:
            return
        backing = disk.get("backing")
        if not backing:
            backing = os.path.join(WORK, name + ".img")
            with open(backing, "wb") as f:
                f.truncate(int(disk["sizeGb"]) << 30)
            upstream("POST", "/__fake__/backing",
                     json.dumps({"project": project, "zone": zone, "name": name, "path": backing}).encode(),
                     {"Content-Type": "application/json"})
        ro = ["--read-only"] if body.get("mode") == "READ_ONLY" else []
        dev = subprocess.run(["losetup", "--find", "--show"] + ro + [backing],
                             check=True, capture_output=True, text=True).stdout.strip()
        if os.path.lexists(link(device)):
            os.remove(link(device))
        os.symlink(dev, link(device))
        DEVICES[device] = dev

    def detached(self, device):
        dev = DEVICES.pop(device, None)
        if dev:
            if os.path.lexists(link(device)):
                os.remove(link(device))
            # A detached disk's device goes away, its flags with it: the
            # loop device is reused.
            subprocess.run(["blockdev", "--setrw", dev], check=False)
            subprocess.run(["losetup", "--detach", dev], check=False)


if __name__ == "__main__":
    loopback.serve(Handler)
