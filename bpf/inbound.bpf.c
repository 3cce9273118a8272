// SPDX-License-Identifier: GPL-2.0
/*
 * Inbound capture, one program per pod network namespace (sk_lookup): a
 * connection to one of the pod's ports is handed to meshd's 15006 listener
 * in that netns, so PeerAuthentication and authorization are enforced before
 * the app sees a byte. meshd's own deliveries (from 127.0.0.6) and the pod's
 * connections to itself pass. If meshd's listener is gone, STRICT pods drop
 * (fail closed) instead of falling back to plaintext.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"

#define AF_INET 2
#define LOOPBACK_IFINDEX 1

/* meshd's own ports inside the pod: never steered. */
static __always_inline int is_mesh_port(__u32 port)
{
	return port == 15001 || port == 15006 || port == 15008 || port == 15020 || port == 15021;
}

static __always_inline __u8 port_mode(const struct bm_pod_inbound *pi, __u32 port)
{
	for (int i = 0; i < BM_POD_PORT_OVERRIDES; i++) {
		if (i >= pi->n_ports)
			break;
		if (pi->port[i] == port)
			return pi->port_mode[i];
	}
	return pi->mode;
}

SEC("sk_lookup")
int bm_inbound(struct bpf_sk_lookup *ctx)
{
	const struct bm_pod_inbound *pi;
	struct bpf_sock *sk;
	__u32 ip = ctx->local_ip4, slot;
	__u8 mode;
	long err;

	if (ctx->family != AF_INET || ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	if (is_mesh_port(ctx->local_port) || ctx->remote_ip4 == BM_DELIVERY_SRC ||
	    ctx->ingress_ifindex == LOOPBACK_IFINDEX)
		return SK_PASS;
	pi = bpf_map_lookup_elem(&pod_inbound_v1, &ip);
	if (!pi)
		return SK_PASS;
	mode = port_mode(pi, ctx->local_port);
	if (mode == BM_MTLS_DISABLE)
		return SK_PASS;
	slot = pi->slot;
	sk = bpf_map_lookup_elem(&inbound_socks_v1, &slot);
	if (!sk)
		return mode == BM_MTLS_STRICT ? SK_DROP : SK_PASS;
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err)
		return mode == BM_MTLS_STRICT ? SK_DROP : SK_PASS;
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
