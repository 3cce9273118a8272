/*
 * Proxy workers: pods, listeners, the command queue and ticks, and the
 * API of proxy.h. The three ways a connection comes in are handled by
 * agent/proxy_local.c (15001 outbound capture, 15006 plaintext),
 * agent/proxy_hbone.c (15008 HBONE, and the tunnels out) and
 * agent/proxy_l7.c (connections whose routing or policy needs HTTP);
 * counters are agent/proxy_stats.c; what they share is agent/proxy_int.h.
 *
 * Every worker puts every pod listener in its own epoll with EPOLLEXCLUSIVE
 * (the kernel wakes one waiter per connection). The kernel wakes the first
 * idle waiter, nearly always the same worker, so the worker that accepted a
 * connection deals connections out round-robin: its own turn it keeps, the
 * others' it posts to their command queue (CMD_CONN). A connection then
 * lives in one worker only. Pods are immutable and reference counted; the
 * main thread sends add/remove messages and each worker keeps its own list,
 * so the data path reads pods without a lock.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include "agent.h"
#include "capture.h"
#include "hbone.h"
#include "l7.h"
#include "l7proxy.h"
#include "log.h"
#include "proxy.h"
#include "proxy_int.h"
#include "reqmetrics.h"
#include "relay.h"
#include "tlsctx.h"

/* One connection per wake-up (the listeners are level-triggered): the
 * next pending one wakes a waiting worker again. */
#define ACCEPT_BATCH 1

/* ---- pods --------------------------------------------------------------- */

void px_pod_put(struct ppod *pod)
{
	if (__atomic_sub_fetch(&pod->refs, 1, __ATOMIC_ACQ_REL))
		return;
	for (int k = 0; k < L_KINDS; k++)
		if (pod->lfd[k] >= 0)
			close(pod->lfd[k]);
	if (pod->nsfd >= 0)
		close(pod->nsfd);
	SSL_CTX_free(pod->sctx);
	SSL_CTX_free(pod->cctx);
	json_decref(pod->labels);
	free(pod->lst);
	free(pod);
}

void px_pod_get(struct ppod *pod)
{
	__atomic_add_fetch(&pod->refs, 1, __ATOMIC_ACQ_REL);
}

struct ppod *px_worker_pod_by_ip(struct worker *w, uint32_t ip)
{
	for (size_t i = 0; i < w->n_pods; i++)
		if (w->pods[i]->cfg.ip == ip)
			return w->pods[i];
	return NULL;
}

/* "td/ns/NS/sa/SA" -> NS */
const char *px_principal_ns(const char *principal, char *buf, size_t len)
{
	const char *p = principal ? strstr(principal, "/ns/") : NULL;
	size_t n;

	if (!p)
		return NULL;
	p += 4;
	n = strcspn(p, "/");
	if (!n || n >= len)
		return NULL;
	memcpy(buf, p, n);
	buf[n] = 0;
	return buf;
}

void px_ip_str(uint32_t ip, char *buf)
{
	inet_ntop(AF_INET, &ip, buf, INET_ADDRSTRLEN);
}

/* ---- worker -------------------------------------------------------------- */

static void dispatch_conn(struct worker *w, struct ppod *pod, int kind, int fd,
			  const struct sockaddr_in *peer)
{
	w->st.accepted++;
	switch (kind) {
	case L_OUTBOUND: px_accept_outbound(w, pod, fd, peer); break;
	case L_INBOUND: px_accept_inbound_plain(w, pod, fd, peer); break;
	case L_HBONE: px_accept_hbone(w, pod, fd, peer); break;
	}
}

static int post_conn(struct worker *w, struct ppod *pod, int kind, int fd,
		     const struct sockaddr_in *peer);

