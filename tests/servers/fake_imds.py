"""Test helper: the two IMDS answers `--self` needs, on 127.0.0.1.

Usage: fake_imds.py INSTANCE_ID ZONE [--v1 | --hop-limited | --forbidden] [--tag KEY=VALUE]...
prints its port on the first line
PUT /latest/api/token issues a token (echoing the TTL header); metadata
paths answer only with that token, as IMDSv2 does. With --v1 (Eucalyptus,
which has no IMDSv2), the token call is refused (405) and the metadata
paths answer without a token. With --hop-limited (a container on an
instance whose HttpPutResponseHopLimit is 1, the default: the token's
answer dies one hop short, AWS "Instance metadata options"), the token call
is never answered, and the metadata paths refuse a call without a token
(401, HttpTokens required). With --forbidden, every call is refused
(403), as an instance whose metadata service is turned off answers
(`HttpEndpoint=disabled`). --tag serves an instance tag at
/latest/meta-data/tags/instance/KEY (instance metadata tags enabled).
"""

import sys
import time

import loopback

INSTANCE, ZONE = sys.argv[1], sys.argv[2]
V1_ONLY = "--v1" in sys.argv[3:]
HOP_LIMITED = "--hop-limited" in sys.argv[3:]
FORBIDDEN = "--forbidden" in sys.argv[3:]
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
        if HOP_LIMITED:
            # The answer never arrives: the client times out.
            time.sleep(10)
            self.close_connection = True
            return
        if FORBIDDEN:
            return self.reply(403, "forbidden")
        if V1_ONLY:
            return self.reply(405, "method not allowed")
        ttl = self.headers.get("x-aws-ec2-metadata-token-ttl-seconds")
        if self.path != "/latest/api/token" or not ttl:
            return self.reply(400, "bad token request")
        self.reply(200, TOKEN, headers=[("x-aws-ec2-metadata-token-ttl-seconds", ttl)])

    def do_GET(self):
        if FORBIDDEN:
            return self.reply(403, "forbidden")
        if not V1_ONLY and self.headers.get("x-aws-ec2-metadata-token") != TOKEN:
            return self.reply(401, "")
        if self.path in PATHS:
            return self.reply(200, PATHS[self.path])
        self.reply(404, "not found")


if __name__ == "__main__":
    loopback.serve(Handler)
