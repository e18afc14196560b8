"""Test helper: an HTTP proxy in front of the moto server that injects what
moto never does: API errors (a permanent AWS error code, or throttling and
5xx answers that the SDK must retry), attachments stuck in `attaching`, a
detach still in progress, and a volume modification still `modifying` or
`failed` (moto completes each at once); and that keeps deployments apart (moto's
per-account state) and remembers the client tokens it saw.

Usage: ec2_proxy.py UPSTREAM      prints its port on the first line of stdout
Control: POST /__proxy__ with JSON
  {"fail": {"AttachVolume": {"status": 403, "code": "UnauthorizedOperation", "times": -1, "skip": 0}},
   "attaching": true,
   "detaching": {"volume": "vol-...", "instance": "i-...", "polls": 3},
   "account": "222222222222",
   "modification": {"polls": 2, "then": "optimizing", "message": "..."},
   "delay": {"CreateSnapshot": 30},
   "pending_snapshots": 2, "pending_ids": ["snap-..."]}
  "times" is how many requests fail (-1: all), after letting "skip" pass.
  "detaching": the next "polls" DescribeVolumes answers naming the volume
  show its attachment to the instance as `detaching`; then the proxy
  detaches it upstream, as EC2 would have by then.
  "account": moto keeps separate state per account (x-moto-account-id).
  "modification": the next "polls" DescribeVolumesModifications answers show
  every modification `modifying`, the ones after that "then" (with
  "message" as its statusMessage); each answer rewritten is counted in
  "injected".
  "delay": seconds to hold each request of that action before sending it
  on (a slow API call, while a filesystem is frozen for it).
  "pending_snapshots": N: every snapshot in CreateSnapshot answers, and
  in the next N DescribeSnapshots answers (-1: all), shows `pending` (moto
  completes them at once).
  "pending_ids": these snapshots show `pending` in every answer, for good
  (one left by an earlier --wait-timeout that never completes).
  GET /__proxy__ returns {"injected": {"Action": n}} counting the failures
  sent, and {"tokens": [...]}, the ClientToken of every CreateVolume.

IAM, as EC2 applies it (disk-doctor's tests; see `iam_denied` below):
  "deny": ["AttachVolume", ...]   these actions are refused, DryRun or not,
      as EC2 refuses an action the credentials' policy does not allow: HTTP
      403 UnauthorizedOperation, "You are not authorized to perform this
      operation." with an encoded authorization message (EC2 API Reference,
      Common client error codes); "allow": [...] the same for every action
      NOT listed (a policy applied whole; null: no policy). Tags given as a
      resource is made (TagSpecification on CreateVolume, CreateSnapshot)
      are authorised as ec2:CreateTags too (EC2 User Guide, "Grant
      permission to tag Amazon EC2 resources during creation"): such a call
      is refused when CreateTags is. IAM is evaluated before DryRun: an
      allowed DryRun goes on to moto, which answers DryRunOperation for the
      seven actions disk-doctor sends with DryRun (CreateVolume, CreateTags,
      AttachVolume, DetachVolume, CreateSnapshot, DeleteSnapshot,
      ModifyVolume: moto 5.2's error_on_dryrun; for CreateTags after it
      checked the resources exist, which EC2 need not).
  "date_offset": seconds   every answer's Date header is this far off the
      real time (a skewed clock, seen from the other side).
Binds 127.0.0.1 only.
"""

import json
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import loopback

UPSTREAM = sys.argv[1].rstrip("/")
STATE = {"deny": [], "allow": None, "date_offset": 0, "fail": {}, "delay": {}, "pending_snapshots": 0, "pending_ids": [], "attaching": False, "detaching": None, "account": None, "modification": None, "injected": {}, "tokens": []}
LOCK = threading.Lock()

ERROR = """<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>proxy</RequestID></Response>"""


DENIED = """<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation. User: arn:aws:iam::123456789012:user/test is not authorized to perform: ec2:{action}. Encoded authorization failure message: proxy-{action}</Message></Error></Errors><RequestID>proxy</RequestID></Response>"""

# The actions whose TagSpecification is authorised as ec2:CreateTags too.
TAG_ON_CREATE = ("CreateVolume", "CreateSnapshot", "RunInstances", "CreateSnapshots")


def iam_denied(action, params):
    """The ec2: action the credentials' policy does not allow for this
    request (the action itself, or CreateTags for tags set as a resource is
    made), or None."""
    deny, allow = STATE["deny"], STATE["allow"]

    def refused(a):
        return a in deny or (allow is not None and a not in allow)

    if refused(action):
        return action
    if action in TAG_ON_CREATE and any(k.startswith("TagSpecification") for k in params) and refused("CreateTags"):
        return "CreateTags"
    return None


