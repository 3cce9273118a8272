/* Capture plumbing for the mesh path: meshd's listeners inside a pod's
 * network namespace, the per-pod sk_lookup program that steers inbound
 * connections to them, and the original destination of captured outbound
 * connections. */
#ifndef BM_CAPTURE_H
#define BM_CAPTURE_H
#include <stdint.h>
#include "bpfmesh/abi.h"
#include "loader.h"

#define BM_PORT_OUTBOUND 15001   /* 127.0.0.1, captured outbound */
#define BM_PORT_INBOUND  15006   /* plaintext inbound (sk_lookup) */
#define BM_PORT_HBONE    15008   /* HBONE on the pod IP */

/* Listening TCP socket bound to ip:port (ip network order) inside the network
 * namespace /run/netns/<netns>. Returns the fd or -errno. The calling thread
 * returns to its own namespace before this returns. */
int bm_netns_listen(const char *netns, uint32_t ip, uint16_t port, int backlog);
/* Connected TCP socket to ip:port inside /run/netns/<netns>, from src_ip
 * (network order, 0 = any), non-blocking (connect in progress is fine). */
int bm_netns_connect(const char *netns, uint32_t src_ip, uint32_t ip, uint16_t port);
/* The same with the namespace already open (an fd of /run/netns/<netns>):
 * the per-connection path, without opening anything. */
int bm_netns_connect_fd(int netns_fd, uint32_t src_ip, uint32_t ip, uint16_t port);
/* O_RDONLY fd of /run/netns/<netns>, or -errno. */
int bm_netns_open(const char *netns);

/* Attach (or adopt) the sk_lookup program in the pod's netns, pin its link as
 * link_inbound_<slot>, publish the pod's mode, and put listener_fd (meshd's
 * 15006 socket in that netns, or -1) in the sockmap slot. */
int bm_capture_pod_attach(struct bm_loader *l, const char *netns, uint32_t pod_ip,
			  uint32_t slot, const struct bm_pod_inbound *mode, int listener_fd);
/* Update only the mode (PeerAuthentication changed). */
int bm_capture_pod_mode(struct bm_loader *l, uint32_t pod_ip, const struct bm_pod_inbound *mode);
/* Remove the pod: unpin its link (detaches), forget its mode and slot. */
void bm_capture_pod_detach(struct bm_loader *l, uint32_t pod_ip, uint32_t slot);

/* Where a connection accepted on a pod's 15001 listener was going: looked up
 * by the listener netns' cookie and the client's port (host order), and
 * deleted in the same call. */
int bm_capture_orig_dst(const struct bm_loader *l, uint64_t netns_cookie, uint16_t sport,
			struct bm_orig_dst *out);

#endif
