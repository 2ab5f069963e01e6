/*
 * netup: the smallest network application. It names drivers/netvsc and lib/net in libs.mk and
 * writes nothing else of a NIC: vmbus_init binds the driver, which registers the NIC as a network
 * device; net_attach_first puts the IPv4 stack on it with an address (DHCP, or ip=/gw= from the
 * command line); netup prints the address and exits 0 (1: no NIC, or no address within 30 s).
 */
#include "hv/hv.h"
#include "hv/vmbus/vmbus.h"
#include "kernel/app.h"
#include "kernel/log.h"
#include "lib/netattach/net_attach.h"

const char *const app_name = "netup";
/* ip and gw: net_attach's; queues, nvsp and rxbuf: drivers/netvsc's. */
const char *const app_cmdline_keys[] = { "ip", "gw", "queues", "nvsp", "rxbuf", NULL };

int app_main(void)
{
    struct net_attach *na;
    if (hv_init() != STATUS_OK || vmbus_init(0) != STATUS_OK || net_attach_first(NULL, 0, &na) != STATUS_OK) {
        kprintf("netup: no network adapter\n");
        return 1;
    }
    status_t s = net_attach_wait_configured(na, 30000000000ull);
    struct net_config c;
    net_get_config(net_attach_if(na), 0, &c);
    char ip[16], gw[16];
    net_format_ipv4(ip, sizeof ip, c.ip);
    net_format_ipv4(gw, sizeof gw, c.gw);
    if (s == STATUS_OK)
        kprintf("netup: %s: %s/%d gateway %s (%s)\n", netdev_name(net_attach_dev(na)), ip, net_mask_prefix(c.mask),
                c.gw ? gw : "none", net_attach_dhcp(na) ? "dhcp" : "static");
    else
        kprintf("netup: %s: no address: %s\n", netdev_name(net_attach_dev(na)), status_name(s));
    net_detach(na);
    return s == STATUS_OK ? 0 : 1;
}
