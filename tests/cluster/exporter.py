"""A small HTTP exporter for the cluster tests: serves Prometheus metrics on the given port."""

import argparse
import signal
import threading

from prometheus_client import Gauge, start_http_server

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--host", default="127.0.0.1")
args = parser.parse_args()

Gauge("tierscale_test_exporter_up", "1 while the test exporter runs").set(1)
start_http_server(args.port, addr=args.host)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
