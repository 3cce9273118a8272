/* bm-connlat: connect() latency for tests/bench/scale.sh (issue #6: connect
 * latency must not grow with the number of services in the maps).
 *
 *   bm-connlat serve IP:PORT         accept and close, until killed
 *   bm-connlat connect IP:PORT N     N sequential blocking connect()s, each on
 *                                    a new socket; prints each one's latency
 *                                    in nanoseconds, one per line
 *
 * The timer brackets connect() alone: the cgroup connect4 hook (service
 * lookup, backend pick, rewrite) and the loopback handshake. Each socket is
 * closed with a reset (SO_LINGER 0), so no TIME_WAIT piles up over runs.
 * Exit status 1 if any connect failed (the count goes to stderr). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
	char ip[64];
	const char *colon = strrchr(s, ':');

	if (!colon || (size_t)(colon - s) >= sizeof(ip))
		return -1;
	memcpy(ip, s, (size_t)(colon - s));
	ip[colon - s] = 0;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, ip, &sa->sin_addr) == 1 ? 0 : -1;
}

static int serve(const struct sockaddr_in *sa)
{
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) || listen(fd, 4096)) {
		perror("bm-connlat: listen");
		return 1;
	}
	for (;;) {
		int c = accept(fd, NULL, NULL);

		if (c >= 0)
			close(c);
		else if (errno != EINTR && errno != ECONNABORTED)
			usleep(1000);
	}
}

static int connect_n(const struct sockaddr_in *sa, long n)
{
	struct linger lg = { 1, 0 };
	long failed = 0;
	int last_err = 0;

	for (long i = 0; i < n; i++) {
		struct timespec t0, t1;
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), r;

		if (fd < 0) {
			perror("bm-connlat: socket");
			return 1;
		}
		clock_gettime(CLOCK_MONOTONIC, &t0);
		r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (r) {
			failed++;
			last_err = errno;
		} else {
			printf("%lld\n", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL +
					 (t1.tv_nsec - t0.tv_nsec));
		}
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
	}
	if (failed)
		fprintf(stderr, "bm-connlat: %ld of %ld connects failed (last: %s)\n", failed, n,
			strerror(last_err));
	return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa;

	if (argc >= 3 && !strcmp(argv[1], "serve") && !parse_addr(argv[2], &sa))
		return serve(&sa);
	if (argc >= 4 && !strcmp(argv[1], "connect") && !parse_addr(argv[2], &sa))
		return connect_n(&sa, atol(argv[3]));
	fprintf(stderr, "usage: bm-connlat serve IP:PORT | connect IP:PORT N\n");
	return 2;
}
