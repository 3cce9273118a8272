/* agent/capture.c's socket helpers in a network namespace of their own
 * (made with `ip netns`, so root only: skipped otherwise): a pod listener
 * hands out connections that already have TCP_NODELAY, and a delivery
 * socket bound to 127.0.0.6 connects. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include "unit.h"
#include "../../agent/capture.h"

static void test_capture_listener_nodelay(void)
{
	char ns[32], cmd[192];
	struct sockaddr_in peer;
	socklen_t len = sizeof(peer);
	int l, c, a = -1, on = 0;

	if (geteuid()) {
		fprintf(stderr, "  (not root: listener test skipped)\n");
		return;
	}
	snprintf(ns, sizeof(ns), "bmu-cap-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd), "ip netns add %s && ip -n %s link set lo up", ns, ns);
	CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
	l = bm_netns_listen(ns, htonl(INADDR_LOOPBACK), 15001, 16);
	CU_ASSERT(l >= 0);
	/* From 127.0.0.6, as meshd's deliveries. */
	c = l >= 0 ? bm_netns_connect(ns, inet_addr("127.0.0.6"), htonl(INADDR_LOOPBACK), 15001) : -1;
	CU_ASSERT(c >= 0);
	for (int i = 0; i < 100 && c >= 0 && a < 0; i++) {
		a = accept4(l, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
		if (a < 0)
			usleep(1000);
	}
	CU_ASSERT(a >= 0);
	if (a >= 0) {
		len = sizeof(on);
		CU_ASSERT_EQUAL(getsockopt(a, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
		CU_ASSERT_EQUAL(on, 1);
		CU_ASSERT_EQUAL(peer.sin_addr.s_addr, inet_addr("127.0.0.6"));
		close(a);
	}
	if (c >= 0)
		close(c);
	if (l >= 0)
		close(l);
	snprintf(cmd, sizeof(cmd), "ip netns del %s", ns);
	CU_ASSERT_EQUAL(system(cmd), 0);
}

BM_SUITE(capture, BM_CASE(test_capture_listener_nodelay))
