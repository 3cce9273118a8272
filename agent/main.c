/*
 * meshd: the bpfmesh node agent. Loads and adopts the kernel programs for
 * one node, watches the resource store, compiles it into the kernel maps,
 * and answers meshctl on its admin socket.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <bpf/libbpf.h>
#include "accesslog.h"
#include "tracing.h"
#include "agent.h"
#include "l7agent.h"
#include "log.h"
#include "mesh.h"
#include "metrics.h"
#include "policy.h"
#include "proxy.h"
#include "store.h"

#define TICK_MS 100          /* GC and the store-generation fallback poll */

uint64_t bm_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Phase times of a reload, logged when BPFMESH_RELOAD_TIMES is set (the
 * scale bench): where a change's time goes without a profiler. */
static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: meshd --node NAME --cgroup DIR --bpffs DIR --run-dir DIR [--store URL]\n"
		"       meshd --cleanup --bpffs DIR\n\n"
		"  --node      this node's name\n"
		"  --cgroup    the cgroup v2 subtree holding this node's pods (never the root)\n"
		"  --bpffs     pin directory for this node's maps and links (e.g. /sys/fs/bpf/bpfmesh/NODE)\n"
		"  --run-dir   admin socket and node state (e.g. /run/bpfmesh/NODE)\n"
		"  --store     resource store URL: file:///DIR or etcd://HOST:PORT[,HOST:PORT...]\n"
		"              (default $BPFMESH_STORE or file:///var/lib/bpfmesh)\n"
		"  --metrics-addr  Prometheus endpoint, IP:PORT (default 0.0.0.0:15020, in meshd's netns)\n"
		"  --ready-addr    readiness endpoint /healthz/ready, IP:PORT (default 0.0.0.0:15021)\n"
		"  --trust-domain  SPIFFE trust domain (default cluster.local)\n"
		"  --ca-dir DIR    embedded mesh CA: root created or loaded there (default <store dir>/ca)\n"
		"  --ca-cert FILE --ca-key FILE   use a given CA instead\n"
		"  --cert-ttl SECONDS             workload certificate lifetime (default 86400)\n"
		"  --ca-serve IP:PORT             also sign other nodes' CSRs there (port 15012)\n"
		"  --ca-addr HOST:PORT --ca-bundle ROOT.pem [--join-token TOKEN]\n"
		"                  no CA key on this node: SVIDs by CSR from that CA service,\n"
		"                  joining once with a token from `meshctl node join NODE`\n"
		"  --join-only     with --ca-addr: get the node certificate into --run-dir, then exit\n"
		"  --no-proxy      no user-space mesh path: every backend on the kernel L4 path\n"
		"  --workers N     proxy worker threads (default one per two CPUs, rounded up)\n"
		"  --access-log-file PATH  access logs of workloads no Telemetry decides for (O_APPEND)\n"
		"  --zipkin-url URL        report L7 spans (Zipkin v2 JSON) to URL,\n"
		"                          e.g. http://zipkin:9411/api/v2/spans\n"
		"  --trace-sampling PCT    sampling where no Telemetry sets it, 0-100 (default 1)\n"
		"  --cleanup   detach this node's programs and remove its pins, then exit\n");
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

