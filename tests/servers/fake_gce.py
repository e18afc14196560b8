"""Test helper: a small fake Compute Engine, since no public emulator exists.

It speaks the real REST paths and JSON that google-cloud-compute-v1 sends
(disks insert/get/list/delete/setLabels/resize/createSnapshot, instances
get/attachDisk/detachDisk, zoneOperations wait/get, snapshots list/get/delete
with the list's `labels.KEY = "VALUE"` filter applied, globalOperations
get) and the metadata server's paths (an access token
for Application Default Credentials; instance name, zone and project for
--self). It holds state, applies an operation's effect when the operation
completes, and can be told to make operations slow, never finish, or fail,
and calls fail over HTTP. Like Compute Engine, it answers a mutating call
that repeats a `requestId` with the first call's operation, doing nothing
twice.

Compute Engine's own rules it enforces (each named where it is written):
  * list calls (disks.list, disks.aggregatedList, snapshots.list) page:
    at most `maxResults` items (default and cap 500) and never more than
    `page_size` (config; the service may return fewer than asked), the rest
    behind `nextPageToken`;
  * list filters: `(name = "X")` terms joined by OR, `(labels.K = "V")`
    terms joined by AND (snapshots.list, disks.list); a filter longer than `max_filter` characters
    (config, 4096) is refused 400, as a URL too long is;
  * a 403 answer as the service gives it: `http_fail` rules take `"answer":
    "rate-limit"` (403, reason rateLimitExceeded: cloud.google.com/compute/
    api-quota), `"scope"` (403, ACCESS_TOKEN_SCOPE_INSUFFICIENT in the
    ErrorInfo details, reason insufficientPermissions), `"forbidden"`
    (403, reason forbidden: an IAM permission missing) or `"api-disabled"`
    (403, reason accessNotConfigured); the method `*`
    matches every API call;
  * a disk is snapshotted at most in bursts of 6 and then once per 600 s
    (`snapshot_burst`, `snapshot_interval`; snapshot-best-practices): a
    faster one fails its operation with RESOURCE_OPERATION_RATE_EXCEEDED;
  * snapshots go to the disk's multi-region (`us`, `eu`, `asia`) unless
    `storageLocations` says otherwise; `allowed_locations` (config) is an
    organisation policy on resource locations: another location is refused
    412 (constraints/gcp.resourceLocations);
  * instances have a machine type (`machineType`, default n2-standard-2);
    attachDisk of a pd-* disk to a Hyperdisk-only family (c4, c4a, c4d, n4,
    n4a, n4d, x4, m4, a4, h4d), or of a hyperdisk-* disk to one without
    Hyperdisk (e2, n1, f1, g1), fails its operation UNSUPPORTED_OPERATION
    with the service's message (`[pd-balanced] features are not compatible
    for creating instance`, as the PD CSI driver matches it);
  * regional disks (`POST /__fake__/regional-disks`) live in the region, not
    the zone: disks.get in a zone does not see them, disks.aggregatedList
    does (scope `regions/R`);
  * disks.delete refuses a disk in use (400 resourceInUseByAnotherResource).

IAM and access scopes, as the service applies them (disk-doctor's tests):
  * `iam_denied` (config, a list of permissions): a call that checks one
    of them is refused 403 with the permission named ("Required
    'compute.disks.create' permission for 'projects/P/zones/Z/disks/D'",
    reason forbidden), as Compute Engine refuses a call IAM does not allow;
  * testIamPermissions: disks and instances (POST .../disks/D/
    testIamPermissions, .../instances/I/testIamPermissions: Compute
    Engine's API reference) and Cloud Resource Manager's
    projects.testIamPermissions (POST /v1/projects/P:testIamPermissions)
    answer the asked permissions less `iam_denied`; they check no
    permission themselves;
  * `scopes` (config, a list; default cloud-platform) are the scopes of the
    VM's service account, as the metadata server says them
    (instance/service-accounts/default/scopes) and as its tokens carry
    them: without `compute` or `cloud-platform` every Compute Engine call
    is refused 403 ACCESS_TOKEN_SCOPE_INSUFFICIENT, except reads and
    testIamPermissions with `compute.readonly` (the API reference's
    authorization scopes of each method);
  * `date_offset` (config, seconds): every answer's Date header is that far
    off, as seen from a machine whose clock is.

Usage: fake_gce.py [--instance NAME --zone ZONE --project ID]   prints its
port on the first line of stdout; binds 127.0.0.1 only. The optional
instance is the one the metadata server describes (and is created).

Control (JSON bodies):
  POST /__fake__/instances {"project", "zone", "name"}   create an instance
  POST /__fake__/disks {"project", "zone", "name", "sizeGb", "labels", "users",
       "kmsKeyName", "provisionedIops", "provisionedThroughput"}
       a disk made by hand (attached to `users`)

  POST /__fake__/backing {"project", "zone", "name", "path"}
       the disk's content is the file `path` (a loop device's image): a
       snapshot copies it (beside it, `snapshot-NAME.img`), a disk made from
       the snapshot (disks.insert with `sourceSnapshot`) gets a copy of that
       (`DISK.img` in the same directory), so a test can check the bytes
  POST /__fake__/regional-disks {"project", "region", "name", "sizeGb"}
       a regional disk
  POST /__fake__/reset-calls   forget the call counts and the permissions
       the calls checked
  POST /__fake__/snapshots {"project", "name", "labels", "diskSizeGb",
       "sourceDisk", "status"}   a snapshot made by someone else (READY
       unless "status" says otherwise)

A disk's customer-managed key is stored and said as Compute Engine says
it: the key version used (`.../cryptoKeys/K/cryptoKeyVersions/1`).
disks.resize refuses a size not larger than the disk's, as Compute Engine
does.
  POST /__fake__/config {"op_delay": s, "hang": bool, "wait_max": s,
       "snapshot_status": "FAILED" (new snapshots end so; default READY),
       "snapshot_ready_after": s (new snapshots are UPLOADING for s seconds
       after their operation is done, then READY),
       "fail": {"attachDisk": {"code": "...", "message": "..."}},
       "http_fail": {"disks.insert": {"status": 503, "times": 1, "lost": false}}}
       "lost": the call is done, and then its answer is an error (a
       response lost on the way back)
  GET  /__fake__/state   {"disks": {...}, "instances": {...}, "snapshots": {...},
       "calls": {...}, "permissions": [...]}
"""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse

