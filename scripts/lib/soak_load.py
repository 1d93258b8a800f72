#!/usr/bin/env python3
"""Load soak: many concurrent connections, a mixed hit/miss/range workload, Strata beside nginx.

For each proxy in turn (same origin, same workload, same duration): start it with a fresh cache,
warm the hot set, run wrk with CONNECTIONS connections for DURATION seconds while sampling the
proxy's RSS, then check a sample of responses byte for byte against the origin files. Prints a
table and writes a JSON report. Loopback only; every loop is bounded in count and time.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HOT_N = 1000
HOT_SIZE = 8 << 10
LARGE_SIZE = 64 << 20

WRK_SCRIPT = r"""
local hot_n, large = %(hot_n)d, %(large)d
local counter = 0
function setup(thread)
  thread:set("tid", tostring(math.random(1, 1000000000)))
end
function init(args)
  math.randomseed(os.time() + tonumber(tid))
end
function request()
  local r = math.random()
  if r < 0.8 then
    return wrk.format("GET", "/hot/" .. math.random(0, hot_n - 1) .. ".bin")
  elseif r < 0.9 then
    counter = counter + 1
    return wrk.format("GET", "/hot/" .. math.random(0, hot_n - 1) .. ".bin?miss=" .. tid .. "-" .. counter)
  else
    local s = math.random(0, large - 65537)
    return wrk.format("GET", "/large.bin", { Range = "bytes=" .. s .. "-" .. (s + 65535) })
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SOAK {"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"p999_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not start on port {port}")


def make_origin_files(root):
    rnd = random.Random(2026)
    os.makedirs(os.path.join(root, "hot"), exist_ok=True)
    for i in range(HOT_N):
        with open(os.path.join(root, "hot", f"{i}.bin"), "wb") as f:
            f.write(rnd.randbytes(HOT_SIZE))
    with open(os.path.join(root, "large.bin"), "wb") as f:
        for _ in range(LARGE_SIZE >> 20):
            f.write(rnd.randbytes(1 << 20))


def nginx_conf(work, port, body):
    # As root, workers would run as nobody: they must read the files and write the cache here.
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 2;
worker_rlimit_nofile 65536;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  keepalive_requests 1000000;
  {body}
}}
"""


def run_nginx(d, port, body, what):
    """Starts an nginx on `port` from its config in `d`; its master's pid."""
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_conf(d, port, body))
    subprocess.run(["nginx", "-c", conf, "-p", d], check=True)
    wait_port(port, what)
    with open(os.path.join(d, "nginx.pid")) as f:
        return int(f.read().strip())


def start_origin(work, root):
    port = free_port()
    d = os.path.join(work, "origin")
    os.makedirs(d)
    body = f"""
  server {{
    listen 127.0.0.1:{port} backlog=8192;
    root {root};
    expires 1h;
    location / {{ }}
  }}"""
    return port, run_nginx(d, port, body, "origin nginx")


def start_nginx_cache(work, origin_port):
    port = free_port()
    d = os.path.join(work, "nginx-cache")
    os.makedirs(os.path.join(d, "cache"))
    body = f"""
  proxy_cache_path {d}/cache levels=1:2 keys_zone=soak:64m max_size=1g inactive=1h use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=8192;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      slice 1m;
      proxy_cache soak;
      proxy_cache_key $uri$is_args$args$slice_range;
      proxy_set_header Range $slice_range;
      proxy_cache_valid 200 206 1h;
      proxy_cache_lock on;
    }}
  }}"""
    pid = run_nginx(d, port, body, "nginx cache")
    return port, pid, lambda: os.kill(pid, signal.SIGQUIT)


def start_strata(work, origin_port, binary):
    port, admin = free_port(), free_port()
    d = os.path.join(work, "strata")
    os.makedirs(d)
    conf = os.path.join(d, "strata.yaml")
    with open(conf, "w") as f:
        f.write(f"""listen: 127.0.0.1:{port}
admin:
  listen: 127.0.0.1:{admin}
threads: 2
shutdown_grace: 2s
log:
  level: warn
  access: false
cache:
  memory: 128MiB
  disk:
    path: {d}/cache.img
    size: 1GiB
  slice: 1MiB
routes:
  - name: soak
    path_prefix: /
    origin: http://127.0.0.1:{origin_port}
""")
    log = open(os.path.join(d, "strata.log"), "w")
    p = subprocess.Popen([binary, "--config", conf], stdout=log, stderr=log)
    wait_port(port, "strata")

    def stop():
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()

    return port, p.pid, stop