int bm_agent_reload(struct bm_agent *a)
{
	struct bm_l7_config *l7 = NULL;
	struct bm_model m;
	json_t *res = NULL;
	uint64_t gen = 0;
	double t[7];
	int err;

	t[0] = now_us();
	err = bm_store_list(a->store, NULL, NULL, &res, &gen);
	t[1] = now_us();
	pthread_mutex_lock(&a->lock);
	a->reloads++;
	if (!err)
		a->store_generation = gen;
	pthread_mutex_unlock(&a->lock);
	if (err) {
		snprintf(a->last_error, sizeof(a->last_error), "read store: %s", strerror(-err));
		goto fail;
	}
	/* Clusters whose inputs are the same objects as last time are reused:
	 * a->resources still holds those objects here. */
	err = bm_model_build_inc(res, &a->model, &m, stderr);
	if (err) {
		json_decref(res);
		snprintf(a->last_error, sizeof(a->last_error), "build model: %s", strerror(-err));
		goto fail;
	}
	t[2] = now_us();
	err = bm_l7_agent_build(a, res, &m, &l7);
	t[3] = now_us();
	if (err) {
		bm_model_free(&m);
		json_decref(res);
		snprintf(a->last_error, sizeof(a->last_error), "build L7 configuration: %s",
			 strerror(-err));
		goto fail;
	}
	pthread_mutex_lock(&a->lock);
	err = bm_reconcile_apply(&a->rec, &m, bm_now_ms());
	t[4] = now_us();
	bm_model_free(&a->model);
	a->model = m;
	json_decref(a->resources);
	a->resources = res;
	bm_policy_store_changed(res); /* (re)arm JWKS fetches before requests need them */
	bm_mesh_sync(a);
	t[5] = now_us();
	bm_l7_agent_publish(a, l7); /* after the pods' sync: access-log sinks per pod */
	if (!err) {
		a->model_warnings = m.warnings;
		a->applied_generation = gen;
		a->last_error[0] = 0;
	}
	pthread_mutex_unlock(&a->lock);
	if (err) {
		/* Partly applied: the services that failed keep their old entries. */
		snprintf(a->last_error, sizeof(a->last_error), "apply to maps: %s", strerror(-err));
		goto fail;
	}
	bm_pods_write_hosts(&a->pods, &a->model);
	/* A reload holds the old and the new model at once; give the peak
	 * back to the system rather than keep it in malloc's free lists. */
	malloc_trim(0);
	t[6] = now_us();
	if (getenv("BPFMESH_RELOAD_TIMES"))
		bm_log("reload times (ms): list %.1f (%zu files parsed), model %.1f, l7 %.1f, "
		       "maps %.1f (%u services not rehashed), sync %.1f, publish+hosts+trim %.1f",
		       (t[1] - t[0]) / 1e3, bm_store_list_parsed(a->store), (t[2] - t[1]) / 1e3,
		       (t[3] - t[2]) / 1e3, (t[4] - t[3]) / 1e3, a->rec.skipped,
		       (t[5] - t[4]) / 1e3, (t[6] - t[5]) / 1e3);
	bm_log("generation %llu applied: %u services, %u clusters, %u backends, %u rewritten, %u warnings",
	       (unsigned long long)gen, a->rec.n_services, a->rec.n_clusters, a->rec.n_backends,
	       a->rec.writes, m.warnings);
	return 0;
fail:
	pthread_mutex_lock(&a->lock);
	a->reload_errors++;
	pthread_mutex_unlock(&a->lock);
	bm_log("reload failed, keeping the last good configuration: %s", a->last_error);
	return err;
}

static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

static int run(struct bm_agent *a)
{
	char admin_path[PATH_MAX + 16];
	int ep, sfd, tfd, ifd, afd, err = 0;
	struct itimerspec its = { .it_interval = { 0, TICK_MS * 1000000L },
				  .it_value = { 0, TICK_MS * 1000000L } };
	uint64_t last_poll = 0;
	sigset_t mask;

	snprintf(admin_path, sizeof(admin_path), "%s/admin.sock", a->run_dir);
	afd = bm_admin_listen(admin_path);
	if (afd < 0) {
		bm_log("admin socket %s: %s", admin_path, strerror(-afd));
		return afd;
	}
	/* inotify for a file store, an etcd watch stream for etcd; owned by the store. */
	ifd = bm_store_watch_fd(a->store);
	if (ifd < 0)
		bm_log("watch store: %s; polling every second instead", strerror(-ifd));
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	timerfd_settime(tfd, 0, &its, NULL);
	ep = epoll_create1(EPOLL_CLOEXEC);
	for (int i = 0, fds[] = { afd, ifd, sfd, tfd }; i < 4; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = fds[i] };

		if (fds[i] >= 0)
			epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
	}
	err = bm_metrics_start(a, a->metrics_addr);
	if (err)
		bm_log("metrics endpoint %s: %s; continuing without it", a->metrics_addr, strerror(-err));
	err = bm_ready_start(a, a->ready_addr);
	if (err)
		bm_log("readiness endpoint %s: %s; continuing without it", a->ready_addr, strerror(-err));
	err = 0;
	a->ready = 1;
	bm_log("node %s ready: admin %s, store %s, generation %llu", a->node, admin_path,
	       a->store_url, (unsigned long long)a->applied_generation);

	for (;;) {
		struct epoll_event evs[8];
		int n = epoll_wait(ep, evs, 8, -1);

		if (n < 0 && errno == EINTR)
			continue;
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == afd) {
				bm_admin_serve(a, afd);
			} else if (fd == sfd) {
				struct signalfd_siginfo si;

				if (read(sfd, &si, sizeof(si)) == sizeof(si) && si.ssi_signo == SIGHUP) {
					bm_agent_reload(a);
					continue;
				}
				bm_log("signal %d: exiting; the kernel path stays attached", (int)si.ssi_signo);
				goto out;
			} else if (fd == ifd) {
				int changed = bm_store_watch_ack(a->store);

				if (changed == BM_STORE_RELIST)
					bm_log("store history compacted past our revision: full re-list");
				if (changed > 0)
					bm_agent_reload(a);
			} else if (fd == tfd) {
				uint64_t ticks, now = bm_now_ms(), gen = 0;

				if (read(tfd, &ticks, sizeof(ticks)) < 0)
					continue;
				bm_reconcile_gc(&a->rec, now);
				bm_mesh_tick(a, time(NULL));
				bm_l7_agent_tick(a, now);
				/* Fallback for missed events, and retry after a failed reload.
				 * A store known to be unreachable is not asked every second
				 * (a hung etcd would block this loop for the request timeout):
				 * its watcher fires when it is back. */
				if (now - last_poll >= 1000) {
					int connected = 1;
					time_t last_ok;

					last_poll = now;
					if (ifd >= 0)
						bm_store_health(a->store, &connected, &last_ok);
					if (connected && !bm_store_generation(a->store, &gen) &&
					    (gen != a->applied_generation || a->last_error[0]))
						bm_agent_reload(a);
				}
			}
		}
	}
