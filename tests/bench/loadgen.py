"""Load for the HTTP benches: ``wrk --latency`` over a Lua script that rotates through the same
tokens for every server, and the server's CPU time read from ``/proc`` (process and children).

A ``Target`` says how one server takes a token: a ``GET`` with ``Authorization: Bearer`` (Skydd's
forward-auth, oauth2-proxy's ``/oauth2/auth``) or a ``POST`` of ``{"input": {"token": …}}``
(Open Policy Agent's data API).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class Target:
    name: str
    pid: int
    url: str  # scheme://host:port
    path: str
    post_input: bool = False  # POST {"input": {"token": …}} instead of GET with a bearer header


@dataclass(frozen=True)
class Result:
    target: str
    connections: int
    requests: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx plus socket errors
    cpu_ms_per_request: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) and its direct children."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        pids += [int(c) for c in children.read_text().split()]
    except OSError:
        pass
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def rss_kib(pid: int) -> int:
    """Resident set size of a process and its direct children, in KiB."""
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def lua_script(target: Target, tokens: list[str], folder: Path, *, rate_per_connection: float = 0,
               expected_latency_ms: float = 0.5) -> Path:
    """The wrk script for ``target``; with ``rate_per_connection`` each connection paces itself
    (``delay()`` before each request, less the expected response time, since wrk waits for the
    response too) so the whole run offers a fixed rate."""
    quoted = ",\n".join(f'"{t}"' for t in tokens)
    if target.post_input:
        build = ("  local body = '{\"input\":{\"token\":\"' .. t .. '\"}}'\n"
                 f"  return wrk.format('POST', '{target.path}', "
                 "{['Content-Type'] = 'application/json'}, body)\n")
    else:
        build = f"  return wrk.format('GET', '{target.path}', {{['Authorization'] = 'Bearer ' .. t}})\n"
    pacing = ""
    if rate_per_connection:
        pause = max(0.0, 1000.0 / rate_per_connection - expected_latency_ms)
        pacing = f"delay = function()\n  return {pause:.3f}\nend\n"
    script = folder / f"{target.name}-{len(tokens)}-{rate_per_connection:g}.lua"
    script.write_text("local tokens = {\n" + quoted + "\n}\nlocal i = 0\n"
                      "request = function()\n  i = i + 1\n  local t = tokens[(i % #tokens) + 1]\n"
                      + build + "end\n" + pacing)
    return script


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT[unit]


def parse_wrk(out: str) -> tuple[int, float, float, float, int]:
    """(requests, seconds, p50 ms, p99 ms, errors) from ``wrk --latency`` output."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|m|s)\b", out)
    if done is None:
        raise ValueError(f"unexpected wrk output: {out[-300:]!r}")
    p50 = re.search(r"^\s+50(?:\.000)?%\s+([\d.]+)(us|ms|s)", out, re.M)
    p99 = re.search(r"^\s+99(?:\.000)?%\s+([\d.]+)(us|ms|s)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    seconds = _ms(done.group(2), done.group(3)) / 1000
    return (int(done.group(1)), seconds, _ms(*p50.groups()) if p50 else float("nan"),
            _ms(*p99.groups()) if p99 else float("nan"), errors)


def run_wrk(wrk: str, target: Target, script: Path, connections: int, seconds: float) -> Result:
    threads = max(1, min(2, connections))
    cpu0 = cpu_seconds(target.pid)
    out = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                          "-s", str(script), target.url], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    cpu = cpu_seconds(target.pid) - cpu0
    requests, took, p50, p99, errors = parse_wrk(out)
    return Result(target.name, connections, requests, took, requests / took, p50, p99, errors,
                  cpu * 1000 / max(1, requests))