static void on_listener(struct bm_ev *ev, uint32_t events)
{
	struct plistener *pl = (struct plistener *)ev;
	struct worker *w = pl->w;
	unsigned t;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_in peer;
		socklen_t plen = sizeof(peer);
		/* TCP_NODELAY comes from the listener (bm_netns_listen). */
		int fd = accept4(ev->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
			/* Out of descriptors: the level-triggered listener would wake
			 * us again at once, forever. Free the spare, take the
			 * connection off the queue and reset it, keep the spare; when
			 * there is no spare (another worker took the slot), leave
			 * this listener alone until the next tick. */
			if (w->spare_fd >= 0) {
				close(w->spare_fd);
				fd = accept4(ev->fd, NULL, NULL, SOCK_CLOEXEC);
				if (fd >= 0)
					bm_close_reset(fd);
				w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
			}
			w->st.conns[pl->kind == L_OUTBOUND ? BM_PDIR_OUT_LOCAL : BM_PDIR_IN_PLAIN][BM_PRES_ERROR]++;
			bm_wstats_deny(&w->st, "out_of_file_descriptors");
			if (w->spare_fd < 0 && !pl->paused) {
				bm_loop_del(&w->loop, ev);
				pl->paused = 1;
				w->n_paused++;
			}
			return;
		}
		if (fd < 0)
			return; /* EAGAIN: another worker took it, or none left */
		t = w->p->n > 1 ? __atomic_fetch_add(&w->p->rr, 1, __ATOMIC_RELAXED) % (unsigned)w->p->n
				: (unsigned)w->idx;
		if (t != (unsigned)w->idx && !post_conn(&w->p->w[t], pl->pod, pl->kind, fd, &peer))
			continue;
		dispatch_conn(w, pl->pod, pl->kind, fd, &peer);
	}
}

static void worker_add_pod(struct worker *w, struct ppod *pod)
{
	if (w->n_pods == w->cap_pods) {
		size_t cap = w->cap_pods ? w->cap_pods * 2 : 16;
		struct ppod **np = realloc(w->pods, cap * sizeof(*np));

		if (!np) {
			bm_log("proxy worker %d: no memory for pod %s/%s", w->idx, pod->cfg.ns, pod->cfg.name);
			px_pod_put(pod);
			return;
		}
		w->pods = np;
		w->cap_pods = cap;
	}
	w->pods[w->n_pods++] = pod;
	for (int k = 0; k < L_KINDS; k++) {
		struct plistener *pl = &pod->lst[w->idx * L_KINDS + k];

		if (pod->lfd[k] >= 0 && bm_loop_add(&w->loop, &pl->ev, EPOLLIN | EPOLLEXCLUSIVE))
			bm_log("proxy worker %d: epoll add listener %d of %s/%s: %s", w->idx, k,
			       pod->cfg.ns, pod->cfg.name, strerror(errno));
	}
}

static void worker_del_pod(struct worker *w, struct ppod *pod)
{
	for (size_t i = 0; i < w->n_pods; i++) {
		if (w->pods[i] != pod)
			continue;
		for (int k = 0; k < L_KINDS; k++) {
			struct plistener *pl = &pod->lst[w->idx * L_KINDS + k];

			if (pod->lfd[k] >= 0 && !pl->paused)
				bm_loop_del(&w->loop, &pl->ev);
			if (pl->paused) {
				pl->paused = 0;
				w->n_paused--;
			}
		}
		w->pods[i] = w->pods[--w->n_pods];
		px_pod_put(pod);
		return;
	}
}

static void worker_set_l7(struct worker *w, struct bm_l7_config *cfg)
{
	if (w->l7) {
		bm_l7_engine_set_outlier(w->l7, w->p->a ? w->p->a->outlier : NULL);
		bm_l7_engine_set_config(w->l7, cfg);
	}
	if (w->cfg)
		bm_l7_put(w->cfg);
	w->cfg = cfg; /* the message's reference, for the access-log sinks */
}

