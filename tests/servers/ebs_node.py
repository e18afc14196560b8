"""Test helper: a proxy in front of moto that gives EBS volumes content and
one instance (the node the tests run as) their devices, as EBS and the
guest's kernel and udev would.

moto keeps no bytes: here each volume is a sparse image file, made blank by
CreateVolume or as a copy of its snapshot (CreateVolume with SnapshotId);
CreateSnapshot copies the volume's image when the call is made, which is
EBS's point in time (the call returns once it is fixed, docs.aws.amazon.com
"Amazon EBS snapshots": "the point-in-time snapshot is created
immediately"). An AttachVolume to NODE binds the image to a loop device and
links it where the node's udev rules link an NVMe EBS volume
(DEVROOT/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id without the
dash>); DetachVolume takes both away; DeleteVolume and DeleteSnapshot
remove the images. A volume attached elsewhere has no device here.

Usage: ebs_node.py UPSTREAM DEVROOT WORKDIR NODE   prints its port first
GET /__node__ returns {"volumes": {vol: image}, "snapshots": {...},
"devices": {vol: loop}}. Binds 127.0.0.1 only.
"""

import json
import os
import re
import shutil
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
STATE = {"volumes": {}, "snapshots": {}, "devices": {}}
LOCK = threading.Lock()
COUNT = [0]


def first(xml, tag):
    m = re.search(rb"<" + tag.encode() + rb">([^<]+)</", xml)
    return m.group(1).decode() if m else None


def copy(src, dst):
    # Holes kept: the images are sparse.
    subprocess.run(["cp", "--sparse=always", src, dst], check=True)


def link(vol):
    return os.path.join(BY_ID, "nvme-Amazon_Elastic_Block_Store_" + vol.replace("-", "", 1))


class Handler(loopback.Handler):
    def do_GET(self):
        if self.path.startswith("/__node__"):
            with LOCK:
                return self.reply(200, json.dumps(STATE), "application/json")
        self.forward(b"")

    def do_POST(self):
        self.forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def forward(self, body):
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
        action = params.get("Action", "?")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        with LOCK:
            # The snapshot's point in time: before EC2 answers.
            taken = None
            src = STATE["volumes"].get(params.get("VolumeId")) if action == "CreateSnapshot" else None
            if src:
                COUNT[0] += 1
                taken = os.path.join(WORK, "snapshot-%d.img" % COUNT[0])
                copy(src, taken)
            req = urllib.request.Request(UPSTREAM + self.path, data=body or None, headers=headers, method=self.command)
            try:
                with urllib.request.urlopen(req) as resp:
                    status, data, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "text/xml")
            except urllib.error.HTTPError as e:
                status, data, ctype = e.code, e.read(), e.headers.get("Content-Type", "text/xml")
            if status == 200:
                self.effect(action, params, data, taken)
        self.reply(status, data, ctype)

    def effect(self, action, params, data, taken):
        if action == "CreateVolume":
            vol = first(data, "volumeId")
            image = os.path.join(WORK, vol + ".img")
            snap = params.get("SnapshotId")
            if snap and snap in STATE["snapshots"]:
                copy(STATE["snapshots"][snap], image)
            else:
                with open(image, "wb") as f:
                    f.truncate(int(params.get("Size", "1")) << 30)
            STATE["volumes"][vol] = image
        elif action == "CreateSnapshot" and taken:
            STATE["snapshots"][first(data, "snapshotId")] = taken
        elif action == "AttachVolume" and params.get("InstanceId") == NODE:
            vol = params["VolumeId"]
            if vol in STATE["volumes"]:
                dev = subprocess.run(["losetup", "--find", "--show", STATE["volumes"][vol]],
                                     check=True, capture_output=True, text=True).stdout.strip()
                if os.path.lexists(link(vol)):
                    os.remove(link(vol))
                os.symlink(dev, link(vol))
                STATE["devices"][vol] = dev
        elif action == "DetachVolume":
            vol = params["VolumeId"]
            dev = STATE["devices"].pop(vol, None)
            if dev:
                if os.path.lexists(link(vol)):
                    os.remove(link(vol))
                # A detached NVMe device goes away, its flags with it (the
                # archive sets it read-only): the loop device is reused.
                subprocess.run(["blockdev", "--setrw", dev], check=False)
                subprocess.run(["losetup", "--detach", dev], check=False)
        elif action == "DeleteVolume":
            image = STATE["volumes"].pop(params["VolumeId"], None)
            if image and os.path.exists(image):
                os.remove(image)
        elif action == "DeleteSnapshot":
            image = STATE["snapshots"].pop(params["SnapshotId"], None)
            if image and os.path.exists(image):
                os.remove(image)


if __name__ == "__main__":
    loopback.serve(Handler)
