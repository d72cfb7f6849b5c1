#!/usr/bin/env python3
"""A logic-layer backend for Herald's proxy tests (Python standard library only).

Listens on 127.0.0.1 (port from argv[1], 0 = any) and prints "listening on PORT". Every POST is
recorded (path, lower-cased headers, JSON body); GET /_requests returns the records. What it
answers is decided by a word in the request: the connect data's "action", the user (refresh),
the channel (subscribe, publish, sub_refresh) or the method (rpc):

  deny        -> {"error": {"code": 1001, "message": "denied by backend"}}
  disconnect  -> {"disconnect": {"code": 4501, "reason": "backend says bye"}}
  slow        -> waits 3 s, then allows
  fail        -> HTTP 500
  garbage     -> HTTP 200 with a body that is not JSON
  otherwise   -> allowed, with a result described per path below.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORDS = []
LOCK = threading.Lock()


def decide(word, allow):
    word = word or ""
    if "deny" in word:
        return 200, {"error": {"code": 1001, "message": "denied by backend"}}
    if "disconnect" in word:
        return 200, {"disconnect": {"code": 4501, "reason": "backend says bye"}}
    if "slow" in word:
        time.sleep(3)
    if "fail" in word:
        return 500, {"error": "internal"}
    if "garbage" in word:
        return 200, None
    return 200, allow()


def connect(body):
    data = body.get("data") or {}
    def allow():
        result = {
            "user": data.get("user", "proxy-user"),
            "info": {"from": "connect-proxy"},
            "data": {"welcome": True},
            "meta": {"tenant": "t1"},
        }
        if "expire_in" in data:
            result["expire_at"] = int(time.time()) + int(data["expire_in"])
        if "channels" in data:
            result["channels"] = data["channels"]
        return {"result": result}
    return decide(data.get("action"), allow)


def refresh(body):
    user = body.get("user", "")
    if "refreshexpire" in user:
        return 200, {"result": {"expired": True}}
    if "refreshfail" in user:
        return 500, {"error": "down"}
    return 200, {"result": {"expire_at": int(time.time()) + 60, "info": {"refreshed": True}}}


def subscribe(body):
    channel = body.get("channel", "")
    def allow():
        result = {"info": {"sub": "proxy"}, "data": {"hello": channel}}
        if "expiring" in channel:
            result["expire_at"] = int(time.time()) + 2
        return {"result": result}
    return decide(channel, allow)


def publish(body):
    channel = body.get("channel", "")
    def allow():
        if "replace" in channel:
            return {"result": {"data": {"replaced": True}}}
        if "skiphist" in channel:
            return {"result": {"skip_history": True}}
        return {"result": {}}
    return decide(channel, allow)


def sub_refresh(body):
    channel = body.get("channel", "")
    if "srdown" in channel:
        return 500, {"error": "down"}
    return 200, {"result": {"expire_at": int(time.time()) + 60}}


def rpc(body):
    method = body.get("method", "")
    def allow():
        if "whoami" in method:
            return {"result": {"data": {"user": body.get("user"), "meta": body.get("meta")}}}
        if "b64" in method:
            return {"result": {"b64data": "AAEC"}}
        return {"result": {"data": {"echo": body.get("data"), "method": method}}}
    return decide(method, allow)


ROUTES = {
    "/connect": connect,
    "/refresh": refresh,
    "/subscribe": subscribe,
    "/publish": publish,
    "/sub_refresh": sub_refresh,
    "/rpc": rpc,
    "/named/rpc": rpc,
    "/named/publish": publish,
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, payload, raw=None):
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_requests":
            with LOCK:
                return self.answer(200, RECORDS)
        self.answer(404, {"error": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"unparsable": raw.decode("latin-1")}
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            RECORDS.append({"path": self.path, "headers": headers, "body": body})
        route = ROUTES.get(self.path)
        if route is None:
            return self.answer(404, {"error": "no such endpoint"})
        status, payload = route(body)
        if payload is None:
            return self.answer(status, None, raw=b"this is not json")
        self.answer(status, payload)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
