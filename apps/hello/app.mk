# hello needs only the base image (arch-x86_64, kernel, hv): no VMBus.
APP_MODULES :=
