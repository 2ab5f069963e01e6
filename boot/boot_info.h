/*
 * boot_info: what the UEFI loader hands the kernel.
 *
 * Contract: filled by boot/efi_main.c before ExitBootServices; after the jump the kernel owns it and
 * every buffer it points to (all identity-mapped, in EfiLoaderData memory the page allocator never
 * reuses). Nothing here refers to UEFI services: the kernel must not call UEFI.
 * Shared by the loader (built with the GNU-EFI ABI) and the kernel, so fixed-width types only.
 */
#ifndef BOOT_BOOT_INFO_H
#define BOOT_BOOT_INFO_H

#include <stdint.h>

#define BOOT_INFO_MAGIC 0x48564b424f4f5431ull /* "HVKBOOT1" */
#define BOOT_CMDLINE_MAX 1024

/* Memory region kinds, reduced from the UEFI memory types. */
enum boot_mem_kind {
    BOOT_MEM_FREE = 1,        /* conventional, boot-services code/data: ours after ExitBootServices */
    BOOT_MEM_LOADER = 2,      /* the loader, the kernel image, boot_info, page tables: keep */
    BOOT_MEM_ACPI_RECLAIM = 3,
    BOOT_MEM_ACPI_NVS = 4,
    BOOT_MEM_MMIO = 5,
    BOOT_MEM_RESERVED = 6,    /* runtime services, reserved, unusable, persistent, unknown */
};

struct boot_mem_region {
    uint64_t base;   /* physical, page aligned */
    uint64_t pages;  /* 4 KiB pages */
    uint32_t kind;   /* enum boot_mem_kind */
    uint32_t efi_type;
    uint64_t attributes; /* EFI_MEMORY_* attribute bits, as reported */
};
_Static_assert(sizeof(struct boot_mem_region) == 32, "boot_mem_region layout");

enum boot_fb_format {
    BOOT_FB_NONE = 0,
    BOOT_FB_RGBX = 1,  /* byte 0 red   (PixelRedGreenBlueReserved8BitPerColor) */
    BOOT_FB_BGRX = 2,  /* byte 0 blue  (PixelBlueGreenRedReserved8BitPerColor) */
};

struct boot_fb {
    uint64_t base;        /* physical address of the linear framebuffer, 0 if none */
    uint64_t size;        /* bytes */
    uint32_t width, height;
    uint32_t pitch;       /* pixels per scan line */
    uint32_t format;      /* enum boot_fb_format */
};

struct boot_info {
    uint64_t magic;
    uint64_t tsc_at_efi_main;       /* rdtsc at the first instruction of efi_main */
    uint64_t tsc_at_kernel_entry;   /* rdtsc just before the jump to the kernel */
    uint64_t tsc_loader[4];         /* rdtsc after: command line, firmware tables + GOP, kernel load,
                                     * page tables; then ExitBootServices ends at tsc_at_kernel_entry */
    uint64_t acpi_rsdp;             /* physical address of the ACPI 2.0+ RSDP (1.0 if that is all), 0 if none */
    struct boot_fb fb;
    uint64_t kernel_phys;           /* where the kernel image was loaded (page aligned) */
    uint64_t kernel_virt;           /* its link address */
    uint64_t kernel_size;           /* bytes reserved for it, bss included */
    uint64_t smp_trampoline;        /* physical page below 1 MiB reserved for AP start-up, 0 if none */
    uint64_t smp_trampoline_pages;
    uint32_t mem_count;
    uint32_t efi_exit_attempts;     /* ExitBootServices calls needed (stale map key retries + 1) */
    struct boot_mem_region *mem;    /* mem_count entries, sorted by base */
    char cmdline[BOOT_CMDLINE_MAX]; /* NUL-terminated ASCII `key=value` words */
    char cmdline_source[32];        /* "load-options", "cmdline.txt" or "none" */
    char firmware_vendor[64];       /* ASCII copy of the UEFI vendor string */
    uint32_t firmware_revision;
    uint32_t reserved0;
};

#endif
