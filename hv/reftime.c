/*
 * reftime: the partition's reference time (100 ns units). With AccessPartitionReferenceTsc the
 * hypervisor keeps a reference TSC page: time = ((tsc * scale) >> 64) + offset, valid while the
 * sequence is non-zero and unchanged across the read (T:timers.md). Otherwise, or when the sequence
 * will not settle, the TIME_REF_COUNT MSR (one exit per read).
 */
#include "hv/reftime.h"

#include "arch-x86_64/cpu.h"
#include "arch-x86_64/paging.h"
#include "hv/hv_internal.h"
#include "kernel/log.h"
#include "kernel/mm.h"

static struct hv_reference_tsc_page *tsc_page;
static bool use_msr;
static uint64_t unsettled_reads;

static uint64_t read_tsc(void)
{
    return rdtsc();
}

static uint64_t (*tsc_reader)(void) = read_tsc;

void hv_reftime_set_tsc_reader(uint64_t (*fn)(void))
{
    tsc_reader = fn ? fn : read_tsc;
}

void hv_reftime_init(void)
{
    const struct hv_features *f = hv_get_features();
    use_msr = true;
    if (!(f->privileges_low & HV_PRIV_ACCESS_REFERENCE_TSC))
        return;
    tsc_page = page_alloc(1);
    if (!tsc_page)
        return;
    uint64_t v = hv_bind->rdmsr(HV_MSR_REFERENCE_TSC);
    hv_bind->wrmsr(HV_MSR_REFERENCE_TSC, (v & 0xffe) | virt_to_phys(tsc_page) | HV_PAGE_ENABLE);
    use_msr = false;
}

void hv_reftime_shutdown(void)
{
    if (!tsc_page)
        return;
    use_msr = true;
    hv_bind->wrmsr(HV_MSR_REFERENCE_TSC, hv_bind->rdmsr(HV_MSR_REFERENCE_TSC) & ~HV_PAGE_ENABLE);
    tsc_page = NULL;
}

uint64_t hv_ref_time(void)
{
    if (!use_msr) {
        uint64_t t;
        enum hv_tsc_page_result r = hv_tsc_page_read(tsc_page, tsc_reader, &t);
        if (r == HV_TSC_PAGE_OK)
            return t;
        if (r == HV_TSC_PAGE_UNSETTLED) {
            uint64_t n = __atomic_add_fetch(&unsettled_reads, 1, __ATOMIC_RELAXED);
            if (n <= 3 || n % 10000 == 0)
                pr_warn("hv: the reference TSC page's sequence did not settle in %d reads (%llu times so far): "
                        "reading TIME_REF_COUNT instead",
                        HV_TSC_PAGE_TRIES, (unsigned long long)n);
        }
    }
    return hv_bind ? hv_bind->rdmsr(HV_MSR_TIME_REF_COUNT) : 0;
}

const char *hv_ref_time_source(void)
{
    return use_msr ? "TIME_REF_COUNT msr" : "reference tsc page";
}

uint64_t hv_ref_time_unsettled_reads(void)
{
    return unsettled_reads;
}
