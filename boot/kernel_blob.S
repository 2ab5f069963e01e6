/* The kernel ELF, embedded in the loader image. KERNEL_ELF is the path, set by the Makefile. */
    .section .rodata
    .balign 4096
    .globl kernel_blob, kernel_blob_end
kernel_blob:
    .incbin KERNEL_ELF
kernel_blob_end:
    .section .note.GNU-stack,"",@progbits
