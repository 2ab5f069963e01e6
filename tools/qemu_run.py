#!/usr/bin/env python3
"""Boot an hvrt disk image in QEMU (q35, OVMF, software emulation) with the serial console on stdout.

Exits with the guest's power-off status: QEMU's isa-debug-exit turns the status s the kernel writes
into the process exit code (s << 1) | 1, which is decoded here. A guest that powers off through
ACPI without writing a status counts as status 0 only if the log says it powered off cleanly;
a timeout is status 124, and any other QEMU failure is reported as it is.
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"


def with_cmdline(disk, cmdline, tmp):
    """A copy of the disk whose \\EFI\\BOOT\\cmdline.txt holds cmdline."""
    copy = os.path.join(tmp, "disk.img")
    shutil.copyfile(disk, copy)
    txt = os.path.join(tmp, "cmdline.txt")
    with open(txt, "w") as f:
        f.write(cmdline + "\n")
    subprocess.run(["mcopy", "-o", "-i", copy + "@@1048576", txt, "::/EFI/BOOT/cmdline.txt"], check=True)
    return copy


def qemu_command(disk, vars_fd, smp, mem, extra, monitor="none", machine="q35"):
    return [
        "qemu-system-x86_64",
        "-machine", machine, "-accel", "tcg", "-cpu", "max",
        "-smp", str(smp), "-m", mem,
        "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,file={vars_fd}",
        "-drive", f"file={disk},format=raw,media=disk",
        "-display", "none", "-monitor", monitor,
        "-serial", "stdio",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-no-reboot",
    ] + extra


def take_screendump(sock_path, ppm):
    """Asks QEMU's monitor for a screendump of the display (the GOP framebuffer) into ppm."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock_path)
        s.settimeout(10)
        s.sendall(f"screendump {ppm}\n".encode())
        deadline = time.monotonic() + 20
        last = -1
        while time.monotonic() < deadline:
            size = os.path.getsize(ppm) if os.path.exists(ppm) else -1
            if size > 0 and size == last:
                return True
            last = size
            time.sleep(0.5)
    return False


HVSIM_CRASHED = 120


