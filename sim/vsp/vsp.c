/*
 * vsp: the glue between hvsim's VMBus server devices and kmcl's server endpoint (sim/vsp/vsp.h).
 * Per open channel a struct vsp_link maps the server's handle to its kmcl server channel; the list
 * is guarded by the instance mutex, which is never held while kmcl runs (kmcl's own channel lock
 * orders everything within a channel).
 */
#include "sim/vsp/vsp.h"

#include <pthread.h>
#include <stdlib.h>

#include "sim/vmbus_internal.h"

struct vsp_link {
    struct vsp_link *next;
    struct hvsim_vsp *vsp;
    struct hvsim_vmbus_channel *vch;
    struct kmcl_server_channel *ch;
    bool opening; /* inside on_open: no signal before the guest has OPENCHANNEL_RESULT */
};

struct hvsim_vsp {
    struct hvsim_vsp_ops ops;
    void *ctx;
    pthread_mutex_t lock;
    struct vsp_link *links;
};

static bool t_signal(void *ctx)
{
    struct vsp_link *l = ctx;
    if (__atomic_load_n(&l->opening, __ATOMIC_ACQUIRE) || !hvsim_vmbus_signal_guest(l->vch))
        return false;
    if (l->vsp->ops.signalled)
        l->vsp->ops.signalled(l->vsp->ctx, l->ch);
    return true;
}

static void *t_memory(void *ctx, uint64_t gpa, uint32_t len)
{
    struct vsp_link *l = ctx;
    return hvsim_gpa(l->vch->vb->sim, gpa, len);
}

static void t_log(void *ctx, const char *line)
{
    struct vsp_link *l = ctx;
    vb_log(l->vch->vb, 0, "%s relid %u: %s", hvsim_vmbus_channel_device(l->vch)->name,
           hvsim_vmbus_channel_relid(l->vch), line);
}

static struct vsp_link *find(struct hvsim_vsp *v, const struct hvsim_vmbus_channel *vch, bool unlink)
{
    pthread_mutex_lock(&v->lock);
    struct vsp_link *found = NULL;
    for (struct vsp_link **p = &v->links; *p; p = &(*p)->next)
        if ((*p)->vch == vch) {
            found = *p;
            if (unlink)
                *p = found->next;
            break;
        }
    pthread_mutex_unlock(&v->lock);
    return found;
}

static void close_link(struct vsp_link *l)
{
    kmcl_server_channel_disable(l->ch);
    if (l->vsp->ops.teardown)
        l->vsp->ops.teardown(l->vsp->ctx, l->vch, l->ch);
    kmcl_server_channel_cleanup(l->ch);
    free(l);
}

void hvsim_vsp_open(void *ctx, struct hvsim_vmbus_channel *vch, void *in_ring, uint32_t in_bytes, void *out_ring,
                    uint32_t out_bytes)
{
    struct hvsim_vsp *v = ctx;
    struct vsp_link *old = find(v, vch, true);
    if (old) /* the server closes before it reopens: never keep stale state */
        close_link(old);
    const char *name = hvsim_vmbus_channel_device(vch)->name;
    struct vsp_link *l = calloc(1, sizeof *l);
    status_t s = l ? kmcl_server_channel_allocate(name, &l->ch) : STATUS_NO_MEMORY;
    if (s == STATUS_OK) {
        l->vsp = v;
        l->vch = vch;
        s = v->ops.setup(v->ctx, vch, l->ch);
        if (s != STATUS_OK)
            kmcl_server_channel_cleanup(l->ch);
    }
    if (s != STATUS_OK) {
        vb_log(vch->vb, 0, "%s relid %u: VSP set-up failed (status %d): channel not served", name,
               hvsim_vmbus_channel_relid(vch), (int)s);
        free(l);
        return;
    }
    pthread_mutex_lock(&v->lock);
    l->next = v->links;
    v->links = l;
    pthread_mutex_unlock(&v->lock);
    struct kmcl_server_transport t = { .ctx = l, .signal_guest = t_signal, .guest_memory = t_memory, .log = t_log };
    /* What the VSP writes in its opened callback (send-on-open) is signalled by the server after
     * OPENCHANNEL_RESULT, not here. */
    __atomic_store_n(&l->opening, true, __ATOMIC_RELEASE);
    if (kmcl_server_channel_enable(l->ch, &t, in_ring, in_bytes, out_ring, out_bytes) != STATUS_OK)
        vb_log(vch->vb, 0, "%s relid %u: kmcl server channel not enabled", name, hvsim_vmbus_channel_relid(vch));
    __atomic_store_n(&l->opening, false, __ATOMIC_RELEASE);
}

void hvsim_vsp_close(void *ctx, struct hvsim_vmbus_channel *vch)
{
    struct vsp_link *l = find(ctx, vch, true);
    if (l)
        close_link(l);
}

void hvsim_vsp_signal(void *ctx, struct hvsim_vmbus_channel *vch)
{
    struct hvsim_vsp *v = ctx;
    struct vsp_link *l = find(v, vch, false);
    if (!l) /* only the server's thread unlinks (on_close), and it is here: l stays valid */
        return;
    bool did = kmcl_server_channel_interrupt(l->ch);
    if (v->ops.after_interrupt)
        v->ops.after_interrupt(v->ctx, l->ch, did);
}

struct hvsim_vsp *hvsim_vsp_create(const struct hvsim_vsp_ops *ops, void *ctx)
{
    if (!ops || !ops->setup)
        return NULL;
    struct hvsim_vsp *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    if (pthread_mutex_init(&v->lock, NULL) != 0) {
        free(v);
        return NULL;
    }
    v->ops = *ops;
    v->ctx = ctx;
    return v;
}

void hvsim_vsp_destroy(struct hvsim_vsp *v)
{
    if (!v)
        return;
    while (v->links) { /* a server still using it broke the contract: do not leak at least */
        struct vsp_link *l = v->links;
        v->links = l->next;
        close_link(l);
    }
    pthread_mutex_destroy(&v->lock);
    free(v);
}

void hvsim_vsp_bind(struct hvsim_vsp *vsp, struct hvsim_vmbus_device *dev)
{
    dev->on_open = hvsim_vsp_open;
    dev->on_close = hvsim_vsp_close;
    dev->on_signal = hvsim_vsp_signal;
    dev->ctx = vsp;
}

struct hvsim_vmbus_channel *hvsim_vsp_vmbus_channel(struct kmcl_server_channel *ch)
{
    struct vsp_link *l = kmcl_server_channel_transport_context(ch);
    return l ? l->vch : NULL;
}
