/*
 * The UEFI loader (GNU-EFI): everything the kernel needs from the firmware, gathered while boot
 * services still run, then ExitBootServices and a jump into the kernel.
 *
 *  1. rdtsc (the boot-time clock starts here);
 *  2. the command line: the image's load options if they are text, else \EFI\BOOT\cmdline.txt;
 *  3. the ACPI RSDP, the GOP framebuffer, the firmware vendor;
 *  4. the kernel: an ELF linked with linker.ld, embedded in this image (kernel_blob.S), copied to
 *     freshly allocated pages;
 *  5. a page below 1 MiB for the SMP trampoline; a boot stack; temporary page tables that
 *     identity-map memory and map the kernel at its link address (the kernel builds its own);
 *  6. the memory map and ExitBootServices, retried while the map key goes stale;
 *  7. CR3, stack, jump. No UEFI call happens after step 6 succeeds.
 */
#include <efi.h>
#include <efilib.h>

#include "boot/boot_info.h"

extern const unsigned char kernel_blob[], kernel_blob_end[];

#define PAGE 4096ull
#define BOOT_STACK_PAGES 16
#define PT_POOL_PAGES 256 /* temporary page tables: enough for 4 GiB in 2 MiB pages plus extra RAM */

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

/* rep stosb/movsb: byte loops cost milliseconds per MiB under emulation. */
static void *zero(void *p, UINTN n)
{
    void *d = p;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(0) : "memory");
    return p;
}

static void copy(void *d, const void *s, UINTN n)
{
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
}

static EFI_STATUS alloc_pages(EFI_ALLOCATE_TYPE type, UINTN pages, EFI_PHYSICAL_ADDRESS *addr)
{
    return uefi_call_wrapper(BS->AllocatePages, 4, type, EfiLoaderData, pages, addr);
}

/* ---- command line ---- */

static int ascii_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* UCS-2 load options to ASCII. Returns 0 if they are not printable text (boot managers pass binary
 * optional data). A leading word naming an .efi file (as the UEFI shell passes) is dropped. */
static int options_to_cmdline(const CHAR16 *opt, UINTN bytes, char *out, UINTN max)
{
    UINTN n = bytes / 2, o = 0;
    while (n && opt[n - 1] == 0)
        n--;
    if (n == 0)
        return 0;
    for (UINTN i = 0; i < n; i++)
        if (opt[i] < 0x09 || opt[i] > 0x7e)
            return 0;
    UINTN start = 0;
    while (start < n && opt[start] == ' ')
        start++;
    UINTN w = start;
    while (w < n && opt[w] != ' ')
        w++;
    if (w - start >= 4 && opt[w - 4] == '.' && ascii_lower(opt[w - 3]) == 'e' && ascii_lower(opt[w - 2]) == 'f' &&
        ascii_lower(opt[w - 1]) == 'i')
        start = w;
    for (UINTN i = start; i < n && o + 1 < max; i++)
        out[o++] = (char)(opt[i] == '\t' ? ' ' : opt[i]);
    out[o] = '\0';
    return 1;
}

static int read_cmdline_file(EFI_LOADED_IMAGE *img, char *out, UINTN max)
{
    EFI_SIMPLE_FILE_SYSTEM_PROTOCOL *fs;
    EFI_FILE_HANDLE root, f;
    if (EFI_ERROR(uefi_call_wrapper(BS->HandleProtocol, 3, img->DeviceHandle, &FileSystemProtocol, (void **)&fs)))
        return 0;
    if (EFI_ERROR(uefi_call_wrapper(fs->OpenVolume, 2, fs, &root)))
        return 0;
    EFI_STATUS st = uefi_call_wrapper(root->Open, 5, root, &f, L"\\EFI\\BOOT\\cmdline.txt", EFI_FILE_MODE_READ, 0);
    if (EFI_ERROR(st)) {
        uefi_call_wrapper(root->Close, 1, root);
        return 0;
    }
    UINTN size = max - 1;
    st = uefi_call_wrapper(f->Read, 3, f, &size, out);
    uefi_call_wrapper(f->Close, 1, f);
    uefi_call_wrapper(root->Close, 1, root);
    if (EFI_ERROR(st))
        return 0;
    out[size] = '\0';
    for (UINTN i = 0; i < size; i++)
        if (out[i] == '\n' || out[i] == '\r' || out[i] == '\t')
            out[i] = ' ';
    while (size && out[size - 1] == ' ')
        out[--size] = '\0';
    return 1;
}

