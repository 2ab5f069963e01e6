#!/usr/bin/env bash
# mkdisk.sh OUT.img APP.efi SIZE_MB [CMDLINE]
# A GPT disk image with one EFI system partition holding \EFI\BOOT\BOOTX64.EFI and, when given, the
# command line in \EFI\BOOT\cmdline.txt. No root needed: sgdisk writes the partition table, mtools
# formats and fills the FAT file system inside the image.
set -euo pipefail
out=$1 efi=$2 mb=$3 cmdline=${4:-}
start=2048                                  # first partition sector (1 MiB)
total=$((mb * 2048))
end=$((total - 34 - 1))                     # the backup GPT takes the last 33 sectors
sectors=$((end - start + 1))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -f "$out"
truncate -s "${mb}M" "$out"
sgdisk --clear --new=1:${start}:${end} --typecode=1:ef00 --change-name=1:"EFI system partition" "$out" >/dev/null
# FAT inside the partition (mtools addresses it with the @@offset suffix).
mformat -i "$out@@$((start * 512))" -T "$sectors" -h 64 -s 32 -v HVRT -F ::
mmd -i "$out@@$((start * 512))" ::/EFI ::/EFI/BOOT
mcopy -i "$out@@$((start * 512))" "$efi" ::/EFI/BOOT/BOOTX64.EFI
if [[ -n $cmdline ]]; then
  printf '%s\n' "$cmdline" >"$tmp/cmdline.txt"
  mcopy -i "$out@@$((start * 512))" "$tmp/cmdline.txt" ::/EFI/BOOT/cmdline.txt
fi