class Handler(loopback.Handler):
    def date_time_string(self, timestamp=None):
        # The Date header, shifted by date_offset (a clock that is off).
        return super().date_time_string((timestamp or time.time()) + STATE["date_offset"])

    def do_GET(self):
        if self.path.startswith("/__proxy__"):
            with LOCK:
                return self.reply(200, json.dumps({"injected": STATE["injected"], "tokens": STATE["tokens"]}), "application/json")
        self.forward(b"")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/__proxy__"):
            with LOCK:
                STATE.update(json.loads(body or b"{}"))
                STATE["injected"] = {}
            return self.reply(200, "{}", "application/json")
        self.forward(body)

    def upstream(self, body, headers, method):
        req = urllib.request.Request(UPSTREAM + self.path, data=body or None, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, resp.read(), resp.headers.get("Content-Type", "text/xml")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "text/xml")

    def forward(self, body):
        params = urllib.parse.parse_qs(body.decode(errors="replace"))
        action = (params.get("Action") or ["?"])[0]
        with LOCK:
            if action == "CreateVolume":
                STATE["tokens"].append((params.get("ClientToken") or [None])[0])
            denied = iam_denied(action, params) if action != "?" else None
            if denied:
                STATE["injected"][action] = STATE["injected"].get(action, 0) + 1
                return self.reply(403, DENIED.format(action=denied), "text/xml")
            rule = STATE["fail"].get(action)
            if rule and rule.get("skip", 0) > 0:
                rule["skip"] -= 1
            elif rule and rule.get("times", -1) != 0:
                if rule.get("times", -1) > 0:
                    rule["times"] -= 1
                STATE["injected"][action] = STATE["injected"].get(action, 0) + 1
                code = rule.get("code", "InternalError")
                return self.reply(rule.get("status", 500), ERROR.format(code=code, message=f"injected {code}"), "text/xml")
            delay = STATE["delay"].get(action, 0)
            pending_snapshots = STATE["pending_snapshots"]
            if pending_snapshots > 0 and action == "DescribeSnapshots":
                STATE["pending_snapshots"] -= 1
            pending_ids = list(STATE["pending_ids"])
            attaching = STATE["attaching"]
            detaching = STATE["detaching"]
            account = STATE["account"]
            modification = STATE["modification"]
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        if account:
            headers["x-moto-account-id"] = account
        if detaching and action == "DescribeVolumes" and detaching["polls"] <= 0:
            # The detach in progress is over by now: make it so upstream.
            with LOCK:
                STATE["detaching"] = None
            # moto routes by the signature's service (never checked): reuse
            # this EC2 request's headers.
            form = urllib.parse.urlencode({"Action": "DetachVolume", "Version": "2016-11-15", "VolumeId": detaching["volume"], "InstanceId": detaching["instance"]})
            self.upstream(form.encode(), headers, "POST")
            detaching = None
        if delay:
            time.sleep(delay)
        status, data, ctype = self.upstream(body, headers, self.command)
        if pending_snapshots and action in ("CreateSnapshot", "DescribeSnapshots"):
            data = data.replace(b"<status>completed</status>", b"<status>pending</status>")
        if action == "DescribeSnapshots":
            for sid in pending_ids:
                pattern = rb"(<snapshotId>" + re.escape(sid.encode()) + rb"</snapshotId>(?:(?!</snapshotId>).)*?<status>)completed(</status>)"
                data = re.sub(pattern, rb"\1pending\2", data, flags=re.S)
        if attaching and action == "DescribeVolumes":
            data = data.replace(b"<status>attached</status>", b"<status>attaching</status>")
        if modification and action == "DescribeVolumesModifications":
            with LOCK:
                STATE["injected"][action] = STATE["injected"].get(action, 0) + 1
                modification["polls"] -= 1
                state = "modifying" if modification["polls"] >= 0 else modification.get("then", "completed")
            tag = f"<modificationState>{state}</modificationState>"
            if modification.get("message") and state == "failed":
                tag += f"<statusMessage>{modification['message']}</statusMessage>"
            data = re.sub(rb"<modificationState>[a-z]+</modificationState>", tag.encode(), data)
        if detaching and action == "DescribeVolumes" and detaching["volume"].encode() in data:
            with LOCK:
                detaching["polls"] -= 1
            data = data.replace(b"<status>attached</status>", b"<status>detaching</status>")
        self.reply(status, data, ctype)


if __name__ == "__main__":
    loopback.serve(Handler)
