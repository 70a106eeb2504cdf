#!/usr/bin/env python3
"""The agent under load: latency, errors, and whether its memory keeps growing.

    python3 bench/load.py                 # 50 clients x 2,000 Diagnose calls (two rounds of 1,000)
    python3 bench/load.py --churn         # 20 clients x 200 calls while 200 processes a second come and go

Builds the release agent and CLI (one `cargo build --release -p osl-agent -p
osl-cli`), starts `osl-agent serve --listen 127.0.0.1:0 --no-watch` with ~20
idle sleepers around so Diagnose has work, and drives it over loopback with the
cli's `load` example (tonic; one connection per client), which times every call.

Default mode: each client's --calls are made in two identical rounds. The
agent's VmRSS is sampled at rest, after round 1 and after round 2: growth from
round 1 to round 2 is a leak, growth before round 1 is warm-up (allocator
arenas, buffers). Passes when no call
failed and RSS grew by at most --max-rss-growth-pct (10%) between the rounds.

--churn: a shell loop starts and ends short `sleep` processes continuously
(--churn-rate, 200 a second) while fewer calls run; every call must succeed,
however many processes vanish while the agent reads them.

Also printed: RSS after --idle seconds with no load (the runtime's idle
blocking threads have exited by then), i.e. what the agent keeps after a burst.

Cost: with at most 4 requests reading /proc at once, a 2-core machine answers
~50 Diagnose calls/s of ~90 processes: the default 100,000 calls take ~35
minutes there; `--calls 80` (4,000) ~2 minutes, --churn ~2 minutes.

Exit status: 0 when the verdict is PASS, 1 otherwise.
"""
import argparse, json, os, re, signal, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.path.join(ROOT, "target", "release", "osl-agent")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def build():
    subprocess.run(["cargo", "build", "--release", "-p", "osl-agent", "-p", "osl-cli"], cwd=ROOT, check=True)


