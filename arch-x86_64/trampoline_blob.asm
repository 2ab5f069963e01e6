; The AP trampoline (assembled separately as a flat binary), embedded as data for smp.c to copy.
section .rodata
global ap_trampoline, ap_trampoline_end
ap_trampoline:
    incbin TRAMPOLINE_BIN
ap_trampoline_end:
section .note.GNU-stack noalloc noexec nowrite progbits
