/*
 * reftime: reading Hyper-V's reference TSC page (T:timers.md; hyperv-facts 3.6). Portable and
 * pure, so the hosted tests can feed it pages the host got wrong. hv_ref_time() (hv/hv.h) uses it.
 */
#ifndef HV_REFTIME_H
#define HV_REFTIME_H

#include <stdint.h>

#include "hv/proto/hvdefs.h"

#define HV_TSC_PAGE_TRIES 16 /* reads of a changing sequence before falling back to the MSR */

enum hv_tsc_page_result {
    HV_TSC_PAGE_OK,
    HV_TSC_PAGE_INVALID,   /* sequence 0: the hypervisor says use TIME_REF_COUNT */
    HV_TSC_PAGE_UNSETTLED, /* the sequence changed on every one of HV_TSC_PAGE_TRIES reads */
};

/* time = ((tsc * scale) >> 64) + offset, read consistently: the sequence is the same before and after
 * (any value but 0). read_tsc is the CPU's TSC (a parameter for the tests). */
static inline enum hv_tsc_page_result hv_tsc_page_read(const volatile struct hv_reference_tsc_page *p,
                                                       uint64_t (*read_tsc)(void), uint64_t *out)
{
    for (int i = 0; i < HV_TSC_PAGE_TRIES; i++) {
        uint32_t seq = __atomic_load_n(&p->tsc_sequence, __ATOMIC_ACQUIRE);
        if (seq == 0)
            return HV_TSC_PAGE_INVALID;
        uint64_t scale = __atomic_load_n(&p->tsc_scale, __ATOMIC_RELAXED);
        int64_t offset = __atomic_load_n(&p->tsc_offset, __ATOMIC_RELAXED);
        uint64_t tsc = read_tsc();
        /* x86 keeps loads in order (and rdtsc after them here is harmless): a compiler barrier is
         * all the re-read of the sequence needs. */
        __asm__ volatile("" : : : "memory");
        if (__atomic_load_n(&p->tsc_sequence, __ATOMIC_ACQUIRE) == seq) {
            /* A 64x64 multiply's high half: a mul instruction, no 128-bit division. */
            *out = (uint64_t)(((unsigned __int128)tsc * scale) >> 64) + (uint64_t)offset;
            return HV_TSC_PAGE_OK;
        }
    }
    return HV_TSC_PAGE_UNSETTLED;
}

uint64_t hv_ref_time_unsettled_reads(void);
/* Tests: the TSC read between the two sequence reads (NULL: rdtsc). A reader that makes the host
 * rewrite the page each time is a page that never settles, deterministically. */
void hv_reftime_set_tsc_reader(uint64_t (*fn)(void));

#endif
