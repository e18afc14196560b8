"""Test helper: an HTTP proxy in front of the moto server that injects what
moto never does: API errors (a permanent AWS error code, or throttling and
5xx answers that the SDK must retry), and attachments stuck in `attaching`.

Usage: ec2_proxy.py UPSTREAM      prints its port on the first line of stdout
Control: POST /__proxy__ with JSON
  {"fail": {"AttachVolume": {"status": 403, "code": "UnauthorizedOperation", "times": -1}},
   "attaching": true}
  "times" is how many requests fail (-1: all). GET /__proxy__ returns
  {"injected": {"Action": n}} counting the failures sent.
Binds 127.0.0.1 only.
"""

import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import loopback

UPSTREAM = sys.argv[1].rstrip("/")
STATE = {"fail": {}, "attaching": False, "injected": {}}
LOCK = threading.Lock()

ERROR = """<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>proxy</RequestID></Response>"""


class Handler(loopback.Handler):
    def do_GET(self):
        if self.path.startswith("/__proxy__"):
            with LOCK:
                return self.reply(200, json.dumps({"injected": STATE["injected"]}), "application/json")
        self.forward(b"")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/__proxy__"):
            with LOCK:
                STATE.update(json.loads(body or b"{}"))
                STATE["injected"] = {}
            return self.reply(200, "{}", "application/json")
        self.forward(body)

    def forward(self, body):
        action = (urllib.parse.parse_qs(body.decode(errors="replace")).get("Action") or ["?"])[0]
        with LOCK:
            rule = STATE["fail"].get(action)
            if rule and rule.get("times", -1) != 0:
                if rule.get("times", -1) > 0:
                    rule["times"] -= 1
                STATE["injected"][action] = STATE["injected"].get(action, 0) + 1
                code = rule.get("code", "InternalError")
                return self.reply(rule.get("status", 500), ERROR.format(code=code, message=f"injected {code}"), "text/xml")
            attaching = STATE["attaching"]
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        req = urllib.request.Request(UPSTREAM + self.path, data=body or None, headers=headers, method=self.command)
        try:
            with urllib.request.urlopen(req) as resp:
                status, data, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "text/xml")
        except urllib.error.HTTPError as e:
            status, data, ctype = e.code, e.read(), e.headers.get("Content-Type", "text/xml")
        if attaching and action == "DescribeVolumes":
            data = data.replace(b"<status>attached</status>", b"<status>attaching</status>")
        self.reply(status, data, ctype)


if __name__ == "__main__":
    loopback.serve(Handler)