static void on_cmd(struct bm_ev *ev, uint32_t events)
{
	struct worker *w = (struct worker *)((char *)ev - offsetof(struct worker, cmd_ev));
	uint64_t v;
	struct cmd *list;

	if (read(ev->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	pthread_mutex_lock(&w->cmd_lock);
	list = w->cmds;
	w->cmds = w->cmds_tail = NULL;
	pthread_mutex_unlock(&w->cmd_lock);
	while (list) {
		struct cmd *c = list;

		list = c->next;
		if (c->op == CMD_ADD)
			worker_add_pod(w, c->pod);
		else if (c->op == CMD_DEL)
			worker_del_pod(w, c->pod);
		else if (c->op == CMD_L7)
			worker_set_l7(w, c->l7);
		else if (c->op == CMD_CONN) {
			if (w->stop)
				close(c->fd); /* stopping: nobody would serve it */
			else
				dispatch_conn(w, c->pod, c->kind, c->fd, &c->peer);
			px_pod_put(c->pod);
		} else
			w->stop = 1;
		free(c);
	}
}

static void on_tick(struct bm_ev *ev, uint32_t events)
{
	struct worker *w = (struct worker *)((char *)ev - offsetof(struct worker, tick_ev));
	struct bm_proxy *p = w->p;
	uint64_t n;

	if (read(ev->fd, &n, sizeof(n)) < 0)
		return;
	if (w->spare_fd < 0)
		w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	/* Listeners paused when descriptors ran out: back on the epoll once
	 * the spare could be had again. */
	for (size_t i = 0; i < w->n_pods && w->n_paused && w->spare_fd >= 0; i++)
		for (int k = 0; k < L_KINDS; k++) {
			struct plistener *pl = &w->pods[i]->lst[w->idx * L_KINDS + k];

			if (pl->paused && !bm_loop_add(&w->loop, &pl->ev, EPOLLIN | EPOLLEXCLUSIVE)) {
				pl->paused = 0;
				w->n_paused--;
			}
		}
	for (struct bm_hbone_conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		bm_hbone_conn_tick(c, w->loop.now_ms, p->ping_idle_ms, p->ping_timeout_ms,
				   c->server ? 0 : p->pool_idle_ms);
	}
}

/* Appends c to w's queue and wakes w. */
static int cmd_enqueue(struct worker *w, struct cmd *c)
{
	uint64_t one = 1;

	pthread_mutex_lock(&w->cmd_lock);
	if (w->cmds_tail)
		w->cmds_tail->next = c;
	else
		w->cmds = c;
	w->cmds_tail = c;
	pthread_mutex_unlock(&w->cmd_lock);
	return write(w->cmd_ev.fd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

static int post_cmd(struct worker *w, int op, struct ppod *pod, struct bm_l7_config *l7)
{
	struct cmd *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->op = op;
	c->pod = pod;
	c->l7 = l7;
	return cmd_enqueue(w, c);
}

static int post(struct worker *w, int op, struct ppod *pod)
{
	return post_cmd(w, op, pod, NULL);
}

/* Hands an accepted connection to worker w (with a pod reference for it).
 * 0, or -errno and the caller keeps the connection. */
static int post_conn(struct worker *w, struct ppod *pod, int kind, int fd,
		     const struct sockaddr_in *peer)
{
	struct cmd *c;

	if (__atomic_load_n(&w->stop, __ATOMIC_RELAXED) || !(c = calloc(1, sizeof(*c))))
		return -EAGAIN;
	px_pod_get(pod);
	c->op = CMD_CONN;
	c->pod = pod;
	c->fd = fd;
	c->kind = kind;
	c->peer = *peer;
	/* Queued even if the wake-up fails: the worker gets it at its next
	 * wake-up, and worker_fini closes it if that never comes. */
	if (cmd_enqueue(w, c))
		bm_log("proxy worker %d: wake-up for a handed-over connection failed: %s", w->idx,
		       strerror(errno));
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	sigset_t all;

	/* Signals are the main thread's (signalfd); EPIPE is handled inline. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	while (!w->stop)
		if (bm_loop_run_once(&w->loop, -1) < 0)
			break;
	return NULL;
}

static void worker_fini(struct worker *w)
{
	/* HTTP connections first: they hold pods and HBONE streams */
	bm_l7_engine_free(w->l7);
	w->l7 = NULL;
	while (w->conns)
		bm_hbone_conn_close(w->conns);
	while (w->n_pods)
		worker_del_pod(w, w->pods[0]);
	free(w->pods);
	for (int i = 0; i < SESS_CACHE; i++)
		if (w->sess[i].s)
			SSL_SESSION_free(w->sess[i].s);
	while (w->cmds) {
		struct cmd *c = w->cmds;

		w->cmds = c->next;
		if (c->op == CMD_ADD)
			px_pod_put(c->pod);
		if (c->op == CMD_L7 && c->l7)
			bm_l7_put(c->l7);
		if (c->op == CMD_CONN) {
			close(c->fd);
			px_pod_put(c->pod);
		}
		free(c);
	}
	if (w->cmd_ev.fd >= 0)
		close(w->cmd_ev.fd);
	if (w->tick_ev.fd >= 0)
		close(w->tick_ev.fd);
	bm_loop_fini(&w->loop);
	if (w->spare_fd >= 0)
		close(w->spare_fd);
	w->spare_fd = -1;
	free(w->mt);
	w->mt = NULL;
	bm_req_table_free(w->rq);
	w->rq = NULL;
	if (w->cfg)
		bm_l7_put(w->cfg);
	w->cfg = NULL;
	pthread_mutex_destroy(&w->cmd_lock);
}

static int worker_init(struct bm_proxy *p, struct worker *w, int idx)
{
	struct itimerspec its = { .it_interval = { 1, 0 }, .it_value = { 1, 0 } };
	int err;

	w->p = p;
	w->idx = idx;
	w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	err = bm_loop_init(&w->loop, &w->st);
	if (err)
		return err;
	w->mt = calloc(1, sizeof(*w->mt));
	w->rq = bm_req_table_new();
	if (!w->mt || !w->rq)
		return -ENOMEM;
	w->cmd_ev.fn = on_cmd;
	w->cmd_ev.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	w->tick_ev.fn = on_tick;
	w->tick_ev.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (w->cmd_ev.fd < 0 || w->tick_ev.fd < 0 || timerfd_settime(w->tick_ev.fd, 0, &its, NULL))
		return -errno;
	if ((err = bm_loop_add(&w->loop, &w->cmd_ev, EPOLLIN)) ||
	    (err = bm_loop_add(&w->loop, &w->tick_ev, EPOLLIN)))
		return err;
	{
		struct bm_l7_ops ops = px_l7_ops;
		struct bm_l7_engine_opts eo = { .outlier = p->a ? p->a->outlier : NULL };

		ops.ctx = w;
		w->l7 = bm_l7_engine_new(&w->loop, &ops, &eo);
		if (!w->l7)
			return -ENOMEM;
	}
	return 0;
}

/* ---- API ----------------------------------------------------------------- */

/* One worker per two online CPUs, rounded up. meshd shares the node's CPUs
 * with the apps whose traffic it carries, and the kernel's network path (on
 * the sender's and the receiver's side) is most of each request's CPU. With a
 * worker on every CPU, the run queues hold a worker next to the busy apps on
 * each of them, and a worker waiting its turn holds up every connection it
 * owns for a scheduler slice: on 2 vCPUs at saturation the L7 path's p99 was
 * 3.3 ms with two workers and 0.57 ms with one, at the same throughput
 * (docs/performance.md, section 4). --workers sets any other count. */
int bm_proxy_default_workers(long ncpu)
{
	return ncpu > 1 ? (int)((ncpu + 1) / 2) : 1;
}

int bm_proxy_start(struct bm_agent *a, const struct bm_proxy_opts *o, struct bm_proxy **out)
{
	struct bm_proxy *p = calloc(1, sizeof(*p));
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int err = -ENOMEM;

	if (!p)
		return -ENOMEM;
	p->a = a;
	p->ids = o ? o->ids : NULL;
	p->n = o && o->workers > 0 ? o->workers : bm_proxy_default_workers(ncpu);
	p->ping_idle_ms = o && o->ping_idle_ms ? o->ping_idle_ms : 10000;
	p->ping_timeout_ms = o && o->ping_timeout_ms ? o->ping_timeout_ms : 5000;
	p->pool_idle_ms = o && o->pool_idle_ms ? o->pool_idle_ms : 120000;
	pthread_mutex_init(&p->lock, NULL);
	p->w = calloc((size_t)p->n, sizeof(*p->w));
	if (!p->w)
		goto err_free;
	for (int i = 0; i < p->n; i++) {
		/* What bm_proxy_stop() may close if a later init fails. */
		p->w[i].cmd_ev.fd = p->w[i].tick_ev.fd = p->w[i].loop.ep = p->w[i].spare_fd = -1;
		pthread_mutex_init(&p->w[i].cmd_lock, NULL);
	}
	for (int i = 0; i < p->n; i++) {
		err = worker_init(p, &p->w[i], i);
		if (err)
			goto err_workers;
	}
	for (int i = 0; i < p->n; i++) {
		err = -pthread_create(&p->w[i].th, NULL, worker_main, &p->w[i]);
		if (err)
			goto err_workers;
		p->w[i].started = 1;
	}
	bm_log("proxy: %d worker(s), HBONE %s", p->n, p->ids ? "on" : "off (no identities)");
	*out = p;
	return 0;
err_workers:
	bm_proxy_stop(p);
	return err;
err_free:
	free(p);
	return err;
}

void bm_proxy_stop(struct bm_proxy *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->n && p->w; i++)
		if (p->w[i].started)
			post(&p->w[i], CMD_STOP, NULL);
	for (int i = 0; i < p->n && p->w; i++)
		if (p->w[i].started)
			pthread_join(p->w[i].th, NULL);
	/* Workers are gone: their state can be torn down from here. */
	for (int i = 0; i < p->n && p->w; i++) {
		if (p->w[i].cmd_ev.fd >= 0)
			on_cmd(&p->w[i].cmd_ev, EPOLLIN); /* pending adds/removes */
		worker_fini(&p->w[i]);
	}
	for (size_t i = 0; i < p->n_pods; i++)
		px_pod_put(p->pods[i]);
	free(p->pods);
	if (p->l7)
		bm_l7_put(p->l7);
	free(p->w);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static void build_baggage(struct ppod *pod)
{
	const struct bm_proxy_pod *c = &pod->cfg;
	int n = snprintf(pod->baggage, sizeof(pod->baggage),
			 "k8s.namespace.name=%s,k8s.workload.name=%s", c->ns,
			 c->workload[0] ? c->workload : c->name);

	if (c->app[0] && n > 0 && (size_t)n < sizeof(pod->baggage))
		n += snprintf(pod->baggage + n, sizeof(pod->baggage) - (size_t)n,
			      ",service.name=%s", c->app);
	if (c->version[0] && n > 0 && (size_t)n < sizeof(pod->baggage))
		snprintf(pod->baggage + n, sizeof(pod->baggage) - (size_t)n,
			 ",service.version=%s", c->version);
}

int bm_proxy_pod_add(struct bm_proxy *p, const struct bm_proxy_pod *cfg)
{
	struct ppod *pod;
	int err;

	if (!cfg->name[0] || !cfg->netns[0] || !cfg->ip)
		return -EINVAL;
	pod = calloc(1, sizeof(*pod));
	if (!pod)
		return -ENOMEM;
	pod->cfg = *cfg;
	pod->cfg.labels[sizeof(pod->cfg.labels) - 1] = 0;
	if (pod->cfg.labels[0]) {
		pod->labels = json_loads(pod->cfg.labels, 0, NULL);
		if (pod->labels && !json_is_object(pod->labels)) {
			json_decref(pod->labels);
			pod->labels = NULL;
		}
	}
	pod->principal = strncmp(pod->cfg.spiffe_id, SPIFFE_PREFIX, strlen(SPIFFE_PREFIX)) ?
		pod->cfg.spiffe_id : pod->cfg.spiffe_id + strlen(SPIFFE_PREFIX);
	build_baggage(pod);
	pod->nsfd = bm_netns_open(cfg->netns);
	if (pod->nsfd < 0) {
		err = pod->nsfd;
		bm_log("proxy: netns %s: %s", cfg->netns, strerror(-err));
		json_decref(pod->labels);
		free(pod);
		return err;
	}
	pod->lfd[L_OUTBOUND] = cfg->fd_outbound;
	pod->lfd[L_INBOUND] = cfg->fd_inbound;
	pod->lfd[L_HBONE] = cfg->fd_hbone;
	/* A re-enrolment (new identity after a WorkloadEntry change) with fd
	 * -1 keeps the current listener: its port cannot be bound twice. */
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < p->n_pods; i++) {
		struct ppod *old = p->pods[i];

		if (strcmp(old->cfg.name, cfg->name) || strcmp(old->cfg.ns, cfg->ns))
			continue;
		for (int k = 0; k < L_KINDS; k++)
			if (pod->lfd[k] < 0 && old->lfd[k] >= 0)
				pod->lfd[k] = fcntl(old->lfd[k], F_DUPFD_CLOEXEC, 0);
	}
	pthread_mutex_unlock(&p->lock);
	/* The pod netns' cookie keys its captured connections' original
	 * destinations (0: none can be found, as without the listener). */
	{
		socklen_t len = sizeof(pod->netns_cookie);

		if (pod->lfd[L_OUTBOUND] < 0 || getsockopt(pod->lfd[L_OUTBOUND], SOL_SOCKET,
							   SO_NETNS_COOKIE, &pod->netns_cookie, &len))
			pod->netns_cookie = 0;
	}
	if (p->ids && cfg->spiffe_id[0]) {
		pod->sctx = bm_tls_server_ctx(p->ids, cfg->spiffe_id);
		pod->cctx = bm_tls_client_ctx(p->ids, cfg->spiffe_id);
		if (!pod->sctx || !pod->cctx) {
			err = -(errno ? errno : ENOMEM);
			bm_log("proxy: TLS contexts for %s: %s", cfg->spiffe_id, strerror(-err));
			goto err_free;
		}
	}
	pod->lst = calloc((size_t)p->n * L_KINDS, sizeof(*pod->lst));
	if (!pod->lst) {
		err = -ENOMEM;
		goto err_free;
	}
	for (int i = 0; i < p->n; i++) {
		for (int k = 0; k < L_KINDS; k++) {
			struct plistener *pl = &pod->lst[i * L_KINDS + k];

			pl->ev.fn = on_listener;
			pl->ev.fd = pod->lfd[k];
			pl->pod = pod;
			pl->w = &p->w[i];
			pl->kind = k;
		}
	}
	bm_proxy_pod_remove(p, cfg->ns, cfg->name); /* a re-enrolment replaces */
	pthread_mutex_lock(&p->lock);
	{
		struct ppod **np = realloc(p->pods, (p->n_pods + 1) * sizeof(*np));

		if (!np) {
			pthread_mutex_unlock(&p->lock);
			err = -ENOMEM;
			goto err_free;
		}
		p->pods = np;
		p->pods[p->n_pods++] = pod;
	}
	pod->refs = 1 + p->n;
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->n; i++)
		if (post(&p->w[i], CMD_ADD, pod))
			px_pod_put(pod); /* that worker never sees it */
	return 0;
err_free:
	/* Close only the duplicates made above: the caller keeps its fds. */
	if (cfg->fd_outbound < 0 && pod->lfd[L_OUTBOUND] >= 0)
		close(pod->lfd[L_OUTBOUND]);
	if (cfg->fd_inbound < 0 && pod->lfd[L_INBOUND] >= 0)
		close(pod->lfd[L_INBOUND]);
	if (cfg->fd_hbone < 0 && pod->lfd[L_HBONE] >= 0)
		close(pod->lfd[L_HBONE]);
	SSL_CTX_free(pod->sctx);
	SSL_CTX_free(pod->cctx);
	close(pod->nsfd);
	json_decref(pod->labels);
	free(pod->lst);
	free(pod);
	return err;
}

void bm_proxy_set_l7(struct bm_proxy *p, struct bm_l7_config *cfg)
{
	struct bm_l7_config *old;

	if (!p)
		return;
	if (cfg)
		bm_l7_get(cfg);
	pthread_mutex_lock(&p->lock);
	old = p->l7;
	p->l7 = cfg;
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->n; i++) {
		if (!p->w[i].started)
			continue;
		if (cfg)
			bm_l7_get(cfg); /* the worker's, put when it has taken its own */
		if (post_cmd(&p->w[i], CMD_L7, NULL, cfg) && cfg)
			bm_l7_put(cfg);
	}
	if (old)
		bm_l7_put(old);
}

int bm_proxy_pod_remove(struct bm_proxy *p, const char *ns, const char *name)
{
	struct ppod *pod = NULL;

	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < p->n_pods; i++) {
		if (!strcmp(p->pods[i]->cfg.name, name) && !strcmp(p->pods[i]->cfg.ns, ns)) {
			pod = p->pods[i];
			p->pods[i] = p->pods[--p->n_pods];
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (!pod)
		return -ENOENT;
	for (int i = 0; i < p->n; i++)
		if (post(&p->w[i], CMD_DEL, pod))
			bm_log("proxy: worker %d did not get the removal of %s/%s", i, ns, name);
	px_pod_put(pod);
	return 0;
}
