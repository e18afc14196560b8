"""Test helper: set up and inspect EC2 state on the moto server with boto3.

Usage: ec2_admin.py ENDPOINT COMMAND ARGS...   (prints JSON)
  run-instances ZONE COUNT [TYPE] instance ids (of instance type TYPE)
  create-volume ZONE GIB [NAME]   a volume id
  create-volume-with JSON         a volume id (JSON: CreateVolume's arguments)
  attach VOLUME INSTANCE DEVICE
  tag RESOURCE KEY VALUE          tags an instance or volume
  create-snapshot VOLUME JSON     a snapshot id (JSON: its tags, {key: value})
  volume ID                       {id, state, zone, size, type, encrypted,
                                  kms_key, iops, throughput, attachments, tags}
  named NAME                      volume ids tagged Name=NAME
  volumes                         {id: {size, state, tags}} of every volume
  snapshots [VOLUME]              {id: tags} of this account's snapshots (of VOLUME)
  delete-volume ID                deletes it
  attached INSTANCE               {volume id: device} of its attached volumes
  record-start | record-stop      moto's request recorder
  actions                         {Action: count} of recorded requests
  access-keys                     the access key ids that signed recorded requests

The tests do not start it: tests/servers/moto_zygote.py, which has boto3 and
the EC2 model loaded already, forks and calls `run` for each query
(tests/common/servers.rs, `Server::ec2_admin`); scripts/bench runs it.
"""

import base64
import json
import sys
import urllib.parse
import urllib.request

import boto3


def client(endpoint, session=None):
    """An EC2 client of moto at ENDPOINT, from SESSION when given (one that
    has loaded the EC2 model already makes it in milliseconds)."""
    return (session or boto3.session.Session()).client(
        "ec2",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def main():
    endpoint, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    print(json.dumps(run(client(endpoint), endpoint, command, args)))


def run(ec2, endpoint, command, args):
    """COMMAND's answer (see the usage above), made with the client EC2."""
    if command == "run-instances":
        zone, count = args[0], int(args[1])
        kw = {"InstanceType": args[2]} if len(args) > 2 else {}
        r = ec2.run_instances(
            ImageId="ami-03cf127a", MinCount=count, MaxCount=count, Placement={"AvailabilityZone": zone}, **kw
        )
        out = [i["InstanceId"] for i in r["Instances"]]
    elif command == "create-volume":
        kw = {"AvailabilityZone": args[0], "Size": int(args[1])}
        if len(args) > 2:
            kw["TagSpecifications"] = [{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": args[2]}]}]
        out = ec2.create_volume(**kw)["VolumeId"]
    elif command == "create-volume-with":
        out = ec2.create_volume(**json.loads(args[0]))["VolumeId"]
    elif command == "create-snapshot":
        tags = [{"Key": k, "Value": v} for k, v in json.loads(args[1]).items()]
        kw = {"TagSpecifications": [{"ResourceType": "snapshot", "Tags": tags}]} if tags else {}
        out = ec2.create_snapshot(VolumeId=args[0], **kw)["SnapshotId"]
    elif command == "attach":
        ec2.attach_volume(VolumeId=args[0], InstanceId=args[1], Device=args[2])
        out = "ok"
    elif command == "tag":
        ec2.create_tags(Resources=[args[0]], Tags=[{"Key": args[1], "Value": args[2]}])
        out = "ok"
    elif command == "volume":
        v = ec2.describe_volumes(VolumeIds=[args[0]])["Volumes"][0]
        out = {
            "id": v["VolumeId"],
            "state": v["State"],
            "zone": v["AvailabilityZone"],
            "size": v["Size"],
            "type": v.get("VolumeType"),
            "encrypted": v.get("Encrypted"),
            "kms_key": v.get("KmsKeyId"),
            "iops": v.get("Iops"),
            "throughput": v.get("Throughput"),
            "attachments": [
                {"instance": a["InstanceId"], "state": a["State"], "device": a["Device"]} for a in v["Attachments"]
            ],
            "tags": {t["Key"]: t["Value"] for t in v.get("Tags", [])},
            "snapshot": v.get("SnapshotId", ""),
        }
    elif command == "attached":
        vols = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [args[0]]}])["Volumes"]
        out = {
            v["VolumeId"]: a["Device"] for v in vols for a in v["Attachments"] if a["InstanceId"] == args[0] and a["State"] == "attached"
        }
    elif command == "volumes":
        vols = ec2.describe_volumes()["Volumes"]
        out = {
            v["VolumeId"]: {"size": v["Size"], "state": v["State"], "tags": {t["Key"]: t["Value"] for t in v.get("Tags", [])}}
            for v in vols
        }
    elif command == "delete-volume":
        ec2.delete_volume(VolumeId=args[0])
        out = "ok"
    elif command == "named":
        vols = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [args[0]]}])["Volumes"]
        out = [v["VolumeId"] for v in vols]
    elif command == "snapshots":
        kw = {"Filters": [{"Name": "volume-id", "Values": [args[0]]}]} if args else {}
        snaps = ec2.describe_snapshots(OwnerIds=["self"], **kw)["Snapshots"]
        out = {s["SnapshotId"]: {t["Key"]: t["Value"] for t in s.get("Tags", [])} for s in snaps}
    elif command in ("record-start", "record-stop"):
        verb = "start-recording" if command == "record-start" else "stop-recording"
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/recorder/reset-recording", method="POST"))
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/recorder/{verb}", method="POST"))
        out = "ok"
    elif command == "actions":
        text = urllib.request.urlopen(f"{endpoint}/moto-api/recorder/download-recording").read().decode()
        counts = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode(errors="replace")
            query = urllib.parse.parse_qs(body) if isinstance(body, str) else {}
            query.update(urllib.parse.parse_qs(urllib.parse.urlparse(entry.get("path", "")).query))
            action = (query.get("Action") or ["?"])[0]
            counts[action] = counts.get(action, 0) + 1
        out = counts
    elif command == "access-keys":
        text = urllib.request.urlopen(f"{endpoint}/moto-api/recorder/download-recording").read().decode()
        keys = set()
        for line in text.splitlines():
            if not line.strip():
                continue
            headers = json.loads(line).get("headers") or {}
            auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
            if "Credential=" in auth:
                keys.add(auth.split("Credential=", 1)[1].split("/", 1)[0])
        out = sorted(keys)
    else:
        raise ValueError(f"unknown command {command}")
    return out


if __name__ == "__main__":
    main()
