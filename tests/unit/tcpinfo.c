/* The kernel's own struct tcp_info (glibc's lacks the RFC 4898 counters),
 * kept in a file of its own: <linux/tcp.h> and <netinet/tcp.h> cannot be
 * included together. */
#include <stddef.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <linux/tcp.h>
#include "tcpinfo.h"

long t_data_segs_in(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) ||
	    len < offsetof(struct tcp_info, tcpi_data_segs_in) + sizeof(ti.tcpi_data_segs_in))
		return -1;
	return (long)ti.tcpi_data_segs_in;
}