import loopback

BASE = "https://www.googleapis.com/compute/v1"
LOCK = threading.Condition()
STATE = {
    "disks": {},  # (project, zone, name) -> dict
    "instances": {},  # (project, zone, name) -> dict
    "snapshots": {},  # (project, name) -> dict
    "ops": {},  # name -> dict
    "pending": set(),  # names of operations not done yet
    "requests": {},  # requestId -> operation name
    "calls": {},
    "permissions": set(),  # the IAM permissions the calls checked
    "regional": {},  # (project, region, name) -> dict
    "snapshot_times": {},  # (project, zone, disk) -> (snapshots left, when)
    "config": {
        "op_delay": 0.0,
        "hang": False,
        "wait_max": 2.0,
        "fail": {},
        "http_fail": {},
        "snapshot_status": "READY",
        "snapshot_ready_after": 0.0,
        "page_size": 500,
        "max_filter": 4096,
        "snapshot_burst": 6,
        "snapshot_interval": 600.0,
        "allowed_locations": None,
        "iam_denied": [],
        "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
        "date_offset": 0,
    },
    "counter": 0,
}
ME = {}


def link(project, zone, kind=None, name=None):
    url = f"{BASE}/projects/{project}/zones/{zone}" if zone else f"{BASE}/projects/{project}/global"
    if kind:
        url += f"/{kind}/{name}"
    return url


def not_found(what):
    return 404, {
        "error": {
            "code": 404,
            "message": f"The resource '{what}' was not found",
            "errors": [{"message": f"The resource '{what}' was not found", "domain": "global", "reason": "notFound"}],
        }
    }


def error(status, message, reason="badRequest"):
    return status, {"error": {"code": status, "message": message, "errors": [{"message": message, "domain": "global", "reason": reason}]}}


# The IAM permissions each method checks (Compute Engine's IAM permissions
# reference): recorded per call in `permissions`, so a test can hold the
# documented minimum (docs/gce.md) to what the tools use.
PERMISSIONS = {
    "disks.get": ["compute.disks.get"],
    "disks.list": ["compute.disks.list"],
    "disks.aggregatedList": ["compute.disks.list"],
    "disks.insert": ["compute.disks.create"],
    "disks.delete": ["compute.disks.delete"],
    "disks.setLabels": ["compute.disks.setLabels"],
    "disks.resize": ["compute.disks.resize"],
    "disks.createSnapshot": ["compute.disks.createSnapshot", "compute.snapshots.create"],
    "snapshots.list": ["compute.snapshots.list"],
    "snapshots.get": ["compute.snapshots.get"],
    "snapshots.delete": ["compute.snapshots.delete"],
    "globalOperations.get": ["compute.globalOperations.get"],
    "zoneOperations.get": ["compute.zoneOperations.get"],
    "zoneOperations.wait": ["compute.zoneOperations.get"],
    "instances.get": ["compute.instances.get"],
    "instances.attachDisk": ["compute.instances.attachDisk", "compute.disks.use"],
    "instances.detachDisk": ["compute.instances.detachDisk"],
}


def permissions_of(method_name, body):
    """What the call checks: the method's permissions, and labels set on
    create (`.setLabels` of the resource) and a snapshot a disk is made
    from (`snapshots.useReadOnly`)."""
    out = list(PERMISSIONS.get(method_name, []))
    if method_name == "disks.insert" and body.get("labels"):
        out.append("compute.disks.setLabels")
    if method_name == "disks.insert" and body.get("sourceSnapshot"):
        out.append("compute.snapshots.useReadOnly")
    if method_name == "disks.createSnapshot" and body.get("labels"):
        out.append("compute.snapshots.setLabels")
    return out


# Machine families that take only Hyperdisk, and ones that take none
# (Compute Engine's disk-type support per machine series).
HYPERDISK_ONLY = {"c4", "c4a", "c4d", "n4", "n4a", "n4d", "x4", "m4", "a4", "h4d"}
NO_HYPERDISK = {"e2", "n1", "f1", "g1"}


def family(machine_type):
    return machine_type.rsplit("/", 1)[-1].split("-", 1)[0]


def unsupported(machine_type, disk_type):
    fam = family(machine_type)
    if fam in HYPERDISK_ONLY and disk_type.startswith("pd-"):
        return True
    return fam in NO_HYPERDISK and disk_type.startswith("hyperdisk-")


def answer_403(kind, message=None):
    """A 403 as Compute Engine gives it."""
    if kind == "rate-limit":
        m = message or "Rate Limit Exceeded"
        return 403, {"error": {"code": 403, "message": m, "errors": [{"message": m, "domain": "usageLimits", "reason": "rateLimitExceeded"}]}}
    if kind == "scope":
        m = "Request had insufficient authentication scopes."
        return 403, {
            "error": {
                "code": 403,
                "message": m,
                "errors": [{"message": "Insufficient Permission", "domain": "global", "reason": "insufficientPermissions"}],
                "status": "PERMISSION_DENIED",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "domain": "googleapis.com", "metadata": {"service": "compute.googleapis.com"}}],
            }
        }
    if kind == "api-disabled":
        m = "Compute Engine API has not been used in project proj before or it is disabled."
        return 403, {"error": {"code": 403, "message": m, "errors": [{"message": m, "domain": "usageLimits", "reason": "accessNotConfigured"}]}}
    m = message or "Required 'compute.disks.get' permission for 'projects/proj/zones/z/disks/d'"
    return 403, {"error": {"code": 403, "message": m, "errors": [{"message": m, "domain": "global", "reason": "forbidden"}]}}


