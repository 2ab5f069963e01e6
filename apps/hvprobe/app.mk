# hvprobe needs only the base image (arch-x86_64, kernel, hv).
APP_MODULES :=
