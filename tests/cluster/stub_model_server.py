"""A stand-in for the model server in the operator's behaviour tests.

It takes the real server's command line (so the operator's pod template starts it unchanged) and
exports the real server's metric names (tierscale_server.metrics), but instead of scoring it
generates its own traffic: ``--rps`` requests per second of ``--latency-ms`` each, with clicks at
rate ``--ctr`` on position 1. ``--never-ready-tiers`` makes /ping fail on those tiers, for tier switches that never
become ready. The closed-loop tests and the demo use the real server.
"""

import argparse
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import start_http_server

from tierscale_server.metrics import ServerMetrics

parser = argparse.ArgumentParser()
parser.add_argument("--tier", required=True)
parser.add_argument("--model-name", required=True)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--management-port", type=int, required=True)
parser.add_argument("--metrics-port", type=int, required=True)
parser.add_argument("--rps", type=float, default=0.0)
parser.add_argument("--latency-ms", type=float, default=10.0)
parser.add_argument("--ctr", type=float, default=0.1)
parser.add_argument("--never-ready-tiers", default="", help="comma-separated tiers whose /ping fails")
args = parser.parse_args()

metrics = ServerMetrics(args.model_name, args.tier)
metrics.initialise_series()  # as the real server does: zero traffic reads as a rate of 0
metrics.impressions.labels(**metrics.labels, position="1")
metrics.clicks.labels(**metrics.labels, position="1")
start_http_server(args.metrics_port, addr=args.host, registry=metrics.registry)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        healthy = self.path == "/ping" and args.tier not in args.never_ready_tiers.split(",")
        self.send_response(200 if healthy else 503)
        self.end_headers()
        self.wfile.write(b'{"status": "Healthy"}' if healthy else b'{"status": "Unhealthy"}')

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer((args.host, args.port), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
requests_due = clicks_due = 0.0
while not stop.wait(0.1):
    requests_due += args.rps * 0.1
    whole = int(requests_due)
    requests_due -= whole
    for _ in range(whole):
        metrics.observe_request(200, args.latency_ms / 1000.0)
        metrics.observe_impressions(1)
        clicks_due += args.ctr
        if clicks_due >= 1:
            metrics.observe_click(1)
            clicks_due -= 1
server.shutdown()
