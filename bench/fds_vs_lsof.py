#!/usr/bin/env python3
"""kubectl-osl's fd table against lsof and ls -l, on one process, in one run.

    python3 bench/fds_vs_lsof.py [--fds 17000] [--runs 10]

Starts osl-testproc holding ~17,000 fds (35% files, 30% socketpair ends, 23% pipe
ends, 12% TCP connection ends, both ends of each connection in the process), then
times, alternating so noise hits all alike:
  kubectl-osl fds --local --pid N           (the default table: kind, target, sockets resolved)
  kubectl-osl fds --local --pid N -o wide   (adds fdinfo: flags, offset, size, per-kind detail)
  kubectl-osl fds --local --pid N -o json   (everything)
  kubectl-osl diagnose --local --pid N      (the process's summary and findings, no blocked sample)
  lsof -n -P -p N
  ls -l /proc/N/fd                           (the readlink floor)
and prints medians of wall time and of CPU time (user + sys of the command and
its children), and the ratios against the goals.
"""
import argparse, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build():
    subprocess.run(["cargo", "build", "--release", "-q", "--bin", "kubectl-osl", "--bin", "osl-testproc"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release")


def time_cmd(argv):
    """Wall and CPU (user + sys) seconds of one run."""
    start = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv} failed")
    return wall, usage.ru_utime + usage.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fds", type=int, default=17000)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    bin_dir = build()
    proc = subprocess.Popen([os.path.join(bin_dir, "osl-testproc"), "many", str(args.fds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().startswith(b"ready")
        pid = proc.pid
        n = len(os.listdir(f"/proc/{pid}/fd"))
        osl = os.path.join(bin_dir, "kubectl-osl")
        cmds = {
            "osl fds (table)": [osl, "fds", "--local", "--pid", str(pid)],
            "osl fds -o wide": [osl, "fds", "--local", "--pid", str(pid), "-o", "wide"],
            "osl fds -o json": [osl, "fds", "--local", "--pid", str(pid), "-o", "json"],
            "osl diagnose --pid": [osl, "diagnose", "--local", "--pid", str(pid), "--blocked", "0s"],
            "lsof -n -P -p": ["lsof", "-n", "-P", "-p", str(pid)],
            "ls -l /proc/N/fd": ["ls", "-l", f"/proc/{pid}/fd"],
        }
        for argv in cmds.values():
            time_cmd(argv)
        times = {k: [] for k in cmds}
        for _ in range(args.runs):
            for k, argv in cmds.items():
                times[k].append(time_cmd(argv))
    finally:
        proc.kill()
        proc.wait()
    wall = {k: statistics.median(w for w, _ in t) for k, t in times.items()}
    cpu = {k: statistics.median(c for _, c in t) for k, t in times.items()}
    print(f"{n} fds, {args.runs} runs each, medians: wall (min), CPU user+sys")
    for k, t in times.items():
        print(f"  {k:<22} {wall[k] * 1e3:8.1f} ms ({min(w for w, _ in t) * 1e3:7.1f})  CPU {cpu[k] * 1e3:7.1f} ms")
    lsof, floor = wall["lsof -n -P -p"], wall["ls -l /proc/N/fd"]
    table, wide = wall["osl fds (table)"], wall["osl fds -o wide"]
    print(f"  lsof / osl table      {lsof / table:5.2f}x  (goal >= 3x)")
    print(f"  osl table / ls -l     {table / floor:5.2f}x  (goal <= 1.3x)")
    print(f"  lsof / osl -o wide    {lsof / wide:5.2f}x  (goal >= 2x)")
    print(f"  CPU osl table / lsof  {cpu['osl fds (table)'] / cpu['lsof -n -P -p']:5.2f}   (goal <= 0.6)")
    print(f"  CPU osl wide / lsof   {cpu['osl fds -o wide'] / cpu['lsof -n -P -p']:5.2f}")


if __name__ == "__main__":
    sys.exit(main())