class Agent:
    """osl-agent serve on a free loopback port; its log is kept for the report."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [AGENT, "serve", "--listen", "127.0.0.1:0", "--no-watch", "--allow-pod-peers"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "NO_COLOR": "1"}, text=True, errors="replace")
        self.log = []
        self.addr = None
        ready = threading.Event()

        def drain():  # keep reading, or the agent blocks on a full pipe
            for line in self.proc.stderr:
                self.log.append(line.rstrip("\n"))
                m = re.search(r"serving osl\.v1\.Diagnostics.*listen=(\S+)", line)
                if m and not self.addr:
                    self.addr = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(30) or not self.addr:
            self.stop()
            sys.exit("the agent did not log 'serving osl.v1.Diagnostics listen=…':\n" + "\n".join(self.log[-10:]))

    def sample(self):
        """VmRSS, VmHWM, threads, open fds and CPU seconds of the agent, now."""
        pid = self.proc.pid
        status = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                status[key] = value.strip()
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return {
            "rss_kib": int(status["VmRSS"].split()[0]),
            "hwm_kib": int(status["VmHWM"].split()[0]),
            "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            # utime and stime are fields 14 and 15; fields[0] is field 3 (state).
            "cpu_s": (int(fields[11]) + int(fields[12])) / CLK_TCK,
        }

    def problems(self):
        """Log lines at WARN or ERROR."""
        return [l for l in self.log if re.search(r"\b(WARN|ERROR)\b", l)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def load(addr, clients, calls, blocked_msec=0):
    """One round of the load example; its JSON report."""
    out = subprocess.run(
        ["cargo", "run", "--release", "-q", "-p", "osl-cli", "--example", "load", "--",
         "--agent", addr, "--clients", str(clients), "--calls", str(calls),
         "--blocked-sample-msec", str(blocked_msec)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        sys.exit(f"the load example printed no JSON (exit {out.returncode}): {out.stdout[:500]!r}")


def fmt_round(name, r):
    ms = lambda v: "-" if v is None else f"{v:.2f} ms"
    blocked = f", blocked sample {r['blocked_sample_msec']} ms" if r["blocked_sample_msec"] else ""
    line = (f"  {name}: {r['total_calls']} calls ({r['clients']} clients x {r['calls_per_client']}, "
            f"{r['channel']} channels{blocked}), errors {r['errors']}, {r['calls_per_sec']:.0f} calls/s, "
            f"p50 {ms(r['p50_ms'])}, p99 {ms(r['p99_ms'])}, max {ms(r['max_ms'])}, "
            f"{r['processes_per_answer']} processes per answer")
    for e in r["error_samples"]:
        line += f"\n    {e['count']} x {e['error']}"
    return line


def fmt_sample(name, s):
    return (f"  {name:<16} RSS {s['rss_kib'] / 1024:7.1f} MiB  (peak {s['hwm_kib'] / 1024:.1f} MiB)  "
            f"threads {s['threads']:3d}  fds {s['fds']:4d}  CPU {s['cpu_s']:8.2f} s")


class Churn:
    """A shell loop keeping up `rate` short sleeps (10-90 ms) started a second; counts them.

    It catches up on its schedule (bash's EPOCHREALTIME) rather than sleeping a
    fixed tick, so a loaded machine slows it only when fork+exec itself cannot keep up.
    """

    def __init__(self, rate):
        script = (
            "n=0; t0=${EPOCHREALTIME/./}; trap 'echo $n; exit 0' TERM; "
            "while :; do now=${EPOCHREALTIME/./}; "
            f"due=$(( (now - t0) * {rate} / 1000000 )); "
            "while (( n < due )); do sleep 0.0$((RANDOM % 9 + 1)) & n=$((n + 1)); done; "
            "sleep 0.02; done")
        self.proc = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True)
        self.started = time.monotonic()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        secs = time.monotonic() - self.started
        n = int(out.strip() or 0)
        return n, secs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--churn", action="store_true", help="the process-churn check instead of the two rounds")
    ap.add_argument("--clients", type=int, help="default 50 (20 with --churn)")
    ap.add_argument("--calls", type=int, help="calls per client in all; default 2000 (200 with --churn)")
    ap.add_argument("--sleepers", type=int, default=20)
    ap.add_argument("--churn-rate", type=int, default=200, help="processes started a second (--churn)")
    ap.add_argument("--max-rss-growth-pct", type=float, default=10.0)
    ap.add_argument("--idle", type=float, default=15.0, help="seconds without load before the last RSS sample")
    ap.add_argument("--blocked-sample-msec", type=int, default=0,
                    help="each Diagnose also samples blocked threads this long, as kubectl osl diagnose does")
    args = ap.parse_args()
    clients = args.clients or (20 if args.churn else 50)
    calls = args.calls or (200 if args.churn else 2000)

    build()
    sleepers = [subprocess.Popen(["sleep", "3600"]) for _ in range(args.sleepers)]
    agent = None
    try:
        agent = Agent()
        time.sleep(1)  # let it settle (first fd sample)
        rest = agent.sample()
        print(f"agent pid {agent.proc.pid} on {agent.addr}, {args.sleepers} idle sleepers")
        if args.churn:
            churn = Churn(args.churn_rate)
            time.sleep(1)  # the churn is under way before the first call
            t = time.monotonic()
            r = load(agent.addr, clients, calls, args.blocked_sample_msec)
            load_secs = time.monotonic() - t
            started, secs = churn.stop()
            after = agent.sample()
            print("churn:")
            print(f"  {started} short processes started in {secs:.1f} s ({started / secs:.0f}/s) around "
                  f"{load_secs:.1f} s of load")
            print(fmt_round("load", r))
            print(fmt_sample("at rest", rest))
            print(fmt_sample("after churn", after))
            problems = agent.problems()
            print(f"  agent log: {len(problems)} WARN/ERROR line(s)" + "".join(f"\n    {l}" for l in problems[:5]))
            ok = r["errors"] == 0 and agent.proc.poll() is None
            print(f"verdict: {'PASS' if ok else 'FAIL'} (churn: {r['errors']} failed of {r['total_calls']} requests"
                  f"{'' if agent.proc.poll() is None else '; the agent died'})")
            return 0 if ok else 1

        rounds, samples = [], [("at rest", rest)]
        for i, n in ((1, calls // 2), (2, calls - calls // 2)):
            rounds.append(load(agent.addr, clients, n, args.blocked_sample_msec))
            time.sleep(1)  # connections closed, buffers returned
            samples.append((f"after round {i}", agent.sample()))
        time.sleep(max(0.0, args.idle - 1))
        idle = agent.sample()
        print("load:")
        for i, r in enumerate(rounds, 1):
            print(fmt_round(f"round {i}", r))
        print(f"  in all: {sum(r['total_calls'] for r in rounds)} calls ({clients} clients x {calls}), "
              f"errors {sum(r['errors'] for r in rounds)}, p99 {max(r['p99_ms'] or 0 for r in rounds):.2f} ms "
              f"(the higher round's)")
        for name, s in samples:
            print(fmt_sample(name, s))
        print(fmt_sample(f"idle {args.idle:.0f} s", idle))
        (_, s0), (_, s1), (_, s2) = samples
        for i, (a, b, r) in enumerate(((s0, s1, rounds[0]), (s1, s2, rounds[1])), 1):
            n = max(1, r["ok"])
            print(f"  round {i}: agent CPU {b['cpu_s'] - a['cpu_s']:.2f} s, {(b['cpu_s'] - a['cpu_s']) / n * 1e6:.0f} us per call")
        warmup = (s1["rss_kib"] - s0["rss_kib"]) / s0["rss_kib"] * 100
        growth = (s2["rss_kib"] - s1["rss_kib"]) / s1["rss_kib"] * 100
        problems = agent.problems()
        print(f"  agent log: {len(problems)} WARN/ERROR line(s)" + "".join(f"\n    {l}" for l in problems[:5]))
        errors = sum(r["errors"] for r in rounds)
        alive = agent.proc.poll() is None
        ok = errors == 0 and growth <= args.max_rss_growth_pct and alive
        print(f"verdict: {'PASS' if ok else 'FAIL'} (errors {errors}; RSS {warmup:+.1f}% over round 1 (warm-up), "
              f"{growth:+.1f}% from round 1 to round 2, limit {args.max_rss_growth_pct:.0f}%"
              f"{'' if alive else '; the agent died'})")
        return 0 if ok else 1
    finally:
        if agent:
            agent.stop()
        for s in sleepers:
            s.kill()
            s.wait()


if __name__ == "__main__":
    sys.exit(main())