NAME_TERM = re.compile(r'\(\s*name\s*=\s*"([^"]*)"\s*\)')


def name_filter(text):
    """`(name = "A") OR (name = "B")`: the names; None when the filter holds
    anything else; [] for no filter."""
    names = NAME_TERM.findall(text)
    rest = NAME_TERM.sub("", text).replace("OR", "").strip()
    return None if rest else names


def page(query, items, key):
    """One page of `items` (sorted): at most maxResults (cap 500) and the
    configured page size, from pageToken on."""
    want = int((query.get("maxResults") or ["500"])[0])
    if want < 0 or want > 500:
        return error(400, f"Invalid value for field 'maxResults': '{want}'. Must be less than or equal to 500", "invalid")
    size = min(want or 500, STATE["config"]["page_size"])
    start = int((query.get("pageToken") or ["0"])[0] or 0)
    out = {key: items[start : start + size]}
    if start + size < len(items):
        out["nextPageToken"] = str(start + size)
    return 200, out


def too_long(query):
    text = (query.get("filter") or [""])[0]
    if len(text) > STATE["config"]["max_filter"]:
        return error(400, f"Invalid value for field 'filter': the filter is {len(text)} characters long", "invalid")
    return None


def region_of(zone):
    return zone.rsplit("-", 1)[0]


def multi_region(zone):
    return {"europe": "eu", "asia": "asia", "australia": "asia", "me": "asia"}.get(zone.split("-", 1)[0], "us")


def new_op(project, zone, kind, target, effect):
    """Starts an operation; `effect` runs when it completes and returns an
    error dict or None."""
    STATE["counter"] += 1
    name = f"operation-{STATE['counter']:06d}-{kind}"
    cfg = STATE["config"]
    op = {
        "project": project,
        "zone": zone,
        "kind": kind,
        "target": target,
        "effect": effect,
        "done_at": None if cfg["hang"] else time.time() + cfg["op_delay"],
        "status": "RUNNING",
        "error": None,
        "fail": cfg["fail"].get(kind),
    }
    STATE["ops"][name] = op
    STATE["pending"].add(name)
    settle(name)
    return op_json(name)


def settle(name):
    op = STATE["ops"][name]
    if op["status"] == "DONE" or op["done_at"] is None or time.time() < op["done_at"]:
        return
    if op["fail"]:
        op["error"] = {"errors": [{"code": op["fail"].get("code", "INTERNAL_ERROR"), "message": op["fail"].get("message", "injected")}]}
    else:
        op["error"] = op["effect"]()
    op["status"] = "DONE"
    STATE["pending"].discard(name)
    LOCK.notify_all()


def op_json(name):
    op = STATE["ops"][name]
    out = {
        "kind": "compute#operation",
        "id": str(abs(hash(name)) % 10**18),
        "name": name,
        "operationType": op["kind"],
        "targetLink": op["target"],
        "status": op["status"],
        "progress": 100 if op["status"] == "DONE" else 0,
        "selfLink": link(op["project"], op["zone"], "operations", name),
    }
    if op["zone"]:
        out["zone"] = link(op["project"], op["zone"])
    if op["error"]:
        out["error"] = op["error"]
        out["httpErrorStatusCode"] = 400
        out["httpErrorMessage"] = "BAD REQUEST"
    return out


def disk_json(key):
    project, zone, name = key
    d = STATE["disks"][key]
    out = {
        "kind": "compute#disk",
        "id": d["id"],
        "name": name,
        "labels": dict(d.get("labels", {})),
        "labelFingerprint": fingerprint(d.get("labels", {})),
        "sizeGb": str(d["sizeGb"]),
        "zone": link(project, zone),
        "status": "READY",
        "creationTimestamp": d.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())),
        "type": link(project, zone, "diskTypes", d["type"]),
        "users": [link(project, zone, "instances", u) for u in d["users"]],
        "selfLink": link(project, zone, "disks", name),
    }
    if d.get("lastAttach"):
        out["lastAttachTimestamp"] = d["lastAttach"]
    if d.get("kmsKeyName"):
        out["diskEncryptionKey"] = {"kmsKeyName": d["kmsKeyName"] + "/cryptoKeyVersions/1"}
    for k in ("provisionedIops", "provisionedThroughput"):
        if d.get(k) is not None:
            out[k] = str(d[k])
    if d.get("sourceSnapshot"):
        out["sourceSnapshot"] = link(project, None, "snapshots", d["sourceSnapshot"])
    return out


def regional_json(key):
    project, region, name = key
    d = STATE["regional"][key]
    return {
        "kind": "compute#disk",
        "id": d["id"],
        "name": name,
        "sizeGb": str(d["sizeGb"]),
        "region": f"{BASE}/projects/{project}/regions/{region}",
        "replicaZones": [f"{BASE}/projects/{project}/zones/{region}-a", f"{BASE}/projects/{project}/zones/{region}-b"],
        "status": "READY",
        "type": f"{BASE}/projects/{project}/regions/{region}/diskTypes/pd-balanced",
        "selfLink": f"{BASE}/projects/{project}/regions/{region}/disks/{name}",
    }


