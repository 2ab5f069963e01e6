#!/usr/bin/env python3
"""The test runner behind `make test` (and `make fuzz`).

Runs, in order: the include layout check (tools/check_layout.py, with its self-test), the hosted
cmocka unit tests (built with ASan/UBSan), the libFuzzer harnesses for a bounded time each, and the
QEMU boot tests, which boot real images under OVMF and assert on what the guest prints and on its
exit status. Every cmocka test case, fuzz run and boot counts as one test.
The last line printed is "N passed, N failed"; the exit status is 0 only if nothing failed.
"""
import argparse
import glob
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import qemu_run  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# name, command line, CPUs, expected exit status ("raw:N": QEMU's own exit code), patterns that must
# appear, patterns that must not
BOOT_TESTS = [
    ("hello: platform report and self-checks on 2 CPUs", "", 2, 0,
     [r"cpus\s+2 online", r"Hyper-V not present", r"Hyper-V layer: none \(neither Hyper-V nor hvsim\)", r"acpi\s+RSDP revision 2",
      r"acpi madt\s+2 CPUs, 1 IOAPICs", r"framebuffer\s+\d+x\d+", r"memory\s+\d+ MiB managed",
      r"boot time\s+efi_main to main: \d+ TSC cycles, \d+ us", r"EXCEPTION \(expected, caught by probe\)",
      r"hello: (\d+) checks passed, 0 failed", r"power: off with status 0"],
     [r"FAIL ", r"PANIC", r"FATAL"]),
    ("hello: 4 CPUs started and used", "", 4, 0,
     [r"cpus\s+4 online", r"thread ran on cpu3 at PASSIVE", r"DPC targeted at cpu3 ran there",
      r"hello: \d+ checks passed, 0 failed"], [r"FAIL ", r"did not start"]),
    ("cmdline: maxcpus=1 leaves the other CPU off", "maxcpus=1", 2, 0,
     [r"cpus\s+1 online", r"left off \(limit of 1 CPUs\)", r"hello: \d+ checks passed, 0 failed"], [r"FAIL "]),
    ("cmdline: malformed and unknown words are named, defaults used",
     "bogus loglevel=loud =x unknownkey=1 maxcpus=99999 selftest=0", 2, 0,
     [r"word 'bogus' ignored: expected key=value", r"'loglevel=loud': expected one of error\|warn\|info\|debug",
      r"word '=x' ignored: empty key", r"word 'unknownkey=1' ignored: unknown key 'unknownkey'",
      r"'maxcpus=99999': outside 1\.\.64; using 64", r"cpus\s+2 online"], [r"PANIC"]),
    ("power-off through ACPI S5 (FADT PM1 control, \\_S5 from the DSDT) ends QEMU with exit code 0",
     "selftest=0 poweroff=acpi", 2, "raw:0", [r"power: off with status 0"], [r"did not take effect"]),
    ("fault: null pointer read is reported as a page fault", "selftest=0 fault=pf", 2, 0x7F,
     [r"FATAL EXCEPTION: vector 14, page fault \(#PF\)", r"fault address \(CR2\) 0000000000000008",
      r"rip ffffffff8", r"backtrace", r"#1 ffffffff8", r"PANIC on cpu 0", r"power: off with status 127"], []),
    ("fault: invalid opcode", "selftest=0 fault=ud", 2, 0x7F,
     [r"FATAL EXCEPTION: vector 6, invalid opcode \(#UD\)", r"backtrace"], []),
    ("fault: non-canonical address is a general protection fault", "selftest=0 fault=gp", 2, 0x7F,
     [r"FATAL EXCEPTION: vector 13, general protection \(#GP\)"], []),
    ("fault: divide by zero", "selftest=0 fault=de", 2, 0x7F,
     [r"FATAL EXCEPTION: vector 0, divide error \(#DE\)"], []),
    ("fault: stack overflow hits the guard page, reported from the double-fault stack",
     "selftest=0 fault=stack", 2, 0x7F,
     [r"FATAL EXCEPTION: vector 8, double fault \(#DF\)", r"stack overflow"], []),
    ("fault: blocking at DISPATCH is caught by the IRQL assertion", "selftest=0 fault=irql", 2, 0x7F,
     [r"IRQL violation: thread_sleep_ns at IRQL 2 \(allowed: 0\)"], []),
    ("fault: a failed assert panics with its condition", "selftest=0 fault=assert", 2, 0x7F,
     [r"assertion failed: what\[0\] == 'x'"], []),
    # The Hyper-V layer against the hvsim process (issue 3).
    ("hvprobe against hvsim on 2 CPUs: SynIC on both, messages and events both ways, pending/EOM, retries, "
     "bad input dropped, timer interrupts, clean power-off", "", 2, 0,
     [r"hv: hvsim answered on COM2", r"hv: cpu0 is VP 0: SynIC on", r"hv: cpu1 is VP 1: SynIC on",
      r"ok    cpu0: message round trips on 14 of 14 SINTs", r"ok    cpu1: message round trips on 14 of 14 SINTs",
      r"ok    cpu1: event flags on 14 of 14 SINTs", r"ok    cpu1: 8 messages into one slot",
      r"ok    three INSUFFICIENT_BUFFERS answers are retried", r"ok    a message claiming 241 payload bytes",
      r"ok    direct timer interrupts arrived", r"hypercall \(fast, rejected\)\s+n=200",
      r"hvprobe: \d+ checks passed, 0 failed", r"hv: synthetic timers, SynIC and hypercall page disabled",
      r"hvsim: exit:"], [r"FAIL ", r"PANIC"], {"app": "hvprobe", "hvsim": []}),
    ("hvprobe: synthetic timer in message mode drives the kernel's timers", "stimer=message rounds=20", 2, 0,
     [r"synthetic timer 0 in message mode", r"ok    timer messages arrived on SINT4",
      r"ok    a 20 ms kernel timer fired", r"hvprobe: \d+ checks passed, 0 failed"], [r"FAIL ", r"PANIC"],
     {"app": "hvprobe", "hvsim": []}),
    ("hvprobe: a host without direct timers gets message mode", "rounds=20", 2, 0,
     [r"host offers no direct mode", r"ok    timer messages arrived on SINT4", r"hvprobe: \d+ checks passed, 0 failed"],
     [r"FAIL ", r"PANIC"], {"app": "hvprobe", "hvsim": ["--no-direct-stimer"]}),
    ("hvprobe: 4 CPUs, each with its SynIC", "rounds=20", 4, 0,
     [r"hv: cpu3 is VP 3: SynIC on", r"ok    cpu3: message round trips on 14 of 14 SINTs",
      r"hvprobe: \d+ checks passed, 0 failed"], [r"FAIL ", r"PANIC"], {"app": "hvprobe", "hvsim": []}),
    ("hvprobe: a partition without AccessSynicRegs is refused by name", "", 2, 4,
     [r"lacks the AccessSynicRegs privilege, which the Hyper-V layer needs: refusing",
      r"hvprobe: the Hyper-V layer did not come up"], [r"PANIC"],
     {"app": "hvprobe", "hvsim": ["--deny-privilege", "synic"]}),
    ("a crash of hvsim while the guest runs stops QEMU and is reported (status 120), not hung on", "", 2, 120,
     [r"hvsim: simulated crash on kick 40", r"qemu_run: hvsim exited with status 70 while the guest ran: stopping QEMU"],
     [r"PANIC"], {"app": "hvprobe", "hvsim": ["--crash-after-kicks", "40"]}),
    # VMBus against hvsim's VMBus server (issue 4).
    ("vmbusprobe against hvsim: lists the offers, opens and closes a channel on each, sub-channels, signals both "
     "ways, MODIFYCHANNEL, kmcl on both ends (echo, 10,000 packets, GPA direct), UNLOAD at power-off", "", 2, 0,
     [r"vmbus: connected: version 6\.0", r"relid sub mon", r"netvsc ", r"storvsc ", r"heartbeat ", r"shutdown ",
      r"timesync ", r"kvp ", r"hvsim-test ", r"sub-channel 2 \(relid \d+\) opened and closed", r"MODIFYCHANNEL moved",
      r"100 in-band echoes came back", r"10,000 host packets arrived in order", r"GPA direct: the host read",
      r"vmbusprobe: \d+ checks passed, 0 failed", r"vmbus: unloaded", r"hvsim: exit:"],
     [r"FAIL ", r"PANIC", r"host did not answer"], {"app": "vmbusprobe", "hvsim": []}),
    ("vmbusprobe against a WS2016 host (VMBus 4.0): falls back to connection id 1 and lands on 4.0", "", 2, 0,
     [r"no multiclient connection id \(4\): using connection id 1", r"vmbus: connected: version 4\.0",
      r"vmbusprobe: \d+ checks passed, 0 failed"], [r"FAIL ", r"PANIC"],
     {"app": "vmbusprobe", "hvsim": ["--vmbus-version", "4.0"]}),
    ("vmbusprobe against a host with hazards: interrupts before the open result, data sent at open, bad offers, "
     "unasked answers", "",
     2, 0,
     [r"relid out of range 1\.\.2047", r"duplicate relid", r"that nobody asked for",
      r"vmbusprobe: \d+ checks passed, 0 failed"], [r"FAIL ", r"PANIC"],
     {"app": "vmbusprobe", "hvsim": ["--vmbus-hazard", "irq-before-open-result", "--vmbus-hazard", "bad-offers",
                                     "--vmbus-hazard", "unasked-responses", "--vmbus-hazard", "send-on-open"]}),
    ("hvprobe without Hyper-V or hvsim exits with a clear error", "", 2, 3,
     [r"no Hyper-V .* and no hvsim", r"hvprobe: needs Hyper-V or hvsim and found neither"], [r"PANIC"],
     {"app": "hvprobe"}),
    # hello links no VMBus (apps/hello/app.mk); the bus's version is vmbusprobe's test above.
    ("hello beside hvsim reports the hvsim binding and still passes", "", 2, 0,
     [r"Hyper-V layer: hvsim", r"hello: \d+ checks passed, 0 failed"], [r"FAIL ", r"PANIC", r"vmbus:"], {"hvsim": []}),
]


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def add(self, ok, name, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS  {name}")
        else:
            self.failed += 1
            self.failures.append(name)
            print(f"FAIL  {name}" + (f"\n      {detail}" if detail else ""))
        sys.stdout.flush()


def run_layout(res):
    """The folder rules of the includes (tools/check_layout.py), after its self-test."""
    check = os.path.join(HERE, "..", "tools", "check_layout.py")
    for args, name in ((["--self-test"], "layout: the checker reports each rule's bad include in a test tree"),
                       ([], "layout: no include crosses a folder's line")):
        p = subprocess.run([sys.executable, check] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        res.add(p.returncode == 0, name, p.stdout.strip().replace("\n", "\n      "))


def run_unit(build, res):
    for exe in sorted(glob.glob(os.path.join(build, "test", "test_*"))):
        name = os.path.basename(exe)
        env = dict(os.environ)
        if name.endswith("_tsan"):
            # The hosted interrupt model runs guest code in a signal handler on purpose (interrupts
            # arrive anywhere), so TSan's signal-safety report is off; races are still reported.
            env["TSAN_OPTIONS"] = "report_signal_unsafe=0 halt_on_error=1"
        p = subprocess.run([exe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, env=env)
        out = p.stdout
        ok_cases = re.findall(r"^\[\s+OK\s+\] (\S+)", out, re.M)
        bad_cases = re.findall(r"^\[\s+(?:FAILED|ERROR)\s+\] (\S+)$", out, re.M)
        bad_cases = [c for c in bad_cases if not c.isdigit()]
        for c in ok_cases:
            res.add(True, f"unit {name}: {c}")
        for c in dict.fromkeys(bad_cases):
            res.add(False, f"unit {name}: {c}", "see the output above")
        if p.returncode != 0 or (not ok_cases and not bad_cases):
            # cmocka's lines and the tests' own, without hvsim's chatter, so the failed assertion
            # (file:line) is in what CI shows.
            lines = [l for l in out.splitlines() if not l.startswith(("hvsim: ", "[ RUN", "[       OK"))]
            print("\n".join(lines)[-6000:])
            if not bad_cases:
                res.add(False, f"unit {name}", f"exit status {p.returncode} (crash or sanitizer report)")


def run_sim(build, res, seeds):
    """The seeded system simulation (test/dsim/, docs/TESTING.md): `seeds` seeds, then a replay check."""
    exe = os.path.join(build, "test", "sim_test")
    if not os.path.exists(exe):
        return
    p = subprocess.run([exe, "--seeds", f"0:{seeds}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=3600)
    for m in re.finditer(r"^seed (\d+): FAILED: (.*)$", p.stdout, re.M):
        res.add(False, f"sim seed {m.group(1)}", m.group(2))
    summary = re.search(r"^sim_test: (\d+ seeds.*)$", p.stdout, re.M)
    res.add(p.returncode == 0, f"sim: {summary.group(1) if summary else 'no summary (crash?)'}",
            "" if p.returncode == 0 else p.stdout[-6000:])
    p = subprocess.run([exe, "--seeds", "0:60", "--replay-check"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=600)
    summary = re.search(r"^sim_test: (replay: .*)$", p.stdout, re.M)
    res.add(p.returncode == 0, f"sim {summary.group(1) if summary else 'replay: no summary (crash?)'}",
            "" if p.returncode == 0 else p.stdout[-4000:])


def fuzz_report(out):
    """Executions, coverage (libFuzzer's cov: edges, ft: features) and the rate of one libFuzzer run,
    from its status lines and -print_final_stats=1 (None where the output lacks them)."""
    execs = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    status = re.findall(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)", out, re.M)
    last = status[-1] if status else None
    return {
        "execs": int(execs.group(1)) if execs else (int(last[0]) if last else None),
        "cov": int(last[1]) if last else None,
        "ft": int(last[2]) if last else None,
    }


def run_fuzz(build, res, seconds):
    for exe in sorted(glob.glob(os.path.join(build, "fuzz", "fuzz_*"))):
        name = os.path.basename(exe)[len("fuzz_"):]
        seeds = os.path.join(HERE, "fuzz", "corpus", name)
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as corpus:
            if os.path.isdir(seeds):
                for f in os.listdir(seeds):
                    shutil.copy(os.path.join(seeds, f), corpus)
            t0 = time.monotonic()
            p = subprocess.run([exe, f"-max_total_time={seconds}", "-print_final_stats=1", corpus],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            r = fuzz_report(p.stdout)
            detail = p.stdout[-3000:] if p.returncode else ""
            show = lambda v: "?" if v is None else str(v)
            res.add(p.returncode == 0,
                    f"fuzz {name}: {show(r['execs'])} executions, cov {show(r['cov'])}, ft {show(r['ft'])} "
                    f"in {time.monotonic() - t0:.0f} s", detail)


def run_boot(build, res, only=None):
    for name, cmdline, smp, want, must, must_not, *opt in BOOT_TESTS:
        if only and only not in name:
            continue
        opt = opt[0] if opt else {}
        disk = os.path.join(build, opt.get("app", "hello"), "disk.img")
        hvsim = os.path.join(build, "sim", "hvsim") if "hvsim" in opt else None
        t0 = time.monotonic()
        raw = isinstance(want, str) and want.startswith("raw:")
        if raw:
            want = int(want[4:])
        try:
            status, out = qemu_run.run(disk, smp=smp, cmdline=cmdline, timeout=240, quiet=True, raw=raw,
                                       hvsim=hvsim, hvsim_args=opt.get("hvsim", []))
        except RuntimeError as e:
            res.add(False, f"boot {name}", str(e))
            continue
        took = time.monotonic() - t0
        problems = []
        if status != want:
            problems.append(f"exit status {status}, want {want}")
        # hvsim's log lines share the console with the guest's serial output and may land inside a
        # guest line ("0 faile" + an hvsim line + "d"): a pattern may match either stream.
        guest_only = re.sub(r"hvsim: [^\n]*\n", "", out)
        for pat in must:
            if not re.search(pat, out) and not re.search(pat, guest_only):
                problems.append(f"missing /{pat}/")
        for pat in must_not:
            m = re.search(pat, out)
            if m:
                problems.append(f"unexpected /{pat}/: {out[max(0, m.start() - 200):m.end() + 200]!r}")
        log = os.path.join(build, "boot-logs", re.sub(r"[^a-z0-9]+", "-", name.lower())[:60] + ".log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "w") as f:
            f.write(out)
        res.add(not problems, f"boot {name} ({took:.1f} s)", "; ".join(problems) + f" (log: {log})")


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(output, pattern, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if re.search(pattern, output()):
            return True
        time.sleep(0.1)
    return False


def control(port, command, seconds=60):
    """One command to hvsim's network control port (sim/README.md); its one-line answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(seconds)
        s.sendto(command.encode(), ("127.0.0.1", port))
        return s.recv(4096).decode("utf-8", "replace").strip()


def echo_many(port, count, sizes, window=16, timeout=10.0, seed=1):
    """Sends `count` datagrams of the given sizes (in turn, shuffled) to 127.0.0.1:port with up to
    `window` outstanding; every reply must come back byte for byte. Returns (replies, problems)."""
    rng = random.Random(seed)
    order = [sizes[i % len(sizes)] for i in range(count)]
    rng.shuffle(order)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        outstanding, sent, got, problems = {}, 0, 0, []
        while got < count and not problems:
            while sent < count and len(outstanding) < window:
                size = order[sent]
                body = sent.to_bytes(4, "little") + bytes((sent * 7 + k) & 0xFF for k in range(max(size - 4, 0)))
                body = body[:size] if size < 4 else body
                outstanding[sent] = body
                s.sendto(body, ("127.0.0.1", port))
                sent += 1
            try:
                data = s.recv(65536)
            except socket.timeout:
                problems.append(f"no reply in {timeout} s: {len(outstanding)} outstanding, {got} of {count} back")
                break
            seq = int.from_bytes(data[:4], "little") if len(data) >= 4 else None
            want = outstanding.pop(seq, None) if seq is not None else None
            if want is None:  # a datagram shorter than 4 bytes, or an unknown one
                match = [k for k, v in outstanding.items() if v == data]
                if not match:
                    problems.append(f"unexpected reply of {len(data)} bytes")
                    break
                outstanding.pop(match[0])
            elif data != want:
                problems.append(f"datagram {seq}: reply differs ({len(data)} bytes, sent {len(want)})")
            got += 1
        return got, problems


def run_net(build, res):
    """udp-echo under QEMU against hvsim's netvsp and gateway: real datagrams from this machine's
    sockets through 127.0.0.1 to the guest and back, ping, the link going down and up."""
    disk = os.path.join(build, "udp-echo", "disk.img")
    fwd, quit_fwd, ctl = free_udp_port(), free_udp_port(), free_udp_port()
    hvsim = os.path.join(build, "sim", "hvsim")
    args = ["--net-forward", f"{fwd}:7", "--net-forward", f"{quit_fwd}:9", "--net-control", str(ctl)]
    checks = {}

    def drive(output):
        got, problems = echo_many(fwd, 10000, [1, 7, 18, 64, 200, 512, 1000, 1400, 1472])
        checks["echo"] = (got == 10000 and not problems, f"{got} of 10000 replies; " + "; ".join(problems))
        answer = control(ctl, "ping 20")
        m = re.search(r"(\d+) sent, (\d+) received", answer)
        checks["ping"] = (bool(m) and m.group(1) == "20" and m.group(2) == "20", answer)
        link = []
        link.append(control(ctl, "link down"))
        down = wait_for(output, r"udp-echo: link down", 30)
        _, lost = echo_many(fwd, 1, [64], window=1, timeout=2)
        link.append(control(ctl, "link up"))
        up = wait_for(output, r"udp-echo: link up", 30)
        after, after_problems = echo_many(fwd, 100, [64, 1400])
        checks["link"] = (down and bool(lost) and up and after == 100 and not after_problems,
                          f"down seen {down}, datagram while down lost {bool(lost)}, up seen {up}, "
                          f"{after} of 100 after; {link}; {after_problems}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"quit", ("127.0.0.1", quit_fwd))
        return True

    result = {}
    t0 = time.monotonic()
    try:
        status, out = qemu_run.run(disk, smp=2, cmdline="quit_port=9 report=0 keepalive=1", timeout=600, quiet=True,
                                   hvsim=hvsim, hvsim_args=args,
                                   driver=(r"udp-echo: address \S+", drive, result))
    except RuntimeError as e:
        res.add(False, "boot udp-echo against hvsim's netvsp", str(e))
        return
    took = time.monotonic() - t0
    log = os.path.join(build, "boot-logs", "udp-echo-net.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "w") as f:
        f.write(out)
    boot_ok = status == 0 and re.search(r"udp-echo: address 10\.0\.2\.15/24 gateway 10\.0\.2\.2 \(dhcp\)", out) \
        and re.search(r"udp-echo: exit: rx \d+ frames", out) and not re.search(r"PANIC|FATAL", out) \
        and not re.search(r"did not answer a keep-alive", out) and re.search(r"keep-alives [1-9]", out)
    res.add(bool(boot_ok) and "error" not in result,
            f"boot udp-echo against hvsim's netvsp: NVSP handshake, DHCP address, keep-alives answered, clean exit "
            f"({took:.1f} s)",
            f"status {status}, driver error {result.get('error')!r} (log: {log})")
    names = {"echo": "net: 10,000 UDP datagrams of mixed sizes from a host socket, every reply byte for byte",
             "ping": "net: 20 pings from the gateway, 20 replies",
             "link": "net: link down (indication seen, datagrams not delivered) and up again (echo works)"}
    for key, name in names.items():
        ok, detail = checks.get(key, (False, "not run (the boot failed first)"))
        res.add(ok, name, f"{detail} (log: {log})")


def run_net_multiqueue(build, res):
    """udp-echo with two queues on two CPUs (vRSS sub-channel, RSS parameters) under QEMU: 16 host
    peers (16 flows through the gateway's port mapping), each echo checked; both queues must
    carry traffic."""
    disk = os.path.join(build, "udp-echo", "disk.img")
    fwd, quit_fwd = free_udp_port(), free_udp_port()
    hvsim = os.path.join(build, "sim", "hvsim")
    args = ["--net-forward", f"{fwd}:7", "--net-forward", f"{quit_fwd}:9", "--net-queues", "2"]
    checks = {}

    def drive(output):
        got, problems = 0, []
        for flow in range(16):
            n, p = echo_many(fwd, 100, [64, 700, 1400], window=8, seed=flow + 10)
            got += n
            problems += p
        checks["echo"] = (got == 1600 and not problems, f"{got} of 1600 replies; " + "; ".join(problems[:3]))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"quit", ("127.0.0.1", quit_fwd))
        return True

    result = {}
    t0 = time.monotonic()
    name = "net: two queues on two CPUs (sub-channel, RSS): 16 flows, 1,600 echoes, both queues used"
    booted = boot_logged(build, res, name, "udp-echo-multiqueue.log", disk, smp=2,
                         cmdline="quit_port=9 report=0 queues=2", timeout=300, quiet=True, hvsim=hvsim,
                         hvsim_args=args, driver=(r"udp-echo: address \S+", drive, result))
    if not booted:
        return
    status, out, log = booted
    ok, detail = checks.get("echo", (False, "not run (the boot failed first)"))
    m = re.search(r"udp-echo: exit: queues 0: cpu(\d+) (\d+) frames, 1: cpu(\d+) (\d+) frames", out)
    spread = bool(m) and int(m.group(2)) > 0 and int(m.group(4)) > 0 and m.group(1) != m.group(3)
    rss = re.search(r"2 queues \(RSS\)", out) is not None
    res.add(ok and spread and rss and status == 0, f"{name} ({time.monotonic() - t0:.1f} s)",
            f"{detail}; queues line {m.group(0) if m else None!r}; RSS taken {rss}; status {status} (log: {log})")


def tap_available(name):
    """Whether this process may create a TAP device (root or CAP_NET_ADMIN, /dev/net/tun)."""
    import fcntl
    import struct
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", name.encode(), 0x0002 | 0x1000))  # TUNSETIFF, TAP|NO_PI
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def boot_logged(build, res, name, log_name, disk, **run_args):
    """Boots disk (qemu_run.run with run_args) and keeps what it printed in build/boot-logs/log_name.
    Returns (status, output, log path), or None when the boot itself failed, which is then recorded
    as the failed test `name`."""
    try:
        status, out = qemu_run.run(disk, **run_args)
    except RuntimeError as e:
        res.add(False, name, str(e))
        return None
    log = os.path.join(build, "boot-logs", log_name)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "w") as f:
        f.write(out)
    return status, out, log


def run_net_tap(build, res):
    """udp-echo with hvsim in TAP mode: the Linux host's own network stack (ARP, UDP) talks to the
    guest through a TAP device instead of the user-mode gateway. Needs root; skipped (and said so)
    without it."""
    ifname = f"hvrt{os.getpid() % 100000}"
    name = "net: TAP mode: the host's own stack reaches the guest (ARP, 1,000 UDP echoes byte for byte)"
    if shutil.which("ip") is None or not tap_available(ifname):
        print(f"SKIP  {name} (no TAP device: needs root and /dev/net/tun)")
        return
    disk = os.path.join(build, "udp-echo", "disk.img")
    hvsim = os.path.join(build, "sim", "hvsim")
    checks = {}

    def drive(output):
        for cmd in (["ip", "link", "set", ifname, "up"], ["ip", "addr", "add", "10.0.3.1/24", "dev", ifname]):
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode:
                checks["tap"] = (False, f"{' '.join(cmd)}: {p.stdout.strip()}")
                return False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("10.0.3.1", 0))
            s.settimeout(10)
            problems, got = [], 0
            for i in range(1000):
                body = i.to_bytes(4, "little") + bytes((i * 3 + k) & 0xFF for k in range(i % 1400))
                s.sendto(body, ("10.0.3.2", 7))
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    problems.append(f"no echo for datagram {i}")
                    break
                if data != body:
                    problems.append(f"datagram {i}: echo differs")
                    break
                got += 1
            checks["tap"] = (got == 1000 and not problems, f"{got} of 1000 echoes; " + "; ".join(problems))
            s.sendto(b"quit", ("10.0.3.2", 9))
        return True

    result = {}
    t0 = time.monotonic()
    booted = boot_logged(build, res, name, "udp-echo-tap.log", disk, smp=2,
                         cmdline="ip=10.0.3.2/24 quit_port=9 report=0", timeout=300, quiet=True, hvsim=hvsim,
                         hvsim_args=["--net-tap", ifname], driver=(r"udp-echo: address \S+", drive, result))
    if not booted:
        return
    status, out, log = booted
    ok, detail = checks.get("tap", (False, "not run (the boot failed first)"))
    res.add(ok and status == 0 and "error" not in result, f"{name} ({time.monotonic() - t0:.1f} s)",
            f"{detail}; status {status}; driver error {result.get('error')!r} (log: {log})")


def run_vhdx(build, res):
    """The Hyper-V disk (make vhdx) holds exactly the bytes of the raw image QEMU boots."""
    raw = os.path.join(build, "hello", "disk.img")
    vhdx = os.path.join(build, "hello", "hello.vhdx")
    p = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vhdx", raw, vhdx], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    info = subprocess.run(["qemu-img", "info", vhdx], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ok = p.returncode == 0 and "file format: vhdx" in info.stdout
    res.add(ok, "image: the VHDX for Hyper-V is a valid VHDX identical to the booted raw disk",
            p.stdout.strip() + " " + info.stdout.strip())


def run_screen(build, res):
    """The framebuffer console, read back from a screendump: the panic report must be on screen."""
    sys.path.insert(0, os.path.join(HERE, "boot"))
    import screen
    disk = os.path.join(build, "hello", "disk.img")
    ppm = os.path.join(build, "boot-logs", "screen-panic.ppm")
    os.makedirs(os.path.dirname(ppm), exist_ok=True)
    if os.path.exists(ppm):
        os.remove(ppm)
    t0 = time.monotonic()
    status, out = qemu_run.run(disk, smp=2, cmdline="selftest=0 fault=panic panic=halt", timeout=240, quiet=True,
                               screendump=(r"\*\*\* system halted", ppm))
    problems = []
    text = ""
    if status != 0:
        problems.append(f"no screendump (status {status})")
    else:
        text = screen.screen_text(ppm)
        with open(ppm[:-4] + ".txt", "w") as f:
            f.write(text)
        for want in ["hvrt: a unikernel runtime for Hyper-V; application 'hello'", "*** PANIC on cpu 0 (thread main): deliberate panic from the command line",
                     "*** system halted", "== platform ==", "hello: triggering fault 'panic' on purpose"]:
            if want not in text:
                problems.append(f"screen lacks {want!r}")
    res.add(not problems, f"boot framebuffer console shows the panic report, read back from a screendump "
            f"({time.monotonic() - t0:.1f} s)", "; ".join(problems) + f" (screen text: {ppm[:-4]}.txt)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--only", choices=["layout", "unit", "sim", "fuzz", "boot"], default=None)
    ap.add_argument("--sim-seeds", type=int, default=3000)
    ap.add_argument("--fuzz-seconds", type=int, default=10)
    ap.add_argument("--boot-filter", default=None)
    args = ap.parse_args()
    res = Results()
    t0 = time.monotonic()
    if args.only in (None, "layout", "unit"):
        run_layout(res)
    if args.only in (None, "unit"):
        run_unit(args.build, res)
    if args.only in (None, "unit", "sim"):
        run_sim(args.build, res, args.sim_seeds)
    if args.only in (None, "fuzz"):
        run_fuzz(args.build, res, args.fuzz_seconds)
    if args.only in (None, "boot"):
        run_vhdx(args.build, res)
        run_boot(args.build, res, args.boot_filter)
        if not args.boot_filter or "net" in args.boot_filter:
            run_net(args.build, res)
            run_net_multiqueue(args.build, res)
            run_net_tap(args.build, res)
        if not args.boot_filter or "screen" in args.boot_filter:
            run_screen(args.build, res)
    print(f"\ntest suite took {time.monotonic() - t0:.0f} s")
    if res.failures:
        print("failed:\n  " + "\n  ".join(res.failures))
    print(f"{res.passed} passed, {res.failed} failed")
    sys.exit(1 if res.failed else 0)


if __name__ == "__main__":
    main()
