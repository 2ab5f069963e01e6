#!/usr/bin/env bash
# Installs the Debian packages the build, `make run` and `make test` need, if any is missing.
# Idempotent; runs `apt-get update` at most once. Used by the Makefile and by .ci/run.
set -euo pipefail

# command-or-file  package
needs=(
  "gcc gcc"
  "make make"
  "nasm nasm"
  "ld binutils"
  "python3 python3"
  "qemu-system-x86_64 qemu-system-x86"
  "qemu-img qemu-utils"
  "mformat mtools"
  "sgdisk gdisk"
  "clang clang"
  "/usr/include/efi/efi.h gnu-efi"
  "/usr/share/OVMF/OVMF_CODE_4M.fd ovmf"
  "/usr/include/cmocka.h libcmocka-dev"
  "/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a libclang-rt-14-dev"
  "valgrind valgrind"
)

missing=()
for n in "${needs[@]}"; do
  what=${n%% *}; pkg=${n##* }
  if [[ $what == /* ]]; then
    [[ -e $what ]] || missing+=("$pkg")
  else
    command -v "$what" >/dev/null 2>&1 || missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "deps: installing ${missing[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "deps: missing packages (${missing[*]}) and not root; install them and retry" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
