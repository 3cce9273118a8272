#!/usr/bin/env python3
"""Checks the tools the scrape estimator reads from, end to end:
bm-load's --trace-out and bm-scrape's fetch log (against a small HTTP
server on loopback) and exposure.py's command line (on made-up traces and
scrapes whose exposed requests are counted here by brute force). Run by
`make unit`; needs gcc and the standard library only."""
import collections
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from estimators import hist_pct  # noqa: E402


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's name)
        # One write: headers and body apart would wait for the client's
        # delayed ACK (Nagle), 40 ms a response.
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def log_message(self, *args):
        pass


class ToolCase(unittest.TestCase):
    """Builds tests/bench/TOOL.c into a temporary directory (cls.bin) and
    serves HANDLER on a loopback port (cls.srv) for the class's tests."""
    TOOL = HANDLER = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.bin = os.path.join(cls.tmp.name, cls.TOOL)
        subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-o", cls.bin,
                        os.path.join(HERE, cls.TOOL + ".c"), "-lm"], check=True)
        cls.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), cls.HANDLER)
        cls.thread = threading.Thread(target=cls.srv.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.shutdown()
        cls.srv.server_close()
        cls.tmp.cleanup()


class BmLoadTrace(ToolCase):
    TOOL, HANDLER = "bm-load", Handler

    def run_load(self, *extra):
        trace = os.path.join(self.tmp.name, "trace.txt")
        before = time.monotonic_ns() // 1000
        out = subprocess.run([self.bin, "--addr", f"127.0.0.1:{self.srv.server_address[1]}", "--conns", "2",
                              "--rate", "200", "--duration", "1.5", "--warmup", "0.3", "--trace-out", trace,
                              *extra], check=True, capture_output=True, text=True, timeout=30).stdout
        after = time.monotonic_ns() // 1000
        with open(trace) as f:
            rows = [tuple(int(x) for x in line.split()) for line in f]
        return json.loads(out), rows, before, after

    def test_one_line_per_recorded_request(self):
        res, rows, before, after = self.run_load()
        self.assertEqual(res["errors"], 0)
        self.assertGreater(res["requests"], 250)
        self.assertEqual(len(rows), res["requests"])
        self.assertTrue(all(len(r) == 2 for r in rows))
        # Due times are CLOCK_MONOTONIC us of this run, after the warm-up,
        # 1 / rate apart (the open loop's schedule).
        dues = sorted(d for d, _ in rows)
        self.assertGreaterEqual(dues[0], before + 300000 - 1000)
        self.assertLessEqual(dues[-1], after)
        gaps = {b - a for a, b in zip(dues, dues[1:])}
        self.assertTrue(gaps <= {4999, 5000, 5001}, sorted(gaps)[:5])
        # The latencies are the ones the percentiles were taken from.
        lat = collections.Counter(x for _, x in rows)
        for p, key in ((0.5, "p50_us"), (0.99, "p99_us"), (0.999, "p999_us")):
            self.assertEqual(hist_pct(lat, p), res[key], key)
        self.assertEqual(max(lat), res["max_us"])
        self.assertLess(res["p50_us"], 100000)

    def test_split_period_parity_matches_due(self):
        res, rows, _, _ = self.run_load("--split-period", "0.5")
        even = sum(1 for d, _ in rows if (d // 500000) % 2 == 0)
        self.assertEqual(even, res["even"]["requests"])
        self.assertEqual(len(rows) - even, res["odd"]["requests"])


class ScrapeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []   # (monotonic s, Accept-Encoding) per request

    def do_GET(self):  # noqa: N802 (http.server's name)
        ScrapeHandler.seen.append((time.monotonic(), self.headers.get("Accept-Encoding")))
        if self.path != "/metrics":
            self.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        body = b"x" * 70000
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(body), body))
        self.close_connection = True

    def log_message(self, *args):
        pass


class BmScrape(ToolCase):
    """bm-scrape fetches at k + 0.25 s into the windows of its parity only,
    logs one line per fetch, and asks for gzip only when told to."""
    TOOL, HANDLER = "bm-scrape", ScrapeHandler

    def scrape(self, parity, gzip):
        ScrapeHandler.seen = []
        out = os.path.join(self.tmp.name, f"scrapes-{parity}-{gzip}.txt")
        port = self.srv.server_address[1]
        subprocess.run([self.bin, out, "2.6", "1", str(parity), str(gzip), f"http://127.0.0.1:{port}/metrics",
                        f"http://127.0.0.1:{port}/other"], check=True, timeout=30)
        with open(out) as f:
            return [line.split() for line in f]

    def test_schedule_log_and_encoding(self):
        for parity, gzip in ((0, 1), (1, 0)):
            rows = self.scrape(parity, gzip)
            # 2.6 s hold one or two windows of the parity: a pair of fetches each
            self.assertIn(len(rows), (2, 4), rows)
            for i, r in enumerate(rows):
                self.assertEqual(len(r), 5, r)
                host, code, size, secs, start = r[0], r[1], int(r[2]), float(r[3]), float(r[4])
                self.assertEqual(host, "127.0.0.1")
                self.assertEqual((code, size), ("200", 70000) if i % 2 == 0 else ("404", 0))
                self.assertTrue(0 <= secs < 0.9)
                if i % 2 == 0:
                    # k + 0.25 s into a window of its parity (1-second windows)
                    self.assertEqual(int(start) % 2, parity, start)
                    self.assertAlmostEqual(start - int(start), 0.25, delta=0.02)
            self.assertEqual(len(ScrapeHandler.seen), len(rows))
            self.assertTrue(all(ae == ("gzip" if gzip else None) for _, ae in ScrapeHandler.seen))

    def test_failed_fetch_logged_as_000(self):
        out = os.path.join(self.tmp.name, "refused.txt")
        port = closed_port()
        for parity in ("0", "1"):   # 1.3 s: at least one of the two fetches
            subprocess.run([self.bin, out, "1.3", "1", parity, "0", f"http://127.0.0.1:{port}/metrics"],
                           check=True, timeout=30)
        with open(out) as f:
            rows = [line.split() for line in f]
        self.assertGreaterEqual(len(rows), 1)
        self.assertTrue(all(r[1:3] == ["000", "0"] for r in rows), rows)

    def test_bad_arguments(self):
        for args in (["x"], ["o", "1", "1", "2", "0", "http://127.0.0.1:1/m"],
                     ["o", "1", "1", "0", "0", "http://localhost:1/m"], ["o", "1", "1", "0", "0", "ftp://x"]):
            r = subprocess.run([self.bin, *args], capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 2, args)


def closed_port():
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exposed(due, lat, intervals):
    return any(due <= e and s <= due + lat for s, e in intervals)


class ExposureCli(unittest.TestCase):
    """Round 3: one scraped run (parity 0: scrapes in even 1-second windows)
    and its control; a request every 7 ms, slow ones near the two scrapes."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        d = self.tmp.name
        self.traces = os.path.join(d, "traces")
        os.mkdir(self.traces)
        base = 100_000_000  # 100 s: window 100 is even
        self.rows = []
        for i in range(650):  # 4.55 s: windows 100 to 104
            due = base + i * 7000
            off = (due - base) % 1_000_000
            near = (due // 1_000_000) in (100, 102) and 250_000 <= off < 262_000
            lat = 3000 if near else 300 + (i % 13)
            self.rows.append((due, lat))
        for scen in ("l7-scraped", "l7"):
            with open(os.path.join(self.traces, f"trace-3-{scen}-0.txt"), "w") as f:
                f.writelines(f"{d_} {x}\n" for d_, x in self.rows)
        # Neither is read: not a trace name, and an empty trace.
        open(os.path.join(self.traces, "notes.txt"), "w").close()
        open(os.path.join(self.traces, "trace-4-l7-0.txt"), "w").close()
        # Two fetches per moment (both nodes, one after the other), 1.0 and
        # 1.5 ms, at 0.25 s into windows 100 and 102; merged: 2.6 ms each.
        self.scrapes = os.path.join(d, "scrape.txt")
        with open(self.scrapes, "w") as f:
            f.write("# round node_ip http_code bytes seconds start\n")
            for w in (100, 102):
                s = w + 0.25
                f.write(f"3 198.19.255.1 200 9000 0.001000 {s:.6f}\n")
                f.write(f"3 198.19.255.2 200 9000 0.001500 {s + 0.0011:.6f}\n")
        self.out = os.path.join(d, "exposure.txt")
        subprocess.run([sys.executable, "-B", os.path.join(HERE, "exposure.py"), "--traces", self.traces,
                        "--scrapes", self.scrapes, "--period", "1", "--guards", "0 20", "--out", self.out],
                       check=True, timeout=60)
        self.tables = {}
        with open(self.out) as f:
            self.header = f.readline()
            for line in f:
                r, scen, g, side, us, n = line.split()
                t = self.tables.setdefault((int(r), scen, g, side), {})
                t[int(us)] = t.get(int(us), 0) + int(n)

    def tearDown(self):
        self.tmp.cleanup()

    def expect(self, moments, guard_us):
        dur = 2600
        iv = [(s, s + dur + guard_us) for s in moments]
        h_all, h_un = {}, {}
        for due, lat in self.rows:
            if (due // 1_000_000) % 2:
                continue
            h_all[lat] = h_all.get(lat, 0) + 1
            if not exposed(due, lat, iv):
                h_un[lat] = h_un.get(lat, 0) + 1
        return h_all, h_un

    def test_median_scrape_length_in_header(self):
        self.assertIn("2.600 ms", self.header)

    def test_scraped_run_leaves_out_what_overlapped_a_scrape(self):
        moments = [100_250_000, 102_250_000]
        for g in (0, 20):
            h_all, h_un = self.expect(moments, g * 1000)
            self.assertEqual(self.tables[(3, "l7-scraped", "-", "all")], h_all)
            self.assertEqual(self.tables[(3, "l7-scraped", str(g), "unexposed")], h_un)
        # The slow requests near the scrapes are the ones left out.
        self.assertNotIn(3000, self.tables[(3, "l7-scraped", "20", "unexposed")])
        self.assertLess(sum(self.tables[(3, "l7-scraped", "0", "unexposed")].values()),
                        sum(self.tables[(3, "l7-scraped", "-", "all")].values()))

    def test_control_gets_virtual_scrapes_at_the_scrapers_moments(self):
        # Every even window of the trace, 0.25 s in: 100, 102 and 104.
        moments = [100_250_000, 102_250_000, 104_250_000]
        for g in (0, 20):
            h_all, h_un = self.expect(moments, g * 1000)
            self.assertEqual(self.tables[(3, "l7", "-", "all")], h_all)
            self.assertEqual(self.tables[(3, "l7", str(g), "unexposed")], h_un)

    def test_ignores_other_files_and_empty_traces(self):
        self.assertEqual({k[:2] for k in self.tables}, {(3, "l7-scraped"), (3, "l7")})


if __name__ == "__main__":
    unittest.main(verbosity=1)