/* ---- the kernel ELF ---- */

struct elf64_ehdr {
    unsigned char ident[16];
    uint16_t type, machine;
    uint32_t version;
    uint64_t entry, phoff, shoff;
    uint32_t flags;
    uint16_t ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};
struct elf64_phdr {
    uint32_t type, flags;
    uint64_t offset, vaddr, paddr, filesz, memsz, align;
};
#define PT_LOAD 1

static EFI_STATUS load_kernel(struct boot_info *bi, uint64_t *entry)
{
    const unsigned char *blob = kernel_blob;
    UINTN blob_size = (UINTN)(kernel_blob_end - kernel_blob);
    const struct elf64_ehdr *eh = (const void *)blob;
    if (blob_size < sizeof *eh || eh->ident[0] != 0x7f || eh->ident[1] != 'E' || eh->ident[2] != 'L' ||
        eh->ident[3] != 'F' || eh->ident[4] != 2 || eh->machine != 62 || eh->phentsize != sizeof(struct elf64_phdr) ||
        eh->phoff + (uint64_t)eh->phnum * sizeof(struct elf64_phdr) > blob_size)
        return EFI_LOAD_ERROR;
    const struct elf64_phdr *ph = (const void *)(blob + eh->phoff);
    uint64_t lo = ~0ull, hi = 0;
    for (int i = 0; i < eh->phnum; i++) {
        if (ph[i].type != PT_LOAD)
            continue;
        if (ph[i].offset + ph[i].filesz > blob_size || ph[i].filesz > ph[i].memsz)
            return EFI_LOAD_ERROR;
        if (ph[i].vaddr < lo)
            lo = ph[i].vaddr;
        if (ph[i].vaddr + ph[i].memsz > hi)
            hi = ph[i].vaddr + ph[i].memsz;
    }
    if (lo == ~0ull || (lo & (PAGE - 1)))
        return EFI_LOAD_ERROR;
    uint64_t size = (hi - lo + PAGE - 1) & ~(PAGE - 1);
    EFI_PHYSICAL_ADDRESS phys;
    EFI_STATUS st = alloc_pages(AllocateAnyPages, size / PAGE, &phys);
    if (EFI_ERROR(st))
        return st;
    zero((void *)phys, size);
    for (int i = 0; i < eh->phnum; i++)
        if (ph[i].type == PT_LOAD)
            copy((void *)(phys + (ph[i].vaddr - lo)), blob + ph[i].offset, ph[i].filesz);
    bi->kernel_phys = phys;
    bi->kernel_virt = lo;
    bi->kernel_size = size;
    *entry = eh->entry;
    return EFI_SUCCESS;
}

/* ---- temporary page tables ---- */

#define PTE_P 1ull
#define PTE_W 2ull
#define PTE_PS 0x80ull

static uint64_t *pt_pool;
static UINTN pt_used;

static uint64_t *pt_new(void)
{
    if (pt_used == PT_POOL_PAGES)
        return NULL;
    return (uint64_t *)((unsigned char *)pt_pool + PAGE * pt_used++);
}

static uint64_t *pt_next(uint64_t *table, unsigned idx)
{
    if (!(table[idx] & PTE_P)) {
        uint64_t *n = pt_new();
        if (!n)
            return NULL;
        table[idx] = (uint64_t)n | PTE_P | PTE_W;
    }
    return (uint64_t *)(table[idx] & 0x000ffffffffff000ull);
}

