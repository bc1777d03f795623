"""UI latency of the dashboard: (1) time from clicking Run to the first plotted loss point, in a real `workbench
app` server driven by headless Chromium; (2) the overhead of the live views on a 500-step toy run (Rosenbrock,
Adam, the path view's Trajectory probe every step) versus the same run without the app.

    python benchmarks/ui_latency.py [--repeats 3] [--steps 500] [--pin]

``--pin`` keeps Chromium off the server's core (server and bare runs on CPU 0, the browser on the others), as on a
machine where the browser does not compete with training for the same core.

Prints a table. The machine's load average is printed too: on a shared machine every number moves with it.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]



def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp, cpus=None):
    port = free_port()
    log = open(Path(tmp) / "server.log", "w")
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "app", "--port", str(port), "--results-dir",
                             str(Path(tmp) / "results")], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            preexec_fn=pin)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start")


def cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def chromium_cpu() -> float:
    tot = 0.0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/comm") as f:
                    if "chrom" in f.read():
                        tot += cpu_seconds(int(p))
            except (OSError, IndexError, ValueError):
                pass
    return tot


def points(page):
    return page.locator(".wb-loss-plot .js-plotly-plot").evaluate(
        "el => (el.data && el.data[0] && el.data[0].x) ? el.data[0].x.length : 0")


def status(page):
    return page.locator(".wb-status").first.evaluate("el => (el.shadowRoot || el).textContent")


def set_text(page, css, value):
    box = page.locator(f"{css} input")
    box.fill(str(value))
    box.press("Enter")


def app_runs(url, steps, repeats, server_pid):
    from playwright.sync_api import sync_playwright

    first, finished, inside, server_cpu, browser_cpu = [], [], [], [], []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.locator(".wb-run button").wait_for()
        page.locator(".wb-optimizer select").select_option("adam")
        page.wait_for_timeout(500)
        set_text(page, ".wb-param-lr", "0.05")
        set_text(page, ".wb-param-steps", str(steps))
        page.wait_for_timeout(500)
        for _ in range(repeats):
            page.locator(".wb-reset button").click()
            t_end = time.time() + 60
            while points(page) != 0 and time.time() < t_end:
                time.sleep(0.05)
            s0, c0 = cpu_seconds(server_pid), chromium_cpu()
            t0 = time.perf_counter()
            page.locator(".wb-run button").click()
            while points(page) == 0:
                time.sleep(0.005)
            first.append(time.perf_counter() - t0)
            while "finished" not in status(page):
                time.sleep(0.01)
            finished.append(time.perf_counter() - t0)
            server_cpu.append(cpu_seconds(server_pid) - s0)
            browser_cpu.append(chromium_cpu() - c0)
            s = status(page)
            inside.append(float(re.search(r"· ([0-9.]+) s", s).group(1)))
        b.close()
    return first, finished, inside, server_cpu, browser_cpu


def bare_runs(steps, repeats):
    import workbench as wb
    prob = wb.problems.make("rosenbrock")
    out, cpu = [], []
    wb.Run(prob, optimizer="adam", lr=0.05, steps=20, device="cpu", progress=False,
           probes=[wb.probes.Trajectory(every=1)]).run()          # warm-up (imports, first kernels)
    for _ in range(repeats):
        run = wb.Run(prob, optimizer="adam", lr=0.05, steps=steps, device="cpu", progress=False,
                     probes=[wb.probes.Trajectory(every=1)])
        t0, c0 = time.perf_counter(), time.process_time()
        run.run()
        out.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return out, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--pin", action="store_true",
                    help="pin the server (and the bare runs) to CPU 0 and Chromium to the other CPUs, as on a machine "
                         "where the browser does not share the training core")
    args = ap.parse_args()
    load0 = os.getloadavg()
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) < 2:
        sys.exit("--pin needs at least 2 CPUs")
    server_cpus, browser_cpus = ({cpus[0]}, set(cpus[1:])) if args.pin else (None, None)

    def on(which):                          # affinity of this process (and of what it starts next)
        if args.pin:
            os.sched_setaffinity(0, which)

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(tmp, server_cpus)
        try:
            on(server_cpus)
            bare, bare_cpu = bare_runs(args.steps, args.repeats)
            on(browser_cpus)                # Playwright's driver and Chromium inherit this
            first, finished, inside, server_cpu, browser_cpu = app_runs(url, args.steps, args.repeats, proc.pid)
            on(server_cpus)
            b2, c2 = bare_runs(args.steps, args.repeats)        # before and after: the load drifts
            bare, bare_cpu = bare + b2, bare_cpu + c2
        finally:
            on(set(cpus))
            proc.terminate()
            proc.wait(10)
    load1 = os.getloadavg()
    med = statistics.median
    print(f"load average (1 min) before/after: {load0[0]:.1f} / {load1[0]:.1f} on {os.cpu_count()} cores")
    print(f"{args.steps}-step Rosenbrock run, Adam, Trajectory every step; medians of {args.repeats} "
          f"(bare: {2 * args.repeats}) runs"
          + (f"; server and bare runs pinned to CPU {sorted(server_cpus)}, Chromium to {sorted(browser_cpus)}"
             if args.pin else "; nothing pinned (browser and server share the cores)") + "\n")
    rows = [("click Run -> first plotted point (browser)", med(first), "< 1 s"),
            ("run time in the app (run's own clock)", med(inside), ""),
            ("click Run -> 'finished' shown (browser)", med(finished), ""),
            ("same run without the app", med(bare), ""),
            ("live-view overhead (in app / bare - 1)", med(inside) / med(bare) - 1, "< 20%"),
            ("end-to-end overhead (finished shown / bare - 1)", med(finished) / med(bare) - 1, ""),
            ("CPU: server process per app run (training + views)", med(server_cpu), ""),
            ("CPU: bare run", med(bare_cpu), ""),
            ("CPU overhead of the server side (server / bare - 1)", med(server_cpu) / med(bare_cpu) - 1, ""),
            ("CPU: Chromium rendering per app run", med(browser_cpu), "")]
    print(f"{'measure':52s} {'value':>10s}  target")
    for name, v, target in rows:
        val = f"{v:.1%}" if "overhead" in name else f"{v:.3f} s"
        print(f"{name:52s} {val:>10s}  {target}")
    print("\nall first-point latencies (s):", ", ".join(f"{x:.3f}" for x in first))
    print("all in-app run times (s):    ", ", ".join(f"{x:.3f}" for x in inside))
    print("all bare run times (s):      ", ", ".join(f"{x:.3f}" for x in bare))


if __name__ == "__main__":
    main()
