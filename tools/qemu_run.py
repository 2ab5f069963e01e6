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


def qemu_command(disk, vars_fd, smp, mem, extra, monitor="none"):
    return [
        "qemu-system-x86_64",
        "-machine", "q35", "-accel", "tcg", "-cpu", "max",
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


def run(disk, smp=2, mem="256M", cmdline=None, timeout=None, log=None, quiet=False, extra=(), raw=False,
        screendump=None):
    """Returns (status, output). status: the guest's exit status, 124 on timeout; with raw=True,
    QEMU's own exit code instead (0 after an ACPI power-off, status*2+1 after isa-debug-exit).
    screendump=(regex, ppm_path): once the serial output matches regex, save the screen to
    ppm_path and stop QEMU (status 0 if the dump was written, 126 if not)."""
    with tempfile.TemporaryDirectory(prefix="hvrt-qemu-") as tmp:
        vars_fd = os.path.join(tmp, "vars.fd")
        shutil.copyfile(OVMF_VARS, vars_fd)
        if cmdline is not None:
            disk = with_cmdline(disk, cmdline, tmp)
        monitor = "none"
        sock_path = os.path.join(tmp, "monitor.sock")
        if screendump:
            monitor = f"unix:{sock_path},server=on,wait=off"
        cmd = qemu_command(disk, vars_fd, smp, mem, list(extra), monitor)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = bytearray()
        start = time.monotonic()
        os.set_blocking(proc.stdout.fileno(), False)
        timed_out = False
        while True:
            chunk = None
            try:
                chunk = proc.stdout.read()
            except BlockingIOError:
                pass
            if chunk:
                out += chunk
                if not quiet:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            elif proc.poll() is not None:
                break
            else:
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
        rest = proc.stdout.read() or b""
        out += rest
        if rest and not quiet:
            sys.stdout.buffer.write(rest)
        text = out.decode("utf-8", "replace").replace("\r\n", "\n")
        if log:
            with open(log, "w") as f:
                f.write(text)
        if timed_out:
            return 124, text
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
    args, extra = ap.parse_known_args()
    t0 = time.monotonic()
    status, _ = run(args.disk, args.smp, args.mem, args.cmdline, args.timeout, args.log, extra=extra)
    took = time.monotonic() - t0
    if status == 124:
        print(f"\nqemu: timed out after {args.timeout} s", file=sys.stderr)
    else:
        print(f"\nqemu: guest ended with status {status} after {took:.1f} s", file=sys.stderr)
    sys.exit(status)


if __name__ == "__main__":
    main()
