"""Test helper: the two IMDS answers `--self` needs, on 127.0.0.1.

Usage: fake_imds.py INSTANCE_ID ZONE [--v1 | --hop-limit-1] [--tag KEY=VALUE]...
prints its port on the first line
PUT /latest/api/token issues a token (echoing the TTL header); metadata
paths answer only with that token, as IMDSv2 does. With --v1 (Eucalyptus,
which has no IMDSv2), the token call is refused (405) and the metadata
paths answer without a token. With --hop-limit-1, the token's answer never
arrives and the paths still need a token: what a container one network hop
further away sees on an instance whose IMDSv2 response hop limit is 1 and
whose tokens are required (the default of new instances: EC2 User Guide,
"Use IMDSv2", the PUT response hop limit). --tag serves an instance tag at
/latest/meta-data/tags/instance/KEY (instance metadata tags enabled).
"""

import sys
import time

import loopback

INSTANCE, ZONE = sys.argv[1], sys.argv[2]
V1_ONLY = "--v1" in sys.argv[3:]
HOP_LIMIT_1 = "--hop-limit-1" in sys.argv[3:]
TOKEN = "fake-imds-token"
PATHS = {
    "/latest/meta-data/instance-id": INSTANCE,
    "/latest/meta-data/placement/availability-zone": ZONE,
}
for i, a in enumerate(sys.argv):
    if a == "--tag" and i + 1 < len(sys.argv):
        k, _, v = sys.argv[i + 1].partition("=")
        PATHS[f"/latest/meta-data/tags/instance/{k}"] = v


class Handler(loopback.Handler):
    def do_PUT(self):
        if V1_ONLY:
            return self.reply(405, "method not allowed")
        if HOP_LIMIT_1:
            # The answer is dropped on the way: the client waits in vain.
            time.sleep(30)
            return
        ttl = self.headers.get("x-aws-ec2-metadata-token-ttl-seconds")
        if self.path != "/latest/api/token" or not ttl:
            return self.reply(400, "bad token request")
        self.reply(200, TOKEN, headers=[("x-aws-ec2-metadata-token-ttl-seconds", ttl)])

    def do_GET(self):
        if not V1_ONLY and self.headers.get("x-aws-ec2-metadata-token") != TOKEN:
            return self.reply(401, "")
        if self.path in PATHS:
            return self.reply(200, PATHS[self.path])
        self.reply(404, "not found")


if __name__ == "__main__":
    loopback.serve(Handler)
