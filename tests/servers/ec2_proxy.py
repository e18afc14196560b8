"""Test helper: an HTTP proxy in front of the moto server that answers as
real EC2 (or Eucalyptus 4.4) does where moto is lenient, and injects what
moto never does.

Usage: ec2_proxy.py UPSTREAM [--euca]    prints its port on the first line of stdout

Always on (EC2's documented behaviour; each rule names its source):
  * Limits (docs.aws.amazon.com/ec2/latest/devguide/ec2-api-pagination.html,
    EC2 error codes): more than 200 values in one filter is
    `FilterLimitExceeded`; more than 1,000 ids in one DescribeVolumes or
    DescribeInstances is `InvalidParameterValue`; MaxResults beside ids is
    `InvalidParameterCombination`. DescribeSnapshots answers at most
    "page_size" snapshots (default 1,000, or MaxResults when smaller) and a
    `nextToken` for the rest; DescribeVolumes pages likewise when MaxResults
    is given.
  * Client tokens (ec2-api-idempotency.html): a CreateVolume's ClientToken is
    remembered for the proxy's life (EC2: hours). The same token with the
    same parameters gets the first answer again, without a second volume,
    even when that volume was deleted since; with other parameters it is
    `IdempotentParameterMismatch`.
  * Regions: a CreateVolume whose zone is not in the region the request is
    signed for is `InvalidParameterValue` (moto makes it anyway).
  * Attach and detach state (API reference): AttachVolume of a volume
    attached already is `VolumeInUse`; DetachVolume of a volume attached
    nowhere is `IncorrectState` (moto: silently moved, `InvalidAttachment.NotFound`).
  * ModifyVolume (API_ModifyVolume): a volume's modification must be
    `completed` before the next, and at most 4 per rolling 24 h:
    `VolumeModificationRateExceeded` otherwise.
With --euca (Eucalyptus 4.4's strict query binding, `ComputeQueryBinding`
with `UnknownParameterStrategy.ERROR`; parameters from `VmBlockDevice.groovy`,
`Tags.groovy`, `VmControl.groovy` on maint-4.4): a request with any parameter
outside its action's set (ClientToken, TagSpecification, KmsKeyId,
Throughput, ...), or an action Eucalyptus lacks (ModifyVolume,
DescribeVolumesModifications, DescribeInstanceTypes), is answered HTTP 400,
`text/plain`, `<Code>400 Bad Request</Code>` "Failed to bind the following
fields" (NioServerHandler.sendError, Binding.createRestFault), and nothing
is done; every volume is described as type `standard` (Volumes.java).

Control: POST /__proxy__ with JSON (merged into the state)
  {"fail": {"AttachVolume": {"status": 403, "code": "UnauthorizedOperation", "times": -1, "skip": 0}},
   "attaching": true,
   "detaching": {"volume": "vol-...", "instance": "i-...", "polls": 3},
   "account": "222222222222",
   "modification": {"polls": 2, "then": "optimizing", "message": "..."},
   "delay": {"CreateSnapshot": 30},
   "pending_snapshots": 2, "pending_ids": ["snap-..."],
   "consistency": {"CreateVolume": 2, "AttachVolume": 2, "ModifyVolume": 2},
   "lose": {"AttachVolume": 1},
   "ami_devices": ["/dev/sdf"], "taken_once": ["/dev/sdg"],
   "snapshot_interval": 15, "in_use_snapshots": ["snap-..."],
   "page_size": 100, "actions": {},
   "hold": {"CreateTags": 60}, "hold_answer": {"CreateVolume": 60}}
  "times" is how many requests fail (-1: all), after letting "skip" pass.
  "detaching": the next "polls" DescribeVolumes answers naming the volume
  show its attachment to the instance as `detaching`; then the proxy
  detaches it upstream, as EC2 would have by then.
  "account": moto keeps separate state per account (x-moto-account-id).
  "modification": the next "polls" DescribeVolumesModifications answers show
  every modification `modifying`, the ones after that "then" (with
  "message" as its statusMessage); each answer rewritten is counted in
  "injected".
  "delay": seconds to hold each request of that action before sending it on.
  "pending_snapshots": N: every snapshot in CreateSnapshot answers, and in
  the next N DescribeSnapshots answers (-1: all), shows `pending`.
  "pending_ids": these snapshots show `pending` in every answer, for good.
  "consistency" (AWS "Eventual consistency in the Amazon EC2 API"): after
  each call of that action, its volume is not yet seen as changed by the
  next N DescribeVolumes (DescribeVolumesModifications) that would show
  it: a new volume is `InvalidVolume.NotFound` when named, absent from a
  filtered answer; a new attachment is absent (the volume `available`); a
  new modification is `InvalidVolumeModification.NotFound`.
  "lose": the next N requests of that action are done upstream, and their
  answer lost (the connection closed): the SDK sends them again.
  "ami_devices": device names the instances' AMI maps (instance store):
  AttachVolume on one is `InvalidParameterValue: Attachment point ... is
  already in use`, and DescribeImages shows them as ephemeral mappings
  (DescribeInstances does not). "taken_once": names a concurrent attach
  takes: the first AttachVolume on each is refused so.
  "snapshot_interval": seconds between two CreateSnapshot of one volume,
  else `SnapshotCreationPerVolumeRateExceeded`.
  "in_use_snapshots": DeleteSnapshot of these is `InvalidSnapshot.InUse`
  (an AMI uses them).
  "hold": requests of that action are held that many seconds, then their
  connection closed: never done (a client killed meanwhile never sent it).
  "hold_answer": requests of that action are done upstream, and their
  answer held that many seconds (a client killed meanwhile never read it).
GET /__proxy__ returns {"injected": {"Action": n}} counting the failures
sent, {"tokens": [...]}, the ClientToken of every CreateVolume, and
{"actions": {"Action": n}}, every request seen (since "actions" was reset),
a request that tags on creation (TagSpecification) counted as CreateTags
too: IAM asks ec2:CreateTags for it.

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
EUCA = "--euca" in sys.argv[2:]
STATE = {
    "deny": [], "allow": None, "date_offset": 0, "fail": {}, "delay": {}, "pending_snapshots": 0, "pending_ids": [], "attaching": False,
    "detaching": None, "account": None, "modification": None, "injected": {}, "tokens": [],
    "consistency": {}, "lose": {}, "ami_devices": [], "taken_once": [], "snapshot_interval": 0,
    "in_use_snapshots": [], "page_size": 1000, "actions": {}, "hold": {}, "hold_answer": {},
}
LOCK = threading.Lock()
# Client tokens seen: token -> (parameters, status, body, content type).
TOKENS = {}
# Volumes not yet seen as changed: volume id -> answers left, per change.
HIDDEN = {"CreateVolume": {}, "AttachVolume": {}, "ModifyVolume": {}}
# Per volume: when its CreateSnapshot calls and its ModifyVolume calls came.
SNAPSHOTS_AT = {}
MODIFIED_AT = {}
LAST_MODIFICATION = {}

ERROR = """<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>proxy</RequestID></Response>"""

# What Eucalyptus 4.4 binds, per action ("X.*": X.1, X.1.Key, ...).
EUCA_BINDS = {
    "CreateVolume": {"Size", "SnapshotId", "AvailabilityZone", "VolumeType", "Iops", "Encrypted"},
    "DeleteVolume": {"VolumeId"},
    "DescribeVolumes": {"VolumeId.*", "Filter.*", "MaxResults", "NextToken"},
    "AttachVolume": {"VolumeId", "InstanceId", "Device"},
    "DetachVolume": {"VolumeId", "InstanceId", "Device", "Force"},
    "CreateSnapshot": {"VolumeId", "Description"},
    "DeleteSnapshot": {"SnapshotId"},
    "DescribeSnapshots": {"SnapshotId.*", "Owner.*", "RestorableBy.*", "Filter.*", "MaxResults", "NextToken"},
    "CreateTags": {"ResourceId.*", "Tag.*"},
    "DeleteTags": {"ResourceId.*", "Tag.*"},
    "DescribeInstances": {"InstanceId.*", "Filter.*", "MaxResults", "NextToken"},
    "DescribeImages": {"ExecutableBy.*", "ImageId.*", "Owner.*", "Filter.*"},
}
# Protocol parameters every query API takes (and SigV2's, in the query).
COMMON = {"Action", "Version", "AWSAccessKeyId", "Signature", "SignatureMethod", "SignatureVersion", "Timestamp", "Expires"}

MAX_FILTER_VALUES = 200
MAX_IDS = 1000
MAX_MODIFICATIONS_PER_DAY = 4


def euca_unbound(action, params):
    """The parameters Eucalyptus 4.4 would fail to bind, or None if all bind."""
    binds = EUCA_BINDS.get(action)
    if binds is None:
        return [f"no such operation: {action}"]
    bad = []
    for name in params:
        if name in COMMON or name.startswith("X-Amz-"):
            continue
        head = name.split(".", 1)[0]
        if name in binds or (head + ".*" in binds and "." in name):
            continue
        bad.append(f"{name} = {params[name][0]}")
    return bad or None


def items(data, set_tag):
    """Splits an answer at its <set_tag>: (before, [top-level <item>...</item>], after)."""
    start = data.find(b"<" + set_tag + b">")
    if start < 0:
        return data, [], b""
    start += len(set_tag) + 2
    end = data.find(b"</" + set_tag + b">", start)
    body, out, depth, begin = data[start:end], [], 0, 0
    for m in re.finditer(rb"<item>|</item>|<item/>", body):
        if m.group() == b"<item>":
            if depth == 0:
                begin = m.start()
            depth += 1
        elif m.group() == b"</item>":
            depth -= 1
            if depth == 0:
                out.append(body[begin:m.end()])
        elif depth == 0:
            out.append(m.group())
    return data[:start], out, data[end:]


def item_id(item, tag):
    m = re.search(rb"<" + tag + rb">([^<]+)</" + tag + rb">", item)
    return m.group(1).decode() if m else None


def values(params, prefix):
    """The values of a list parameter (VolumeId.1, VolumeId.2, ...)."""
    return [v[0] for k, v in params.items() if re.fullmatch(re.escape(prefix) + r"\.\d+", k)]


def signing_region(headers):
    m = re.search(r"Credential=[^/]+/\d+/([^/]+)/", headers.get("Authorization", ""))
    return m.group(1) if m else None


def normalize(device):
    base = device.removeprefix("/dev/")
    if base.startswith("xvd"):
        base = "sd" + base[3:]
    return base.rstrip("0123456789")


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
                out = {k: STATE[k] for k in ("injected", "tokens", "actions")}
                return self.reply(200, json.dumps(out), "application/json")
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

    def call(self, headers, **params):
        """An EC2 call of the proxy's own, upstream (moto routes by the
        signature's service and never checks it: these headers do)."""
        form = urllib.parse.urlencode({"Version": "2016-11-15", **params})
        return self.upstream(form.encode(), headers, "POST")

    def volume(self, headers, vid):
        """(status, [(instance, state)]) of volume `vid` upstream, or None."""
        status, data, _ = self.call(headers, Action="DescribeVolumes", **{"VolumeId.1": vid})
        if status != 200:
            return None
        _, vols, _ = items(data, b"volumeSet")
        if not vols:
            return None
        _, atts, _ = items(vols[0], b"attachmentSet")
        own = re.sub(rb"<attachmentSet>.*?</attachmentSet>", b"", vols[0], flags=re.S)
        state = re.search(rb"<status>([a-z-]+)</status>", own)
        pairs = [(item_id(a, b"instanceId"), item_id(a, b"status")) for a in atts]
        return (state.group(1).decode() if state else "?"), pairs

    def error(self, action, status, code, message):
        with LOCK:
            STATE["injected"][action] = STATE["injected"].get(action, 0) + 1
        self.reply(status, ERROR.format(code=code, message=message), "text/xml")

    def refuse(self, action, params, headers):
        """EC2's (or Eucalyptus's) refusal of this request, as (status,
        code, message), or None when it goes on."""
        for name, vals in params.items():
            m = re.fullmatch(r"Filter\.(\d+)\.Name", name)
            if m and len(values(params, f"Filter.{m.group(1)}.Value")) > MAX_FILTER_VALUES:
                return 400, "FilterLimitExceeded", f"The maximum number of filter values specified on a single call is {MAX_FILTER_VALUES}"
        for ids in ("VolumeId", "InstanceId", "SnapshotId"):
            n = len(values(params, ids))
            if n > MAX_IDS and action.startswith("Describe"):
                return 400, "InvalidParameterValue", f"The maximum number of {ids} values is {MAX_IDS} (got {n})"
            if n and "MaxResults" in params and action in ("DescribeVolumes", "DescribeSnapshots"):
                return 400, "InvalidParameterCombination", f"The parameter {ids} cannot be used with the parameter maxResults"
        if action == "CreateVolume":
            region, zone = signing_region(headers), (params.get("AvailabilityZone") or [""])[0]
            if not EUCA and region and zone and not zone.startswith(region):
                return 400, "InvalidParameterValue", f"Invalid availability zone: [{zone}]"
        if action == "AttachVolume":
            device = normalize((params.get("Device") or [""])[0])
            with LOCK:
                taken = [d for d in STATE["taken_once"] if normalize(d) == device]
                for d in taken:
                    STATE["taken_once"].remove(d)
                ami = any(normalize(d) == device for d in STATE["ami_devices"])
            if taken or ami:
                return 400, "InvalidParameterValue", f"Attachment point {params['Device'][0]} is already in use"
            vol = self.volume(headers, (params.get("VolumeId") or [""])[0])
            if vol and any(s in ("attaching", "attached") for _, s in vol[1]):
                return 400, "VolumeInUse", f"{params['VolumeId'][0]} is already attached to an instance"
        if action == "DetachVolume":
            vol = self.volume(headers, (params.get("VolumeId") or [""])[0])
            if vol and not any(s in ("attaching", "attached") for _, s in vol[1]):
                return 400, "IncorrectState", f"Volume '{params['VolumeId'][0]}' is in the '{vol[0]}' state."
        if action == "CreateSnapshot":
            vid, now = (params.get("VolumeId") or [""])[0], time.time()
            with LOCK:
                last, SNAPSHOTS_AT[vid] = SNAPSHOTS_AT.get(vid), now
                interval = STATE["snapshot_interval"]
            if interval and last is not None and now - last < interval:
                return 400, "SnapshotCreationPerVolumeRateExceeded", "The maximum per volume CreateSnapshot request rate has been exceeded. Use an increasing or variable sleep interval between requests."
        if action == "DeleteSnapshot":
            sid = (params.get("SnapshotId") or [""])[0]
            with LOCK:
                in_use = sid in STATE["in_use_snapshots"]
            if in_use:
                return 400, "InvalidSnapshot.InUse", f"The snapshot {sid} is currently in use by ami-0123456789abcdef0"
        if action == "ModifyVolume":
            vid, now = (params.get("VolumeId") or [""])[0], time.time()
            with LOCK:
                # The previous modification, as DescribeVolumesModifications
                # last showed it (moto completes each at once).
                previous = LAST_MODIFICATION.get(vid, "completed")
                recent = [t for t in MODIFIED_AT.get(vid, []) if now - t < 24 * 3600]
            if previous not in ("completed", "failed") or len(recent) >= MAX_MODIFICATIONS_PER_DAY:
                return 400, "VolumeModificationRateExceeded", f"You've reached the maximum modification rate per volume limit. Wait at least 6 hours between modifications per EBS volume ({vid})."
            with LOCK:
                MODIFIED_AT[vid] = recent + [now]
                LAST_MODIFICATION[vid] = "modifying"
        return None

    def forward(self, body):
        params = urllib.parse.parse_qs(body.decode(errors="replace"), keep_blank_values=True)
        action = (params.get("Action") or ["?"])[0]
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        with LOCK:
            STATE["actions"][action] = STATE["actions"].get(action, 0) + 1
            # Tagging on creation needs the ec2:CreateTags permission too
            # (IAM: "Grant permission to tag resources during creation").
            if any(k.startswith("TagSpecification.") for k in params):
                STATE["actions"]["CreateTags"] = STATE["actions"].get("CreateTags", 0) + 1
            if action == "CreateVolume":
                STATE["tokens"].append((params.get("ClientToken") or [None])[0])
            denied = iam_denied(action, params) if action != "?" else None
            if denied:
                STATE["injected"][action] = STATE["injected"].get(action, 0) + 1
                return self.reply(403, DENIED.format(action=denied), "text/xml")
            account = STATE["account"]
        if account:
            headers["x-moto-account-id"] = account
        if EUCA:
            unbound = euca_unbound(action, params)
            if unbound:
                with LOCK:
                    STATE["injected"][action] = STATE["injected"].get(action, 0) + 1
                text = "Failed to bind the following fields:\n" + "\n".join(unbound) + "\n"
                return self.reply(400, ERROR.format(code="400 Bad Request", message=text), "text/plain; charset=UTF-8")
        with LOCK:
            rule = STATE["fail"].get(action)
            if rule and rule.get("skip", 0) > 0:
                rule["skip"] -= 1
            elif rule and rule.get("times", -1) != 0:
                if rule.get("times", -1) > 0:
                    rule["times"] -= 1
                STATE["injected"][action] = STATE["injected"].get(action, 0) + 1
                code = rule.get("code", "InternalError")
                return self.reply(rule.get("status", 500), ERROR.format(code=code, message=f"injected {code}"), "text/xml")
        token = (params.get("ClientToken") or [None])[0] if action == "CreateVolume" else None
        if token:
            same = {k: v for k, v in params.items() if k != "ClientToken"}
            with LOCK:
                seen = TOKENS.get(token)
            if seen and seen[0] == same:
                return self.reply(seen[1], seen[2], seen[3])
            if seen:
                return self.error(action, 400, "IdempotentParameterMismatch", f"The client token {token} was used with other parameters")
        with LOCK:
            hold = STATE["hold"].get(action, 0)
            hold_answer = STATE["hold_answer"].get(action, 0)
        if hold:
            time.sleep(hold)
            self.close_connection = True
            return
        refused = self.refuse(action, params, headers)
        if refused:
            return self.error(action, *refused)
        hidden = self.hidden(action, params)
        if hidden:
            return self.error(action, *hidden)
        with LOCK:
            delay = STATE["delay"].get(action, 0)
            pending_snapshots = STATE["pending_snapshots"]
            if pending_snapshots > 0 and action == "DescribeSnapshots":
                STATE["pending_snapshots"] -= 1
            pending_ids = list(STATE["pending_ids"])
            attaching = STATE["attaching"]
            detaching = STATE["detaching"]
            modification = STATE["modification"]
            lose = STATE["lose"].get(action, 0) > 0
            if lose:
                STATE["lose"][action] -= 1
                STATE["injected"][action] = STATE["injected"].get(action, 0) + 1
        if detaching and action == "DescribeVolumes" and detaching["polls"] <= 0:
            # The detach in progress is over by now: make it so upstream.
            with LOCK:
                STATE["detaching"] = None
            self.call(headers, Action="DetachVolume", VolumeId=detaching["volume"], InstanceId=detaching["instance"])
            detaching = None
        if delay:
            time.sleep(delay)
        page = self.page(action, params)
        send = body
        if page is not None:
            kept = {k: v for k, v in params.items() if k not in ("MaxResults", "NextToken")}
            send = urllib.parse.urlencode(kept, doseq=True).encode()
        status, data, ctype = self.upstream(send, headers, self.command)
        if token and status == 200:
            with LOCK:
                TOKENS[token] = ({k: v for k, v in params.items() if k != "ClientToken"}, status, data, ctype)
        if lose:
            # Done upstream; the answer never arrives.
            self.close_connection = True
            return
        if hold_answer:
            time.sleep(hold_answer)
        self.remember(action, params, status, data)
        data = self.unseen(action, data)
        if EUCA and action == "DescribeVolumes":
            data = re.sub(rb"<volumeType>[a-z0-9]+</volumeType>", b"<volumeType>standard</volumeType>", data)
        if action == "DescribeImages":
            data = self.ami_mappings(data)
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
        if action == "DescribeVolumesModifications" and status == 200:
            _, mods, _ = items(data, b"volumeModificationSet")
            with LOCK:
                for m in mods:
                    LAST_MODIFICATION[item_id(m, b"volumeId")] = item_id(m, b"modificationState")
        if detaching and action == "DescribeVolumes" and detaching["volume"].encode() in data:
            with LOCK:
                detaching["polls"] -= 1
            data = data.replace(b"<status>attached</status>", b"<status>detaching</status>")
        if page is not None and status == 200:
            data = self.paged(action, data, page)
        self.reply(status, data, ctype)

    def remember(self, action, params, status, data):
        """After a change, its volume stays unseen for the next answers."""
        with LOCK:
            n = STATE["consistency"].get(action, 0)
        if not n or status != 200:
            return
        vid = item_id(data, b"volumeId") or (params.get("VolumeId") or [None])[0]
        if vid:
            with LOCK:
                HIDDEN[action][vid] = n

    def hidden(self, action, params):
        """The NotFound answer for a volume named while not yet seen."""
        changes = {"DescribeVolumes": "CreateVolume", "DescribeVolumesModifications": "ModifyVolume"}
        change = changes.get(action)
        if not change:
            return None
        for vid in values(params, "VolumeId"):
            with LOCK:
                left = HIDDEN[change].get(vid, 0)
                if left > 0:
                    HIDDEN[change][vid] = left - 1
            if left > 0:
                if change == "CreateVolume":
                    return 400, "InvalidVolume.NotFound", f"The volume '{vid}' does not exist."
                return 400, "InvalidVolumeModification.NotFound", f"Modification for volume '{vid}' does not exist."
        return None

    def unseen(self, action, data):
        """A filtered DescribeVolumes leaves out a volume not yet seen, and
        shows a new attachment not yet."""
        if action != "DescribeVolumes":
            return data
        before, vols, after = items(data, b"volumeSet")
        out = []
        for v in vols:
            vid = item_id(v, b"volumeId")
            with LOCK:
                new = HIDDEN["CreateVolume"].get(vid, 0)
                attached = HIDDEN["AttachVolume"].get(vid, 0)
                if new:
                    HIDDEN["CreateVolume"][vid] = new - 1
                if attached and not new:
                    HIDDEN["AttachVolume"][vid] = attached - 1
            if new:
                continue
            if attached:
                v = re.sub(rb"<attachmentSet>.*</attachmentSet>", b"<attachmentSet/>", v, flags=re.S)
                v = v.replace(b"<status>in-use</status>", b"<status>available</status>")
            out.append(v)
        return before + b"".join(out) + after if vols else data

    def ami_mappings(self, data):
        with LOCK:
            names = list(STATE["ami_devices"])
        if not names:
            return data
        extra = b"".join(
            f"<item><deviceName>{n}</deviceName><virtualName>ephemeral{i}</virtualName></item>".encode()
            for i, n in enumerate(names)
        )
        data = re.sub(rb"<blockDeviceMapping>", b"<blockDeviceMapping>" + extra, data)
        return re.sub(rb"<blockDeviceMapping\s*/>", b"<blockDeviceMapping>" + extra + b"</blockDeviceMapping>", data)

    def page(self, action, params):
        """(offset, size) of the page asked, for the actions that page."""
        if action not in ("DescribeSnapshots", "DescribeVolumes"):
            return None
        asked = (params.get("MaxResults") or [None])[0]
        if action == "DescribeVolumes" and asked is None:
            return None
        with LOCK:
            size = STATE["page_size"]
        if asked is not None:
            size = min(size, int(asked))
        token = (params.get("NextToken") or ["proxy-page-0"])[0]
        return int(token.rsplit("-", 1)[1]), max(size, 1)

    def paged(self, action, data, page):
        set_tag = b"snapshotSet" if action == "DescribeSnapshots" else b"volumeSet"
        offset, size = page
        before, all_items, after = items(data, set_tag)
        data = before + b"".join(all_items[offset:offset + size]) + after
        data = re.sub(rb"<nextToken>[^<]*</nextToken>", b"", data)
        if offset + size < len(all_items):
            token = f"<nextToken>proxy-page-{offset + size}</nextToken>".encode()
            data = re.sub(rb"(</" + set_tag + rb">)", rb"\1" + token, data, count=1)
        return data


if __name__ == "__main__":
    loopback.serve(Handler)
