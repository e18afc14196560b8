"""Test helper: the two IMDSv2 answers `--self` needs, on 127.0.0.1.

Usage: fake_imds.py INSTANCE_ID ZONE    prints its port on the first line
PUT /latest/api/token issues a token (echoing the TTL header); metadata
paths answer only with that token, as IMDSv2 does.
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INSTANCE, ZONE = sys.argv[1], sys.argv[2]
TOKEN = "fake-imds-token"
PATHS = {
    "/latest/meta-data/instance-id": INSTANCE,
    "/latest/meta-data/placement/availability-zone": ZONE,
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=()):
        data = body.encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        ttl = self.headers.get("x-aws-ec2-metadata-token-ttl-seconds")
        if self.path != "/latest/api/token" or not ttl:
            return self.reply(400, "bad token request")
        self.reply(200, TOKEN, [("x-aws-ec2-metadata-token-ttl-seconds", ttl)])

    def do_GET(self):
        if self.headers.get("x-aws-ec2-metadata-token") != TOKEN:
            return self.reply(401, "")
        if self.path in PATHS:
            return self.reply(200, PATHS[self.path])
        self.reply(404, "not found")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
