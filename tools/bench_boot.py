#!/usr/bin/env python3
"""`make bench` for the boot foundation: image size and boot time, measured, with the method printed.

Image size: the bytes of build/<app>/<app>.efi and of the kernel's loaded sections.
Boot time: boots the image N times in QEMU (q35, OVMF, TCG, 2 CPUs) with selftest=0 and reads what
the guest measured with its own TSC: efi_main to app_main in cycles and microseconds, split into the
loader, the kernel's set-up, the APs' start-up and the rest. Under software emulation the absolute
numbers are emulator numbers; the split shows where the time goes. Medians, with min and max.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qemu_run  # noqa: E402


def sections(elf):
    out = subprocess.run(["size", "-A", elf], stdout=subprocess.PIPE, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in (".text", ".rodata", ".data", ".bss"):
            sizes[parts[0]] = int(parts[1])
    return sizes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--app", default="hello")
    ap.add_argument("--boots", type=int, default=5)
    args = ap.parse_args()
    b = os.path.join(args.build, args.app)
    efi = os.path.join(b, f"{args.app}.efi")
    print(__doc__.strip())
    print()
    print(f"image  {efi}: {os.path.getsize(efi)} bytes")
    s = sections(os.path.join(b, "kernel.elf"))
    print("kernel " + ", ".join(f"{k} {v}" for k, v in s.items()) + f" bytes (total {sum(s.values())})")

    keys = ["cycles", "total_us", "loader_us", "setup_us", "ap_us", "main_us", "ebs_us"]
    samples = {k: [] for k in keys}
    wall = []
    for i in range(args.boots):
        t0 = time.monotonic()
        status, out = qemu_run.run(os.path.join(b, "disk.img"), smp=2, cmdline="selftest=0", timeout=240, quiet=True)
        wall.append(time.monotonic() - t0)
        m = re.search(r"efi_main to main: (\d+) TSC cycles, (\d+) us", out)
        p = re.search(r"loader (\d+) us, kernel set-up (\d+) us, AP start-up (\d+) us, to main (\d+) us", out)
        e = re.search(r"ExitBootServices (\d+) us", out)
        if status != 0 or not m or not p or not e:
            print(f"boot {i}: failed (status {status})")
            sys.exit(1)
        vals = [int(m.group(1)), int(m.group(2))] + [int(x) for x in p.groups()] + [int(e.group(1))]
        for k, v in zip(keys, vals):
            samples[k].append(v)

    def show(label, k, unit):
        v = samples[k]
        print(f"{label:<34} median {statistics.median(v):>12.0f} {unit}  (min {min(v)}, max {max(v)})")

    print(f"\nboot time over {args.boots} boots (guest TSC):")
    show("efi_main to app_main", "cycles", "cycles")
    show("efi_main to app_main", "total_us", "us")
    show("  loader (efi_main to kernel)", "loader_us", "us")
    show("    of which ExitBootServices", "ebs_us", "us")
    show("  kernel set-up", "setup_us", "us")
    show("  AP start-up (INIT-SIPI-SIPI)", "ap_us", "us")
    show("  scheduler up to app_main", "main_us", "us")
    print(f"QEMU process, power-on to exit:    median {statistics.median(wall):.1f} s (min {min(wall):.1f}, max {max(wall):.1f})")


if __name__ == "__main__":
    main()