def start_hvsim(hvsim, hvsim_args, tmp, mem, smp):
    """Starts the hvsim process (sim/hvsim_main.c) and waits for its socket. Returns (proc, qemu
    arguments that share guest RAM with it and put its doorbell on COM2, the memory file)."""
    mem_path = f"/dev/shm/hvrt-{os.getpid()}-{os.path.basename(tmp)}"
    sock = os.path.join(tmp, "hvsim.sock")
    cmd = [hvsim, "--mem", mem_path, "--mem-size", mem, "--socket", sock, "--vcpus", str(smp)] + list(hvsim_args)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if proc.poll() is not None:
            out = proc.stdout.read().decode("utf-8", "replace")
            raise RuntimeError(f"hvsim exited with status {proc.returncode} before listening:\n{out}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("hvsim did not create its socket in 10 s")
        time.sleep(0.02)
    qemu_args = [
        "-object", f"memory-backend-file,id=hvrt-ram,size={mem},mem-path={mem_path},share=on",
        "-chardev", f"socket,id=hvsimdb,path={sock}",
        "-serial", "chardev:hvsimdb",
    ]
    return proc, qemu_args, mem_path


def run(disk, smp=2, mem="256M", cmdline=None, timeout=None, log=None, quiet=False, extra=(), raw=False,
        screendump=None, hvsim=None, hvsim_args=(), driver=None):
    """Returns (status, output). status: the guest's exit status, 124 on timeout; with raw=True,
    QEMU's own exit code instead (0 after an ACPI power-off, status*2+1 after isa-debug-exit).
    screendump=(regex, ppm_path): once the serial output matches regex, save the screen to
    ppm_path and stop QEMU (status 0 if the dump was written, 126 if not).
    hvsim=path: run the hvsim program beside QEMU (guest RAM shared, doorbell on COM2); its output
    joins the serial output; if it dies first, QEMU is stopped and the status is 120.
    driver=(regex, fn): once the output matches regex, fn(output) runs on a thread while the guest
    goes on (output() returns everything printed so far) (a test that talks to the guest over the network); its return value, or the
    exception it raised, is stored in driver_result["value"] / ["error"] (a dict given as
    driver[2] if there is one)."""
    with tempfile.TemporaryDirectory(prefix="hvrt-qemu-") as tmp:
        vars_fd = os.path.join(tmp, "vars.fd")
        shutil.copyfile(OVMF_VARS, vars_fd)
        if cmdline is not None:
            disk = with_cmdline(disk, cmdline, tmp)
        monitor = "none"
        sock_path = os.path.join(tmp, "monitor.sock")
        if screendump:
            monitor = f"unix:{sock_path},server=on,wait=off"
        sim, sim_args, mem_path, machine = None, [], None, "q35"
        if hvsim:
            sim, sim_args, mem_path = start_hvsim(hvsim, hvsim_args, tmp, mem, smp)
            os.set_blocking(sim.stdout.fileno(), False)
            machine = "q35,memory-backend=hvrt-ram"
        cmd = qemu_command(disk, vars_fd, smp, mem, sim_args + list(extra), monitor, machine)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = bytearray()
        start = time.monotonic()
        os.set_blocking(proc.stdout.fileno(), False)
        timed_out = sim_crashed = False
        driver_thread = None
        driver_result = driver[2] if driver and len(driver) > 2 else {}

        def drive():
            try:
                driver_result["value"] = driver[1](lambda: bytes(out).decode("utf-8", "replace").replace("\r\n", "\n"))
            except Exception as e:  # reported to the test, not lost on the thread
                driver_result["error"] = e

        def take(pipe):
            try:
                chunk = pipe.read()
            except BlockingIOError:
                return False
            if not chunk:
                return False
            out.extend(chunk)
            if not quiet:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            return True

        while True:
            got = take(proc.stdout)
            if sim:
                got = take(sim.stdout) or got
                if sim.poll() is not None and proc.poll() is None:
                    take(sim.stdout)
                    msg = f"\nqemu_run: hvsim exited with status {sim.returncode} while the guest ran: stopping QEMU\n"
                    out.extend(msg.encode())
                    if not quiet:
                        sys.stdout.write(msg)
                    sim_crashed = True
                    proc.kill()
                    proc.wait()
                    break
            if driver and not driver_thread and re.search(driver[0], out.decode("utf-8", "replace")):
                driver_thread = threading.Thread(target=drive, daemon=True)
                driver_thread.start()
            if got:
                continue
            if proc.poll() is not None:
                break
            time.sleep(0.02)
            if screendump and re.search(screendump[0], out.decode("utf-8", "replace")):
                dumped = take_screendump(sock_path, screendump[1])
                proc.kill()
                proc.wait()
                text = out.decode("utf-8", "replace").replace("\r\n", "\n")
                return (0 if dumped else 126), text
            if timeout and time.monotonic() - start > timeout:
                timed_out = True
                proc.kill()
                proc.wait()
                break
        if driver_thread:
            driver_thread.join(timeout=30)
        rest = proc.stdout.read() or b""
        out += rest
        if rest and not quiet:
            sys.stdout.buffer.write(rest)
        if sim:
            # hvsim exits by itself when QEMU closes the doorbell socket.
            try:
                sim.wait(timeout=5)
            except subprocess.TimeoutExpired:
                sim.terminate()
                sim.wait()
                out.extend(b"qemu_run: hvsim did not exit after QEMU; terminated\n")
            os.set_blocking(sim.stdout.fileno(), True)
            take(sim.stdout)
            if sim.returncode not in (0, -15) and not sim_crashed:
                msg = f"qemu_run: hvsim exited with status {sim.returncode}\n"
                out.extend(msg.encode())
                if not quiet:
                    sys.stdout.write(msg)
                sim_crashed = True
            if mem_path and os.path.exists(mem_path):
                os.unlink(mem_path)
        text = out.decode("utf-8", "replace").replace("\r\n", "\n")
        if log:
            with open(log, "w") as f:
                f.write(text)
        if timed_out:
            return 124, text
        if sim_crashed:
            return HVSIM_CRASHED, text
        code = proc.returncode
        if raw:
            return code, text
        if code & 1:
            return code >> 1, text
        if code == 0 and "power: off with status 0" in text:
            return 0, text
        return 128 + (code & 0x7F) if code > 0 else 125, text


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--disk", required=True)
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--cmdline", default=None, help="replaces \\EFI\\BOOT\\cmdline.txt for this boot")
    ap.add_argument("--timeout", type=float, default=None, help="seconds")
    ap.add_argument("--log", default=None)
    ap.add_argument("--hvsim", default=None, help="path of the hvsim program to run beside QEMU")
    ap.add_argument("--hvsim-arg", action="append", default=[], help="an argument for hvsim (repeatable)")
    args, extra = ap.parse_known_args()
    t0 = time.monotonic()
    status, _ = run(args.disk, args.smp, args.mem, args.cmdline, args.timeout, args.log, extra=extra,
                    hvsim=args.hvsim, hvsim_args=args.hvsim_arg)
    took = time.monotonic() - t0
    if status == 124:
        print(f"\nqemu: timed out after {args.timeout} s", file=sys.stderr)
    elif status == HVSIM_CRASHED:
        print("\nqemu: hvsim failed (see above)", file=sys.stderr)
    else:
        print(f"\nqemu: guest ended with status {status} after {took:.1f} s", file=sys.stderr)
    sys.exit(status)


if __name__ == "__main__":
    main()