def tree(pid):
    """pid and its children (nginx's workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def tree_fds(pid):
    """Open file descriptors of pid and its children."""
    n = 0
    for p in tree(pid):
        try:
            n += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return n


def tree_rss_kib(pid):
    """RSS of pid and its children (nginx's workers), in KiB."""
    pids = tree(pid)
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def sample_rss(pid, every, stop, out, fds):
    t0 = time.time()
    while not stop.wait(every):
        out.append((round(time.time() - t0, 1), tree_rss_kib(pid)))
        fds.append(tree_fds(pid))


def warm(port):
    for i in range(HOT_N):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hot/{i}.bin", timeout=10) as r:
            r.read()


def verify(port, root, n=40):
    """Byte-exact checks of hot objects, misses and ranges against the origin files."""
    rnd = random.Random(7)
    wrong = 0
    with open(os.path.join(root, "large.bin"), "rb") as f:
        large = f.read()
    for k in range(n):
        i = rnd.randrange(HOT_N)
        with open(os.path.join(root, "hot", f"{i}.bin"), "rb") as f:
            want = f.read()
        for q in ("", f"?verify={k}"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hot/{i}.bin{q}", timeout=10) as r:
                wrong += r.read() != want
        s = rnd.randrange(LARGE_SIZE - 70000)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/large.bin",
                                     headers={"Range": f"bytes={s}-{s + 65535}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            wrong += r.read() != large[s:s + 65536]
    return wrong


def settled_rss_kib(pid, tolerance_kib=1024, limit_s=20):
    """RSS once two samples a second apart agree within `tolerance_kib` (at most `limit_s`):
    after a busy phase, the allocator hands freed pages back over a few seconds."""
    last = tree_rss_kib(pid)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(1)
        now = tree_rss_kib(pid)
        if abs(now - last) <= tolerance_kib:
            return now
        last = now
    return last


def idle_connections_rss(port, pid, n=1000):
    """RSS before and while n keep-alive connections sit idle after one request each (KiB),
    each taken once RSS has settled."""
    before = settled_rss_kib(pid)
    held = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(f"GET /hot/{i % HOT_N}.bin HTTP/1.1\r\nHost: soak\r\n\r\n".encode())
            got = b""
            while b"\r\n\r\n" not in got or len(got) < HOT_SIZE:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            held.append(s)
        during = settled_rss_kib(pid)
    finally:
        for s in held:
            s.close()
    return before, during


def slope_mib_per_min(samples):
    if len(samples) < 2:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [kib / 1024 for _, kib in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var * 60


def run_one(name, start, args, work, origin_port, root, script):
    port, pid, stop = start(work, origin_port)
    try:
        warm(port)
        samples, fds, done = [], [], threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(pid, 5, done, samples, fds), daemon=True)
        sampler.start()
        cmd = ["wrk", "-t", "2", "-c", str(args.connections), "-d", f"{args.duration}s",
               "--timeout", "10s", "-s", script, f"http://127.0.0.1:{port}/"]
        print(f"[{name}] {' '.join(cmd)}", flush=True)
        # wrk itself stops at -d; the subprocess timeout is the outer bound.
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120)
        done.set()
        sampler.join()
        line = next((l for l in out.stdout.splitlines() if l.startswith("SOAK ")), None)
        if line is None:
            sys.exit(f"[{name}] wrk printed no summary:\n{out.stdout}\n{out.stderr}")
        w = json.loads(line[5:])
        print(f"[{name}] wrk: {w}", flush=True)
        try:
            wrong = verify(port, root)
        except OSError as e:
            print(f"[{name}] verification failed: {e}", flush=True)
            wrong = -1
        idle_before, idle_during = idle_connections_rss(port, pid)
        alive = tree_rss_kib(pid) > 0
    finally:
        stop()
    after = [s for s in samples if s[0] >= args.warmup]
    rss = [kib for _, kib in after] or [0]
    errors = w["connect"] + w["read"] + w["write"] + w["status"] + w["timeout"]
    return {
        "proxy": name,
        "connections": args.connections,
        "duration_s": args.duration,
        "requests": w["requests"],
        "req_per_s": round(w["requests"] / (w["duration_us"] / 1e6), 1),
        "errors": errors,
        "errors_by_kind": {k: w[k] for k in ("connect", "read", "write", "status", "timeout")},
        "p50_ms": w["p50_us"] / 1000,
        "p90_ms": w["p90_us"] / 1000,
        "p99_ms": w["p99_us"] / 1000,
        "p999_ms": w["p999_us"] / 1000,
        "rss_mib_after_warmup": {"min": min(rss) // 1024, "max": max(rss) // 1024,
                                 "first": rss[0] // 1024, "last": rss[-1] // 1024},
        "rss_slope_mib_per_min": round(slope_mib_per_min(after), 2),
        "rss_samples": samples,
        # Every connection is a descriptor: client side and origin side. A proxy whose
        # descriptors grow past its connections is leaking or piling up origin connections.
        "open_fds_max": max(fds or [0]),
        "wrong_bytes_checks": wrong,
        "idle_1000_rss_mib": {"before": idle_before // 1024, "with": idle_during // 1024,
                              "per_connection_kib": round((idle_during - idle_before) / 1000, 1)},
        "alive_at_end": alive,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--duration", type=int, default=600, help="seconds per proxy")
    ap.add_argument("--warmup", type=int, default=60, help="seconds of RSS samples left out")
    ap.add_argument("--proxies", default="strata,nginx")
    ap.add_argument("--report", default="target/soak-load.json")
    args = ap.parse_args()
    if args.duration > 3600 or args.connections > 20000:
        sys.exit("bounded: at most 3600 s and 20000 connections")
    work = tempfile.mkdtemp(prefix="strata-soak-")
    root = os.path.join(work, "files")
    make_origin_files(root)
    script = os.path.join(work, "mixed.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT % {"hot_n": HOT_N, "large": LARGE_SIZE})
    origin_port, origin_pid = start_origin(work, root)
    starts = {
        "strata": lambda w, o: start_strata(w, o, args.binary),
        "nginx": start_nginx_cache,
    }
    results = []
    try:
        for name in args.proxies.split(","):
            results.append(run_one(name, starts[name], args, work, origin_port, root, script))
    finally:
        os.kill(origin_pid, signal.SIGQUIT)
    os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    with open(args.report, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\n{args.connections} connections, {args.duration} s each, 80% hits / 10% misses / 10% 64 KiB ranges")
    print("| proxy | req/s | errors | p50 ms | p99 ms | p99.9 ms | RSS MiB after warm-up (min..max) | RSS slope MiB/min | open fds (max) | checks wrong | 1000 idle conns: RSS MiB before -> with (KiB each) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m, i = r["rss_mib_after_warmup"], r["idle_1000_rss_mib"]
        print(f"| {r['proxy']} | {r['req_per_s']} | {r['errors']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['p999_ms']:.2f} | {m['min']}..{m['max']} | {r['rss_slope_mib_per_min']} | {r['open_fds_max']} | {r['wrong_bytes_checks']} | "
              f"{i['before']} -> {i['with']} ({i['per_connection_kib']}) |")
    print(f"report: {args.report}")
    shutil.rmtree(work, ignore_errors=True)
    # A client connection and at most one origin connection each, plus a margin for pools,
    # listeners and files: beyond that, descriptors pile up.
    # nginx is the reference: its own errors are reported, not failed on.
    bad = [r["proxy"] for r in results if r["proxy"] == "strata" and (
           r["errors"] or r["wrong_bytes_checks"] or not r["alive_at_end"]
           or r["open_fds_max"] > 2 * r["connections"] + 1000)]
    if bad:
        sys.exit(f"errors, wrong bytes, descriptors piling up or a dead proxy: {bad}")


if __name__ == "__main__":
    main()
