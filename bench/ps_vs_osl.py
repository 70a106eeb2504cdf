#!/usr/bin/env python3
"""kubectl-osl's process snapshot against ps, on this machine, in one run.

    python3 bench/ps_vs_osl.py [--procs 100] [--runs 40]

Tops the machine up to --procs processes with idle sleepers, then times, alternating
so that noise hits both alike:
  ps -eo pid,ppid,rss,vsz,nlwp,stat,comm
  kubectl-osl ps --local -o json        (stat, status, cmdline, cgroup, fd count, limits, smaps_rollup)
  kubectl-osl diagnose --local -o json  (the same + every container's cgroup files + findings)
and prints medians and the ratios to ps. It also times reading every process's
smaps_rollup against every stat file, which is what osl reads beyond ps.
"""
import argparse, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "osl-cli"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "kubectl-osl")


def pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def time_cmd(argv):
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def time_reads(name):
    start = time.perf_counter()
    for pid in pids():
        try:
            with open(f"/proc/{pid}/{name}", "rb") as f:
                f.read()
        except OSError:
            pass
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=100)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    osl = build()
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(max(0, args.procs - len(pids())))]
    try:
        cmds = {
            "ps -eo pid,ppid,rss,vsz,nlwp,stat,comm": ["ps", "-eo", "pid,ppid,rss,vsz,nlwp,stat,comm"],
            "kubectl-osl ps --local -o json": [osl, "ps", "--local", "-o", "json"],
            "kubectl-osl diagnose --local -o json --blocked 0s": [osl, "diagnose", "--local", "-o", "json", "--blocked", "0s"],
        }
        times = {k: [] for k in cmds}
        for argv in cmds.values():  # warm the page cache
            time_cmd(argv)
        for _ in range(args.runs):
            for k, argv in cmds.items():
                times[k].append(time_cmd(argv))
        reads = {n: statistics.median(time_reads(n) for _ in range(args.runs)) for n in ("stat", "smaps_rollup")}
    finally:
        for s in sleepers:
            s.kill()
            s.wait()
    n = len(pids()) + len(sleepers)
    base = statistics.median(times["ps -eo pid,ppid,rss,vsz,nlwp,stat,comm"])
    print(f"{n} processes, {args.runs} runs each, medians (max):")
    for k, t in times.items():
        print(f"  {k:<42} {statistics.median(t) * 1e3:7.2f} ms ({max(t) * 1e3:6.2f})  {statistics.median(t) / base:5.2f}x ps")
    print(f"  reading every /proc/PID/stat (python)       {reads['stat'] * 1e3:7.2f} ms")
    print(f"  reading every /proc/PID/smaps_rollup        {reads['smaps_rollup'] * 1e3:7.2f} ms"
          f"  {reads['smaps_rollup'] / reads['stat']:5.2f}x stat")


if __name__ == "__main__":
    sys.exit(main())