def snapshot_json(key):
    project, name = key
    s = STATE["snapshots"][key]
    if s.get("ready_at") and time.time() >= s["ready_at"]:
        s["status"], s["ready_at"] = "READY", None
    elif s.get("ready_at"):
        s["status"] = "UPLOADING"
    return {
        "kind": "compute#snapshot",
        "id": s["id"],
        "name": name,
        "labels": dict(s.get("labels", {})),
        "labelFingerprint": fingerprint(s.get("labels", {})),
        "diskSizeGb": str(s["diskSizeGb"]),
        "sourceDisk": s.get("sourceDisk", ""),
        "status": s["status"],
        "creationTimestamp": s["created"],
        "storageBytes": "0",
        "storageLocations": s.get("storageLocations", ["us"]),
        "selfLink": link(project, None, "snapshots", name),
    }


FILTER_TERM = re.compile(r'\(\s*labels\.([a-z0-9_-]+)\s*=\s*"([^"]*)"\s*\)')


def label_filter(text):
    """The real API's `(labels.KEY = "VALUE")` terms, ANDed (by juxtaposition
    or AND); None when the filter holds anything else."""
    terms = FILTER_TERM.findall(text)
    rest = FILTER_TERM.sub("", text).replace("AND", "").strip()
    return None if rest else terms


def copy_content(src, dst):
    """A copy of a disk's image, holes kept (images are sparse)."""
    if src and os.path.exists(src):
        subprocess.run(["cp", "--sparse=always", "--reflink=auto", src, dst], check=True)
        return dst
    return None


def fingerprint(labels):
    # URL-safe base64: google-cloud-compute-v1 reads bytes fields so.
    raw = json.dumps(sorted(labels.items())).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:8]).decode()


def instance_json(key):
    project, zone, name = key
    inst = STATE["instances"][key]
    return {
        "kind": "compute#instance",
        "id": inst["id"],
        "name": name,
        "zone": link(project, zone),
        "status": "RUNNING",
        "machineType": link(project, zone, "machineTypes", inst["machineType"]),
        "disks": [dict(d) for d in inst["disks"]],
        "selfLink": link(project, zone, "instances", name),
    }


def add_instance(project, zone, name, machine_type="n2-standard-2"):
    STATE["counter"] += 1
    STATE["instances"][(project, zone, name)] = {
        "id": str(1000 + STATE["counter"]),
        "machineType": machine_type,
        "disks": [
            {
                "kind": "compute#attachedDisk",
                "type": "PERSISTENT",
                "mode": "READ_WRITE",
                "source": link(project, zone, "disks", name + "-boot"),
                "deviceName": "persistent-disk-0",
                "index": 0,
                "boot": True,
                "autoDelete": True,
            }
        ],
    }


ROUTE = re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/(disks|instances|operations)(?:/([^/]+))?(?:/([A-Za-z]+))?$")
AGGREGATED_ROUTE = re.compile(r"^/compute/v1/projects/([^/]+)/aggregated/disks$")
GLOBAL_ROUTE = re.compile(r"^/compute/v1/projects/([^/]+)/global/(snapshots|operations)(?:/([^/]+))?$")


WRITE_SCOPES = ("https://www.googleapis.com/auth/compute", "https://www.googleapis.com/auth/cloud-platform")
READ_SCOPE = "https://www.googleapis.com/auth/compute.readonly"
CRM_ROUTE = re.compile(r"^/v1/projects/([^/:]+):testIamPermissions$")


def scope_refuses(method_name, http_method):
    """Whether the VM's scopes refuse this call: every call needs compute or
    cloud-platform, reads and testIamPermissions compute.readonly at
    least."""
    scopes = STATE["config"]["scopes"]
    if any(s in WRITE_SCOPES for s in scopes):
        return False
    readonly = http_method == "GET" or method_name.endswith("testIamPermissions")
    return not (readonly and READ_SCOPE in scopes)


def iam_refusal(method_name, project, zone, name, body):
    """The 403 for a call that checks a denied permission, or None."""
    for perm in permissions_of(method_name, body):
        if perm in STATE["config"]["iam_denied"]:
            where = f"projects/{project}" + (f"/zones/{zone}" if zone else "/global") + (f"/{method_name.split('.')[0]}/{name or body.get('name', '')}")
            return answer_403("forbidden", f"Required '{perm}' permission for '{where}'")
    return None


