"""The dashboard under load (issue 16): six browser sessions train six optimizers at once in a real `workbench app`
server; a new page loads, a seventh session runs, an eighth is queued until a Stop frees a worker, and 20 sessions
are opened and closed (the server's memory after that). The scenario is tests/browser_load.py (the test asserts
what is not a timing); this script repeats it and prints every number, with the load average.

    python benchmarks/dashboard_load.py [--repeats 2] [--sessions 6] [--cycles 20]

Headless Debian Chromium runs on the same machine as the server (on a 2-core machine the browsers' rendering
competes with the server for the same cores, which a real deployment does not have).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--cycles", type=int, default=20)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from browser import AppServer, launch
    from browser_load import measure

    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    with sync_playwright() as pw:
        browser = launch(pw)
        for r in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                srv = AppServer(Path(tmp), extra_args=["--workers", str(args.sessions + 1)])
                try:
                    print(f"\n-- repeat {r + 1}")
                    measure(browser, srv.url, srv.proc.pid, sessions=args.sessions, cycles=args.cycles,
                            workers=args.sessions + 1)
                finally:
                    srv.close()
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