static int map_2m(uint64_t *pml4, uint64_t addr)
{
    uint64_t *pdpt = pt_next(pml4, (addr >> 39) & 511);
    uint64_t *pd = pdpt ? pt_next(pdpt, (addr >> 30) & 511) : NULL;
    if (!pd)
        return 0;
    pd[(addr >> 21) & 511] = addr | PTE_P | PTE_W | PTE_PS;
    return 1;
}

static int map_4k(uint64_t *pml4, uint64_t virt, uint64_t phys)
{
    uint64_t *pdpt = pt_next(pml4, (virt >> 39) & 511);
    uint64_t *pd = pdpt ? pt_next(pdpt, (virt >> 30) & 511) : NULL;
    uint64_t *pt = pd ? pt_next(pd, (virt >> 21) & 511) : NULL;
    if (!pt)
        return 0;
    pt[(virt >> 12) & 511] = phys | PTE_P | PTE_W;
    return 1;
}

static int identity_range(uint64_t *pml4, uint64_t base, uint64_t end)
{
    for (uint64_t a = base & ~0x1fffffull; a < end; a += 0x200000)
        if (!map_2m(pml4, a))
            return 0;
    return 1;
}

/* ---- memory map ---- */

static uint32_t kind_of(UINT32 type)
{
    switch (type) {
    case EfiConventionalMemory:
    case EfiBootServicesCode:
    case EfiBootServicesData:
        return BOOT_MEM_FREE;
    case EfiLoaderCode:
    case EfiLoaderData:
        return BOOT_MEM_LOADER;
    case EfiACPIReclaimMemory:
        return BOOT_MEM_ACPI_RECLAIM;
    case EfiACPIMemoryNVS:
        return BOOT_MEM_ACPI_NVS;
    case EfiMemoryMappedIO:
    case EfiMemoryMappedIOPortSpace:
        return BOOT_MEM_MMIO;
    default:
        return BOOT_MEM_RESERVED;
    }
}