out:
	close(ep);
	close(tfd);
	close(sfd);
	close(afd);
	unlink(admin_path);
	return err;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "node", required_argument, 0, 'n' },   { "cgroup", required_argument, 0, 'c' },
		{ "bpffs", required_argument, 0, 'b' },  { "run-dir", required_argument, 0, 'r' },
		{ "store", required_argument, 0, 's' },  { "cleanup", no_argument, 0, 'C' },
		{ "metrics-addr", required_argument, 0, 'm' },
		{ "ready-addr", required_argument, 0, 'R' },
		{ "trust-domain", required_argument, 0, 'T' }, { "ca-dir", required_argument, 0, 'D' },
		{ "ca-cert", required_argument, 0, 'E' },      { "ca-key", required_argument, 0, 'K' },
		{ "cert-ttl", required_argument, 0, 'L' },
		{ "no-proxy", no_argument, 0, 'P' },         { "workers", required_argument, 0, 'W' },
		{ "access-log-file", required_argument, 0, 'A' },
		{ "ca-serve", required_argument, 0, 1001 },  { "ca-addr", required_argument, 0, 1002 },
		{ "ca-bundle", required_argument, 0, 1003 }, { "join-token", required_argument, 0, 1004 },
		{ "join-only", no_argument, 0, 1005 },
		{ "zipkin-url", required_argument, 0, 1006 },
		{ "trace-sampling", required_argument, 0, 1007 },
		{ "help", no_argument, 0, 'h' },         { 0, 0, 0, 0 },
	};
	static struct bm_agent a;
	const char *cgroup = NULL, *bpffs = NULL, *store = getenv("BPFMESH_STORE");
	char path[PATH_MAX + 32], ca_dir[sizeof(a.store_url) + 16];
	struct bm_mesh_opts mo = { 0 };
	int cleanup = 0, no_proxy = 0, workers = 0, join_only = 0, c, err;
	const char *access_log = NULL, *zipkin_url = NULL;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'n': snprintf(a.node, sizeof(a.node), "%s", optarg); break;
		case 'c': cgroup = optarg; break;
		case 'b': bpffs = optarg; break;
		case 'r': snprintf(a.run_dir, sizeof(a.run_dir), "%s", optarg); break;
		case 's': store = optarg; break;
		case 'C': cleanup = 1; break;
		case 'm': snprintf(a.metrics_addr, sizeof(a.metrics_addr), "%s", optarg); break;
		case 'R': snprintf(a.ready_addr, sizeof(a.ready_addr), "%s", optarg); break;
		case 'T': mo.trust_domain = optarg; break;
		case 'D': mo.ca_dir = optarg; break;
		case 'E': mo.ca_cert = optarg; break;
		case 'K': mo.ca_key = optarg; break;
		case 'L': mo.cert_ttl = atol(optarg); break;
		case 'P': no_proxy = 1; break;
		case 'W': workers = atoi(optarg); break;
		case 'A': access_log = optarg; break;
		case 1001: mo.ca_serve = optarg; break;
		case 1002: mo.ca_addr = optarg; break;
		case 1003: mo.ca_bundle = optarg; break;
		case 1004: mo.join_token = optarg; break;
		case 1005: join_only = 1; break;
		case 1006: zipkin_url = optarg; break;
		case 1007: {
			char *end;
			double pct = strtod(optarg, &end);

			if (end == optarg || *end || !(pct >= 0 && pct <= 100)) {
				bm_log("--trace-sampling %s: a percentage, 0 to 100", optarg);
				return 2;
			}
			bm_trace_set_default_sampling(pct);
			break;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	libbpf_set_print(libbpf_print);
	{
		/* Every proxied connection costs 2-3 fds; the usual soft limit of
		 * 1024 would cap the node at a few hundred connections. */
		struct rlimit rl;

		if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	if (cleanup) {
		if (!bpffs) {
			usage(stderr);
			return 2;
		}
		err = bm_loader_cleanup(bpffs);
		if (err)
			bm_log("cleanup %s: %s", bpffs, strerror(-err));
		return err ? 1 : 0;
	}
	if (join_only) {
		/* Enrol a node ahead of time (or check it): nothing else starts. */
		if (!a.node[0] || !a.run_dir[0]) {
			usage(stderr);
			return 2;
		}
		err = mkdir_p(a.run_dir);
		if (!err)
			err = bm_mesh_join(&mo, a.node, a.run_dir);
		if (err)
			bm_log("join: no valid node certificate in %s: %s", a.run_dir, strerror(-err));
		return err ? 1 : 0;
	}
	if (!a.node[0] || !cgroup || !bpffs || !a.run_dir[0]) {
		usage(stderr);
		return 2;
	}
	if (access_log && bm_accesslog_set_file(access_log))
		return 1;   /* accesslog.c said why */
	if (zipkin_url && bm_trace_start_exporter(zipkin_url, a.node))
		return 1;   /* tracing.c said why */
	snprintf(a.store_url, sizeof(a.store_url), "%s", store && *store ? store : "file:///var/lib/bpfmesh");
	a.started = time(NULL);
	pthread_mutex_init(&a.lock, NULL);
	if (!a.metrics_addr[0])
		snprintf(a.metrics_addr, sizeof(a.metrics_addr), "0.0.0.0:15020");
	if (!a.ready_addr[0])
		snprintf(a.ready_addr, sizeof(a.ready_addr), "0.0.0.0:15021");

	err = mkdir_p(a.run_dir);
	if (err) {
		bm_log("create run directory %s: %s", a.run_dir, strerror(-err));
		return 1;
	}
	err = bm_store_open(a.store_url, &a.store);
	if (err) {
		bm_log("open store %s: %s", a.store_url, strerror(-err));
		return 1;
	}
	err = bm_loader_open(&a.loader, bpffs, cgroup);
	if (err)
		goto err_store;
	bm_log("programs %s: %d link(s) adopted, %d attached; maps %s", bpffs,
	       a.loader.adopted_links, a.loader.created_links,
	       a.loader.adopted_maps ? "adopted" : "created");
	snprintf(path, sizeof(path), "%s/ids.json", a.run_dir);
	err = bm_reconcile_init(&a.rec, &a.loader.fd, path);
	if (err)
		goto err_loader;
	if (!mo.ca_dir) {
		/* Embedded mode: nodes sharing a file store share its CA. */
		if (!strncmp(a.store_url, "file://", 7) || a.store_url[0] == '/')
			snprintf(ca_dir, sizeof(ca_dir), "%.4000s/ca",
				 a.store_url + (a.store_url[0] == '/' ? 0 : 7));
		else
			snprintf(ca_dir, sizeof(ca_dir), "%.4000s/ca", a.run_dir);
		mo.ca_dir = ca_dir;
	}
	if (bm_l7_agent_init(&a)) {
		err = -ENOMEM;
		goto err_rec;
	}
	if (bm_mesh_init(&a, &mo)) {
		bm_log("mesh identity disabled: the kernel L4 path works without it");
	} else if (!no_proxy) {
		struct bm_proxy_opts po = { .workers = workers, .ids = &a.idm };

		err = bm_proxy_start(&a, &po, &a.proxy);
		if (err)
			bm_log("proxy: %s; mesh workloads are served on the kernel path only", strerror(-err));
		a.rec.mesh = a.proxy != NULL;
	}
	snprintf(path, sizeof(path), "%s/pods.json", a.run_dir);
	bm_pods_load(&a.pods, path);
	bm_agent_reload(&a); /* a failure keeps what the maps already hold */

	err = run(&a);
	bm_metrics_stop(); /* before what a scrape reads is freed */

	if (a.proxy)
		bm_proxy_stop(a.proxy);
	bm_trace_stop_exporter(); /* after the workers: they queue spans */
	bm_l7_agent_free(&a);
	bm_policy_shutdown();
	bm_mesh_free(&a);
	bm_pods_free(&a.pods);
	bm_model_free(&a.model);
	json_decref(a.resources);
err_rec:
	bm_reconcile_free(&a.rec);
err_loader:
	bm_loader_close(&a.loader);
err_store:
	bm_store_close(a.store);
	return err ? 1 : 0;
}