class Handler(loopback.Handler):
    def date_time_string(self, timestamp=None):
        # The Date header, shifted by date_offset (a clock that is off).
        return super().date_time_string((timestamp or time.time()) + STATE["config"]["date_offset"])

    def send(self, status, body):
        self.reply(status, json.dumps(body), "application/json; charset=UTF-8")

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw) if raw.strip() else {}

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def handle_any(self, method):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        path = url.path
        if path.startswith("/computeMetadata/"):
            return self.metadata(path)
        if path.startswith("/__fake__/"):
            return self.control(method, path)
        crm = CRM_ROUTE.match(path)
        if crm:
            if not (self.headers.get("Authorization") or "").startswith("Bearer "):
                return self.send(*error(401, "Request is missing required authentication credential.", "required"))
            asked = self.body().get("permissions", [])
            # Resource Manager's own scopes (its API reference): a token
            # with only compute scopes is refused.
            if not any(s.endswith(("/cloud-platform", "/cloud-platform.read-only")) for s in STATE["config"]["scopes"]):
                return self.send(*answer_403("scope"))
            with LOCK:
                STATE["calls"]["projects.testIamPermissions"] = STATE["calls"].get("projects.testIamPermissions", 0) + 1
                granted = [p for p in asked if p not in STATE["config"]["iam_denied"]]
            return self.send(200, {"permissions": granted} if granted else {})
        m = ROUTE.match(path)
        g = GLOBAL_ROUTE.match(path)
        a = AGGREGATED_ROUTE.match(path)
        if a:
            project, zone, kind, name, verb = a.group(1), None, "aggregated-disks", None, None
        elif m:
            project, zone, kind, name, verb = m.groups()
        elif g:
            (project, kind, name), zone, verb = g.groups(), None, None
            kind = "global-" + kind
        else:
            return self.send(*error(404, f"no such path {path}", "notFound"))
        if not (self.headers.get("Authorization") or "").startswith("Bearer "):
            return self.send(*error(401, "Request is missing required authentication credential.", "required"))
        body = self.body() if method == "POST" else {}
        method_name = {
            ("POST", "disks", None): "disks.insert",
            ("GET", "disks", None): "disks.get",
            ("DELETE", "disks", None): "disks.delete",
            ("POST", "disks", "setLabels"): "disks.setLabels",
            ("POST", "disks", "resize"): "disks.resize",
            ("POST", "disks", "createSnapshot"): "disks.createSnapshot",
            ("DELETE", "disks", None): "disks.delete",
            ("GET", "aggregated-disks", None): "disks.aggregatedList",
            ("GET", "global-snapshots", None): "snapshots.get",
            ("DELETE", "global-snapshots", None): "snapshots.delete",
            ("GET", "global-operations", None): "globalOperations.get",
            ("GET", "instances", None): "instances.get",
            ("POST", "instances", "attachDisk"): "instances.attachDisk",
            ("POST", "instances", "detachDisk"): "instances.detachDisk",
            ("POST", "disks", "testIamPermissions"): "disks.testIamPermissions",
            ("POST", "instances", "testIamPermissions"): "instances.testIamPermissions",
            ("POST", "operations", "wait"): "zoneOperations.wait",
            ("GET", "operations", None): "zoneOperations.get",
        }.get((method, kind, verb))
        if method_name == "disks.get" and name is None:
            method_name = "disks.list"
        if method_name == "snapshots.get" and name is None:
            method_name = "snapshots.list"
        if method_name is None:
            return self.send(*error(400, f"unsupported {method} {path}"))
        with LOCK:
            STATE["calls"][method_name] = STATE["calls"].get(method_name, 0) + 1
            STATE["permissions"].update(permissions_of(method_name, body))
            if scope_refuses(method_name, method):
                return self.send(*answer_403("scope"))
            refusal = iam_refusal(method_name, project, zone, name, body)
            if refusal:
                return self.send(*refusal)
            rules = STATE["config"]["http_fail"]
            rule = rules.get(method_name) or rules.get("*")
            lost = False
            if rule and rule.get("times", -1) != 0:
                if rule.get("times", -1) > 0:
                    rule["times"] -= 1
                if rule.get("answer"):
                    return self.send(*answer_403(rule["answer"], rule.get("message")))
                if not rule.get("lost"):
                    status = rule.get("status", 503)
                    return self.send(*error(status, "injected failure", "rateLimitExceeded" if status == 429 else "backendError"))
                lost = rule.get("status", 503)
        if method_name == "zoneOperations.wait":
            return self.wait(name)
        with LOCK:
            # Operations finish on their own, polled or not.
            for pending in list(STATE["pending"]):
                settle(pending)
            request_id = (query.get("requestId") or [None])[0]
            if request_id and request_id in STATE["requests"]:
                answer = (200, op_json(STATE["requests"][request_id]))
            else:
                answer = self.api(method_name, project, zone, name, body, query)
                if request_id and answer[0] == 200 and answer[1].get("kind") == "compute#operation":
                    STATE["requests"][request_id] = answer[1]["name"]
            if lost:
                return self.send(*error(lost, "injected failure after the call was done", "backendError"))
            return self.send(*answer)

    def api(self, method_name, project, zone, name, body, query):
        if method_name == "disks.insert":
            dname = body.get("name", "")
            key = (project, zone, dname)
            if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", dname):
                return error(400, f"Invalid value for field 'resource.name': '{dname}'.", "invalid")
            if key in STATE["disks"]:
                return error(409, f"The resource 'projects/{project}/zones/{zone}/disks/{dname}' already exists", "alreadyExists")
            size = int(body.get("sizeGb", 10))
            dtype = (body.get("type") or "pd-standard").rsplit("/", 1)[-1]

            labels = dict(body.get("labels") or {})
            kms = (body.get("diskEncryptionKey") or {}).get("kmsKeyName")
            iops, tput = body.get("provisionedIops"), body.get("provisionedThroughput")
            source = (body.get("sourceSnapshot") or "").rsplit("/", 1)[-1] or None
            if source:
                snap = STATE["snapshots"].get((project, source))
                if snap is None:
                    return not_found(f"projects/{project}/global/snapshots/{source}")
                if "sizeGb" not in body:
                    size = snap["diskSizeGb"]
                if size < snap["diskSizeGb"]:
                    return error(400, f"Requested disk size cannot be smaller than the snapshot size ({snap['diskSizeGb']} GB)", "invalid")

            def effect():
                STATE["counter"] += 1
                backing = None
                if source:
                    snap = STATE["snapshots"].get((project, source))
                    if snap is None:
                        return {"errors": [{"code": "RESOURCE_NOT_FOUND", "message": f"The resource 'projects/{project}/global/snapshots/{source}' was not found"}]}
                    if snap.get("backing"):
                        backing = copy_content(snap["backing"], os.path.join(os.path.dirname(snap["backing"]), f"{dname}.img"))
                STATE["disks"][key] = {
                    "sourceSnapshot": source,
                    "backing": backing,
                    "id": str(5000 + STATE["counter"]),
                    "sizeGb": size,
                    "type": dtype,
                    "users": [],
                    "labels": labels,
                    "kmsKeyName": kms,
                    "provisionedIops": int(iops) if iops is not None else None,
                    "provisionedThroughput": int(tput) if tput is not None else None,
                }

            return 200, new_op(project, zone, "insert", link(project, zone, "disks", dname), effect)
        if method_name == "disks.list":
            refused = too_long(query)
            if refused:
                return refused
            text = (query.get("filter") or [""])[0]
            names, terms = name_filter(text), label_filter(text)
            if names is None and terms is None:
                return error(400, f"Invalid list filter expression '{query.get('filter')}'.", "invalid")
            keys = sorted(
                k
                for k in STATE["disks"]
                if k[0] == project and k[1] == zone and (not names or k[2] in names) and all(STATE["disks"][k]["labels"].get(lk) == lv for lk, lv in terms or [])
            )
            status, out = page(query, [disk_json(k) for k in keys], "items")
            return status, {"kind": "compute#diskList", **out}
        if method_name == "disks.aggregatedList":
            refused = too_long(query)
            if refused:
                return refused
            names = name_filter((query.get("filter") or [""])[0])
            if names is None:
                return error(400, f"Invalid list filter expression '{query.get('filter')}'.", "invalid")
            found = [(f"zones/{k[1]}", disk_json(k)) for k in sorted(STATE["disks"]) if k[0] == project and (not names or k[2] in names)]
            found += [(f"regions/{k[1]}", regional_json(k)) for k in sorted(STATE["regional"]) if k[0] == project and (not names or k[2] in names)]
            status, out = page(query, found, "items")
            if status != 200:
                return status, out
            scoped = {}
            for scope, d in out["items"]:
                scoped.setdefault(scope, {"disks": []})["disks"].append(d)
            return 200, {"kind": "compute#diskAggregatedList", **out, "items": scoped}
        if method_name == "disks.delete":
            key = (project, zone, name)
            if key not in STATE["disks"]:
                return not_found(f"projects/{project}/zones/{zone}/disks/{name}")
            if STATE["disks"][key]["users"]:
                return error(400, f"The disk resource 'projects/{project}/zones/{zone}/disks/{name}' is already being used by '{STATE['disks'][key]['users'][0]}'", "resourceInUseByAnotherResource")

            def effect():
                STATE["disks"].pop(key, None)
                return None

            return 200, new_op(project, zone, "delete", link(project, zone, "disks", name), effect)
        if method_name == "disks.get":
            key = (project, zone, name)
            if key not in STATE["disks"]:
                return not_found(f"projects/{project}/zones/{zone}/disks/{name}")
            return 200, disk_json(key)
        if method_name == "disks.delete":
            key = (project, zone, name)
            if key not in STATE["disks"]:
                return not_found(f"projects/{project}/zones/{zone}/disks/{name}")

            def effect():
                # Compute Engine refuses to delete a disk still attached
                # (resourceInUseByAnotherResource).
                disk = STATE["disks"].get(key)
                if disk is None:
                    return None
                if disk["users"]:
                    return {"errors": [{"code": "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE", "message": f"The disk resource '{name}' is already being used by '{disk['users'][0]}'"}]}
                del STATE["disks"][key]
                if disk.get("backing") and os.path.exists(disk["backing"]):
                    os.remove(disk["backing"])
                return None

            return 200, new_op(project, zone, "delete", link(project, zone, "disks", name), effect)
        if method_name == "disks.setLabels":
            key = (project, zone, name)
            if key not in STATE["disks"]:
                return not_found(f"projects/{project}/zones/{zone}/disks/{name}")
            if body.get("labelFingerprint") != fingerprint(STATE["disks"][key].get("labels", {})):
                return error(412, "Labels fingerprint either invalid or resource labels have changed", "conditionNotMet")
            labels = dict(body.get("labels") or {})

            def effect():
                STATE["disks"][key]["labels"] = labels

            return 200, new_op(project, zone, "setLabels", link(project, zone, "disks", name), effect)
        if method_name == "disks.resize":
            key = (project, zone, name)
            if key not in STATE["disks"]:
                return not_found(f"projects/{project}/zones/{zone}/disks/{name}")
            size = int(body.get("sizeGb", 0))
            if size <= STATE["disks"][key]["sizeGb"]:
                return error(400, f"Invalid value for field 'sizeGb': '{size}'. Requested disk size cannot be smaller than the current size", "invalid")

            def effect():
                STATE["disks"][key]["sizeGb"] = size

            return 200, new_op(project, zone, "resize", link(project, zone, "disks", name), effect)
        if method_name == "disks.createSnapshot":
            key = (project, zone, name)
            if key not in STATE["disks"]:
                return not_found(f"projects/{project}/zones/{zone}/disks/{name}")
            sname = body.get("name", "")
            if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", sname):
                return error(400, f"Invalid value for field 'resource.name': '{sname}'.", "invalid")
            if (project, sname) in STATE["snapshots"]:
                return error(409, f"The resource 'projects/{project}/global/snapshots/{sname}' already exists", "alreadyExists")
            labels = dict(body.get("labels") or {})
            locations = list(body.get("storageLocations") or [multi_region(zone)])
            allowed = STATE["config"]["allowed_locations"]
            if allowed is not None and any(l not in allowed for l in locations):
                return error(412, f"Location {locations[0].upper()} violates constraint constraints/gcp.resourceLocations on the resource projects/{project}/global/snapshots/{sname}.", "conditionNotMet")

            def effect():
                disk = STATE["disks"].get(key)
                if disk is None:
                    return {"errors": [{"code": "RESOURCE_NOT_FOUND", "message": f"disk {name} was not found"}]}
                # A bucket of `snapshot_burst` snapshots, refilled by one
                # every `snapshot_interval` seconds.
                cfg, now = STATE["config"], time.time()
                tokens, last = STATE["snapshot_times"].get(key, (cfg["snapshot_burst"], now))
                tokens = min(cfg["snapshot_burst"], tokens + (now - last) / cfg["snapshot_interval"])
                if tokens < 1:
                    STATE["snapshot_times"][key] = (tokens, now)
                    return {"errors": [{"code": "RESOURCE_OPERATION_RATE_EXCEEDED", "message": f"Operation rate exceeded for resource 'projects/{project}/zones/{zone}/disks/{name}'. Too frequent operations from the source resource."}]}
                STATE["snapshot_times"][key] = (tokens - 1, now)
                STATE["counter"] += 1
                backing = disk.get("backing")
                STATE["snapshots"][(project, sname)] = {
                    "id": str(9000 + STATE["counter"]),
                    "labels": labels,
                    "diskSizeGb": disk["sizeGb"],
                    "sourceDisk": link(project, zone, "disks", name),
                    "status": STATE["config"]["snapshot_status"],
                    "ready_at": time.time() + STATE["config"]["snapshot_ready_after"] if STATE["config"]["snapshot_ready_after"] and STATE["config"]["snapshot_status"] == "READY" else None,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime()),
                    "storageLocations": locations,
                    "backing": copy_content(backing, os.path.join(os.path.dirname(backing), f"snapshot-{sname}.img")) if backing else None,
                }
                return None

            return 200, new_op(project, zone, "createSnapshot", link(project, zone, "disks", name), effect)
        if method_name == "snapshots.list":
            terms = label_filter((query.get("filter") or [""])[0])
            if terms is None:
                return error(400, f"Invalid list filter expression '{query.get('filter')}'.", "invalid")
            refused = too_long(query)
            if refused:
                return refused
            keys = [k for k in STATE["snapshots"] if k[0] == project and all(STATE["snapshots"][k]["labels"].get(lk) == lv for lk, lv in terms)]
            status, out = page(query, [snapshot_json(k) for k in sorted(keys)], "items")
            return status, {"kind": "compute#snapshotList", **out}
        if method_name == "snapshots.get":
            if (project, name) not in STATE["snapshots"]:
                return not_found(f"projects/{project}/global/snapshots/{name}")
            return 200, snapshot_json((project, name))
        if method_name == "snapshots.delete":
            skey = (project, name)
            if skey not in STATE["snapshots"]:
                return not_found(f"projects/{project}/global/snapshots/{name}")

            def effect():
                snap = STATE["snapshots"].pop(skey, None)
                if snap and snap.get("backing") and os.path.exists(snap["backing"]):
                    os.remove(snap["backing"])
                return None

            return 200, new_op(project, None, "delete", link(project, None, "snapshots", name), effect)
        if method_name == "globalOperations.get":
            if name not in STATE["ops"] or STATE["ops"][name]["zone"] is not None:
                return not_found(f"projects/{project}/global/operations/{name}")
            settle(name)
            return 200, op_json(name)
        ikey = (project, zone, name)
        if method_name.startswith("instances.") and ikey not in STATE["instances"]:
            return not_found(f"projects/{project}/zones/{zone}/instances/{name}")
        if method_name == "instances.get":
            return 200, instance_json(ikey)
        if method_name == "instances.attachDisk":
            source = body.get("source", "")
            dname = source.rsplit("/", 1)[-1]
            dkey = (project, zone, dname)
            device = body.get("deviceName") or dname

            def effect():
                disk = STATE["disks"].get(dkey)
                if disk is None:
                    return {"errors": [{"code": "RESOURCE_NOT_FOUND", "message": f"The resource '{source}' was not found"}]}
                mtype = STATE["instances"][ikey]["machineType"]
                if unsupported(mtype, disk["type"]):
                    return {"errors": [{"code": "UNSUPPORTED_OPERATION", "message": f"[{disk['type']}] features are not compatible for creating instance."}]}
                if disk["users"] and body.get("mode", "READ_WRITE") == "READ_WRITE":
                    return {"errors": [{"code": "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE", "message": f"The disk resource '{source}' is already being used by '{disk['users'][0]}'"}]}
                disk["users"].append(name)
                # As Compute Engine: RFC 3339 with a numeric offset.
                disk["lastAttach"] = time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())
                STATE["instances"][ikey]["disks"].append(
                    {
                        "kind": "compute#attachedDisk",
                        "type": "PERSISTENT",
                        "mode": body.get("mode", "READ_WRITE"),
                        "source": link(project, zone, "disks", dname),
                        "deviceName": device,
                        "index": len(STATE["instances"][ikey]["disks"]),
                        "boot": False,
                        "autoDelete": bool(body.get("autoDelete", False)),
                    }
                )
                return None

            return 200, new_op(project, zone, "attachDisk", link(project, zone, "instances", name), effect)
        if method_name == "instances.detachDisk":
            device = (query.get("deviceName") or [""])[0]

            def effect():
                inst = STATE["instances"][ikey]
                found = [d for d in inst["disks"] if d["deviceName"] == device]
                if not found:
                    return {"errors": [{"code": "INVALID_USAGE", "message": f"No attached disk found with device name '{device}'"}]}
                inst["disks"] = [d for d in inst["disks"] if d["deviceName"] != device]
                dkey = (project, zone, found[0]["source"].rsplit("/", 1)[-1])
                if dkey in STATE["disks"]:
                    STATE["disks"][dkey]["users"] = [u for u in STATE["disks"][dkey]["users"] if u != name]
                return None

            return 200, new_op(project, zone, "detachDisk", link(project, zone, "instances", name), effect)
        if method_name in ("disks.testIamPermissions", "instances.testIamPermissions"):
            if method_name.startswith("disks.") and (project, zone, name) not in STATE["disks"]:
                return not_found(f"projects/{project}/zones/{zone}/disks/{name}")
            granted = [p for p in body.get("permissions", []) if p not in STATE["config"]["iam_denied"]]
            return 200, ({"permissions": granted} if granted else {})
        if method_name == "zoneOperations.get":
            if name not in STATE["ops"]:
                return not_found(f"projects/{project}/zones/{zone}/operations/{name}")
            settle(name)
            return 200, op_json(name)
        return error(400, "unsupported")

    def wait(self, name):
        deadline = time.time() + STATE["config"]["wait_max"]
        with LOCK:
            if name not in STATE["ops"]:
                return self.send(*not_found(f"operations/{name}"))
            while True:
                settle(name)
                op = STATE["ops"][name]
                left = deadline - time.time()
                if op["status"] == "DONE" or left <= 0:
                    return self.send(200, op_json(name))
                until = op["done_at"] - time.time() if op["done_at"] else left
                LOCK.wait(max(0.01, min(left, until)))

    def metadata(self, path):
        if self.headers.get("Metadata-Flavor") != "Google":
            return self.send(403, {"error": "Missing Metadata-Flavor header"})
        path = path.rstrip("/")
        text = {
            "/computeMetadata/v1/instance/name": ME.get("instance"),
            "/computeMetadata/v1/instance/zone": f"projects/123456/zones/{ME.get('zone')}" if ME.get("zone") else None,
            "/computeMetadata/v1/project/project-id": ME.get("project"),
            "/computeMetadata/v1/universe/universe-domain": "googleapis.com",
        }.get(path)
        if path.endswith("/service-accounts/default/token"):
            return self.send(200, {"access_token": "fake-token", "expires_in": 3600, "token_type": "Bearer"})
        if path.endswith("/service-accounts/default"):
            return self.send(200, {"email": "fake@example.iam.gserviceaccount.com", "scopes": STATE["config"]["scopes"]})
        if path.endswith("/service-accounts/default/scopes"):
            text = "".join(f"{s}\n" for s in STATE["config"]["scopes"])
        if path.endswith("/service-accounts/default/email"):
            text = "fake@example.iam.gserviceaccount.com"
        if text is None:
            return self.send(404, {"error": "not found"})
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/text")
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def control(self, method, path):
        body = self.body() if method == "POST" else {}
        with LOCK:
            if path == "/__fake__/instances":
                add_instance(body["project"], body["zone"], body["name"], body.get("machineType", "n2-standard-2"))
                return self.send(200, {})
            if path == "/__fake__/regional-disks":
                STATE["counter"] += 1
                STATE["regional"][(body["project"], body["region"], body["name"])] = {"id": str(7000 + STATE["counter"]), "sizeGb": int(body.get("sizeGb", 10))}
                return self.send(200, {})
            if path == "/__fake__/reset-calls":
                STATE["calls"] = {}
                STATE["permissions"] = set()
                return self.send(200, {})
            if path == "/__fake__/disks":
                STATE["counter"] += 1
                key = (body["project"], body["zone"], body["name"])
                users = list(body.get("users", []))
                STATE["disks"][key] = {
                    "id": str(5000 + STATE["counter"]),
                    "sizeGb": int(body.get("sizeGb", 1)),
                    "type": body.get("type", "pd-balanced"),
                    "users": users,
                    "labels": dict(body.get("labels", {})),
                    "kmsKeyName": body.get("kmsKeyName"),
                    "provisionedIops": body.get("provisionedIops"),
                    "provisionedThroughput": body.get("provisionedThroughput"),
                }
                for u in users:
                    inst = STATE["instances"][(body["project"], body["zone"], u)]
                    inst["disks"].append({"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": "READ_WRITE", "source": link(body["project"], body["zone"], "disks", body["name"]), "deviceName": body["name"], "index": len(inst["disks"]), "boot": False, "autoDelete": False})
                return self.send(200, {})
            if path == "/__fake__/backing":
                STATE["disks"][(body["project"], body["zone"], body["name"])]["backing"] = body["path"]
                return self.send(200, {})
            if path == "/__fake__/snapshots":
                STATE["counter"] += 1
                STATE["snapshots"][(body["project"], body["name"])] = {
                    "id": str(9000 + STATE["counter"]),
                    "labels": dict(body.get("labels", {})),
                    "diskSizeGb": int(body.get("diskSizeGb", 1)),
                    "sourceDisk": body.get("sourceDisk", ""),
                    "status": body.get("status", "READY"),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime()),
                    "backing": None,
                }
                return self.send(200, {})
            if path == "/__fake__/config":
                STATE["config"].update(body)
                return self.send(200, {})
            if path == "/__fake__/state":
                for name in list(STATE["ops"]):
                    settle(name)
                return self.send(
                    200,
                    {
                        "disks": {
                            "/".join(k): {
                                "sizeGb": v["sizeGb"],
                                "type": v["type"],
                                "users": v["users"],
                                "labels": v.get("labels", {}),
                                # Said only when set.
                                **{
                                    f: v[f]
                                    for f in ("kmsKeyName", "provisionedIops", "provisionedThroughput", "sourceSnapshot", "backing")
                                    if v.get(f) is not None
                                },
                            }
                            for k, v in STATE["disks"].items()
                        },
                        "instances": {"/".join(k): [d["deviceName"] for d in v["disks"]] for k, v in STATE["instances"].items()},
                        "snapshots": {
                            "/".join(k): {"labels": v["labels"], "diskSizeGb": v["diskSizeGb"], "status": v["status"], "storageLocations": v.get("storageLocations", ["us"]), **({"backing": v["backing"]} if v.get("backing") else {})}
                            for k, v in STATE["snapshots"].items()
                        },
                        "calls": STATE["calls"],
                        "permissions": sorted(STATE["permissions"]),
                    },
                )
        self.send(404, {})


def main():
    args = sys.argv[1:]
    for flag in ("--instance", "--zone", "--project"):
        if flag in args:
            ME[flag[2:]] = args[args.index(flag) + 1]
    if ME.get("instance"):
        add_instance(ME["project"], ME["zone"], ME["instance"])
    loopback.serve(Handler)


if __name__ == "__main__":
    main()
