"""python -m benchmarks.under_load [--busy N] [--repeat K] [--max-seconds S] -- COMMAND ...

Runs COMMAND while N CPU-bound processes keep the cores busy, the state of a shared CI runner or an
instructor's laptop, and prints how long it took and how it ended. The busy processes are started
and stopped by this command: each also stops by itself after --max-seconds, or as soon as this
command is gone, so a killed run leaves nothing spinning. Exit status: that of the last failing
run of COMMAND, else 0; 2 on bad usage.

    python -m benchmarks.under_load -- python -m grader --impl reference
    python -m benchmarks.under_load --repeat 3 -- python -m grader --impl reference
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

BUSY = ("import os, time\n"
        "parent, deadline = os.getppid(), time.monotonic() + {seconds}\n"
        "while time.monotonic() < deadline and os.getppid() == parent:\n"
        "    for _ in range(100_000): pass\n")


def start_busy(count: int, seconds: float) -> list[subprocess.Popen]:
    """``count`` processes that spin on a CPU until ``seconds`` pass or this process is gone."""
    code = BUSY.format(seconds=seconds)
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
    for process in processes:
        process.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.under_load", description=__doc__.split("\n\n")[1])
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes to run beside COMMAND (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="run COMMAND this many times in a row (default 1)")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="each busy process stops by itself after this long (default 3600)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.busy < 0 or args.repeat < 1 or args.max_seconds <= 0:
        print("usage: python -m benchmarks.under_load [--busy N] [--repeat K] -- COMMAND ...", file=sys.stderr)
        return 2
    status = 0
    busy = start_busy(args.busy, args.max_seconds)
    try:
        for run in range(1, args.repeat + 1):
            started = time.perf_counter()
            code = subprocess.run(command).returncode
            seconds = time.perf_counter() - started
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
            print(f"under load ({args.busy} busy processes), run {run}/{args.repeat}: exit {code} after "
                  f"{seconds:.1f} s (load average {load})", flush=True)
            status = code or status
    finally:
        stop(busy)
    return status


if __name__ == "__main__":
    sys.exit(main())