static void fail(const CHAR16 *what, EFI_STATUS st)
{
    Print(L"hvrt loader: %s failed: %r\r\n", what, st);
}

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
    uint64_t t0 = rdtsc();
    InitializeLib(image, systab);
    EFI_STATUS st;

    EFI_PHYSICAL_ADDRESS bi_addr;
    UINTN bi_pages = (sizeof(struct boot_info) + PAGE - 1) / PAGE;
    if (EFI_ERROR((st = alloc_pages(AllocateAnyPages, bi_pages, &bi_addr))))
        return fail(L"boot_info allocation", st), st;
    struct boot_info *bi = (struct boot_info *)bi_addr;
    zero(bi, bi_pages * PAGE);
    bi->magic = BOOT_INFO_MAGIC;
    bi->tsc_at_efi_main = t0;

    /* Command line. */
    EFI_LOADED_IMAGE *li = NULL;
    uefi_call_wrapper(BS->HandleProtocol, 3, image, &LoadedImageProtocol, (void **)&li);
    const char *src = "none";
    if (li && li->LoadOptions && options_to_cmdline(li->LoadOptions, li->LoadOptionsSize, bi->cmdline,
                                                    BOOT_CMDLINE_MAX) && bi->cmdline[0])
        src = "load-options";
    else if (li && read_cmdline_file(li, bi->cmdline, BOOT_CMDLINE_MAX))
        src = "cmdline.txt";
    copy(bi->cmdline_source, src, 13);
    bi->tsc_loader[0] = rdtsc();
    bi->cmdline_source[31] = 0;

    /* Firmware. */
    if (systab->FirmwareVendor)
        for (int i = 0; i < 63 && systab->FirmwareVendor[i]; i++)
            bi->firmware_vendor[i] = systab->FirmwareVendor[i] < 0x7f ? (char)systab->FirmwareVendor[i] : '?';
    bi->firmware_revision = systab->FirmwareRevision;

    /* ACPI: prefer the 2.0+ RSDP. */
    EFI_GUID acpi20 = ACPI_20_TABLE_GUID;
    for (UINTN i = 0; i < systab->NumberOfTableEntries; i++) {
        EFI_CONFIGURATION_TABLE *t = &systab->ConfigurationTable[i];
        if (!CompareGuid(&t->VendorGuid, &acpi20))
            bi->acpi_rsdp = (uint64_t)t->VendorTable;
        else if (!CompareGuid(&t->VendorGuid, &AcpiTableGuid) && !bi->acpi_rsdp)
            bi->acpi_rsdp = (uint64_t)t->VendorTable;
    }

    /* Framebuffer. */
    EFI_GRAPHICS_OUTPUT_PROTOCOL *gop = NULL;
    if (!EFI_ERROR(uefi_call_wrapper(BS->LocateProtocol, 3, &GraphicsOutputProtocol, NULL, (void **)&gop)) && gop &&
        gop->Mode && gop->Mode->Info) {
        EFI_GRAPHICS_OUTPUT_MODE_INFORMATION *mi = gop->Mode->Info;
        uint32_t fmt = mi->PixelFormat == PixelRedGreenBlueReserved8BitPerColor   ? BOOT_FB_RGBX
                       : mi->PixelFormat == PixelBlueGreenRedReserved8BitPerColor ? BOOT_FB_BGRX
                                                                                  : BOOT_FB_NONE;
        if (fmt != BOOT_FB_NONE) {
            bi->fb.base = gop->Mode->FrameBufferBase;
            bi->fb.size = gop->Mode->FrameBufferSize;
            bi->fb.width = mi->HorizontalResolution;
            bi->fb.height = mi->VerticalResolution;
            bi->fb.pitch = mi->PixelsPerScanLine;
            bi->fb.format = fmt;
        }
    }

    bi->tsc_loader[1] = rdtsc();
    uint64_t entry;
    if (EFI_ERROR((st = load_kernel(bi, &entry))))
        return fail(L"loading the embedded kernel", st), st;

    /* A page below 1 MiB (and below the EBDA) for the APs' real-mode start. */
    EFI_PHYSICAL_ADDRESS tramp = 0x9ffff;
    if (!EFI_ERROR(alloc_pages(AllocateMaxAddress, 2, &tramp))) {
        bi->smp_trampoline = tramp;
        bi->smp_trampoline_pages = 2;
    }

    bi->tsc_loader[2] = rdtsc();
    EFI_PHYSICAL_ADDRESS stack;
    if (EFI_ERROR((st = alloc_pages(AllocateAnyPages, BOOT_STACK_PAGES, &stack))))
        return fail(L"boot stack allocation", st), st;
    EFI_PHYSICAL_ADDRESS pool;
    if (EFI_ERROR((st = alloc_pages(AllocateAnyPages, PT_POOL_PAGES, &pool))))
        return fail(L"page table allocation", st), st;
    pt_pool = (uint64_t *)pool;
    zero(pt_pool, PT_POOL_PAGES * PAGE);

    /* Memory map buffers: sized now, with room for the entries our own allocations add. */
    UINTN map_size = 0, map_key, desc_size;
    UINT32 desc_ver;
    uefi_call_wrapper(BS->GetMemoryMap, 5, &map_size, NULL, &map_key, &desc_size, &desc_ver);
    UINTN map_cap = map_size + 64 * desc_size;
    EFI_PHYSICAL_ADDRESS map_buf, regions;
    UINTN map_pages = (map_cap + PAGE - 1) / PAGE;
    UINTN region_pages = (map_cap / (desc_size ? desc_size : 1) * sizeof(struct boot_mem_region) + PAGE - 1) / PAGE;
    if (EFI_ERROR((st = alloc_pages(AllocateAnyPages, map_pages, &map_buf))) ||
        EFI_ERROR((st = alloc_pages(AllocateAnyPages, region_pages, &regions))))
        return fail(L"memory map allocation", st), st;

    /* Temporary page tables: identity below 4 GiB plus all RAM above it, the kernel at its link
     * address. Built from a map taken now; later allocations only split existing regions. */
    map_size = map_cap;
    st = uefi_call_wrapper(BS->GetMemoryMap, 5, &map_size, (EFI_MEMORY_DESCRIPTOR *)map_buf, &map_key, &desc_size,
                           &desc_ver);
    if (EFI_ERROR(st))
        return fail(L"GetMemoryMap", st), st;
    uint64_t *pml4 = pt_new();
    int ok = identity_range(pml4, 0, 4ull << 30);
    for (UINTN off = 0; ok && off < map_size; off += desc_size) {
        EFI_MEMORY_DESCRIPTOR *d = (EFI_MEMORY_DESCRIPTOR *)(map_buf + off);
        uint64_t end = d->PhysicalStart + d->NumberOfPages * PAGE;
        if (end > (4ull << 30) && kind_of(d->Type) != BOOT_MEM_RESERVED && kind_of(d->Type) != BOOT_MEM_MMIO)
            ok = identity_range(pml4, d->PhysicalStart, end);
    }
    if (ok && bi->fb.base >= (4ull << 30))
        ok = identity_range(pml4, bi->fb.base, bi->fb.base + bi->fb.size);
    for (uint64_t off = 0; ok && off < bi->kernel_size; off += PAGE)
        ok = map_4k(pml4, bi->kernel_virt + off, bi->kernel_phys + off);
    if (!ok)
        return fail(L"temporary page tables (pool exhausted)", EFI_OUT_OF_RESOURCES), EFI_OUT_OF_RESOURCES;

    bi->tsc_loader[3] = rdtsc();
    bi->tsc_loader[3] = rdtsc();
    Print(L"hvrt loader: kernel %lx bytes at %lx, command line from %a; exiting boot services\r\n",
          bi->kernel_size, bi->kernel_phys, bi->cmdline_source);

    /* ExitBootServices; a stale key means the map changed under us: fetch it again (allowed after a
     * failed ExitBootServices) and retry. */
    for (;;) {
        map_size = map_cap;
        st = uefi_call_wrapper(BS->GetMemoryMap, 5, &map_size, (EFI_MEMORY_DESCRIPTOR *)map_buf, &map_key,
                               &desc_size, &desc_ver);
        if (EFI_ERROR(st))
            return fail(L"GetMemoryMap", st), st;
        bi->efi_exit_attempts++;
        st = uefi_call_wrapper(BS->ExitBootServices, 2, image, map_key);
        if (!EFI_ERROR(st))
            break;
        if (st != EFI_INVALID_PARAMETER || bi->efi_exit_attempts >= 16)
            return st; /* console may already be gone */
    }

    /* From here on: no UEFI. */
    struct boot_mem_region *r = (struct boot_mem_region *)regions;
    uint32_t n = 0;
    for (UINTN off = 0; off < map_size; off += desc_size) {
        EFI_MEMORY_DESCRIPTOR *d = (EFI_MEMORY_DESCRIPTOR *)(map_buf + off);
        struct boot_mem_region cur = { d->PhysicalStart, d->NumberOfPages, kind_of(d->Type), d->Type, d->Attribute };
        uint32_t j = n++;
        while (j > 0 && r[j - 1].base > cur.base) { /* insertion sort by base */
            r[j] = r[j - 1];
            j--;
        }
        r[j] = cur;
    }
    bi->mem = r;
    bi->mem_count = n;
    bi->tsc_at_kernel_entry = rdtsc();

    uint64_t stack_top = stack + BOOT_STACK_PAGES * PAGE;
    __asm__ volatile("cli\n\t"
                     "mov %0, %%cr3\n\t"
                     "mov %1, %%rsp\n\t"
                     "xor %%ebp, %%ebp\n\t"
                     "push %%rbp\n\t" /* a zero return address ends backtraces */
                     "jmp *%2"
                     :
                     : "r"((uint64_t)pml4), "r"(stack_top), "r"(entry), "D"(bi)
                     : "memory");
    __builtin_unreachable();
}
