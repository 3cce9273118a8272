/*
 * Worker event loop, pooled chunks and pipes, and the plaintext relay.
 *
 * Connection sockets are registered edge-triggered once (IN|OUT|RDHUP) and
 * never modified again: each side remembers whether it last saw EAGAIN, so
 * back-pressure costs no epoll_ctl calls.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include "relay.h"

#define FREE_CHUNKS_MAX 256  /* 4 MiB of idle chunks kept per worker */
#define FREE_PIPES_MAX 64
#define PIPE_BYTES 65536     /* the default pipe capacity */

void bm_wstats_deny(struct bm_wstats *st, const char *reason)
{
	uint32_t n = st->n_deny;

	if (!reason || !*reason)
		reason = "denied";
	for (uint32_t i = 0; i < n; i++) {
		if (!strcmp(st->deny[i].reason, reason)) {
			st->deny[i].n++;
			return;
		}
	}
	if (n == BM_DENY_REASONS) {
		st->deny_other++;
		return;
	}
	strncpy(st->deny[n].reason, reason, BM_DENY_REASON_LEN - 1);
	st->deny[n].n = 1;
	__atomic_store_n(&st->n_deny, n + 1, __ATOMIC_RELEASE);
}

int bm_loop_init(struct bm_loop *l, struct bm_wstats *st)
{
	memset(l, 0, sizeof(*l));
	l->st = st;
	l->scratch = malloc(BM_SCRATCH);
	l->free_pipes = calloc(FREE_PIPES_MAX, sizeof(*l->free_pipes));
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	if (l->ep < 0 || !l->scratch || !l->free_pipes) {
		int err = l->ep < 0 ? -errno : -ENOMEM;

		bm_loop_fini(l);
		return err;
	}
	return 0;
}

static void run_zombies(struct bm_loop *l)
{
	/* A free_fn may defer more frees: loop until none is left. */
	for (unsigned i = 0; i < l->n_zombies; i++)
		l->zombies[i].free_fn(l->zombies[i].obj);
	l->n_zombies = 0;
}

void bm_loop_after(struct bm_loop *l, struct bm_after *a)
{
	if (a->queued)
		return;
	a->queued = 1;
	a->next = l->after;
	l->after = a;
}

static void run_after(struct bm_loop *l)
{
	struct bm_after *a;

	while ((a = l->after)) {
		l->after = a->next;
		a->queued = 0;
		a->fn(a);
	}
}

void bm_loop_fini(struct bm_loop *l)
{
	l->after = NULL; /* nothing runs any more */
	run_zombies(l);
	free(l->zombies);
	while (l->obj_pool)
		free(bm_loop_obj_get(l));
	while (l->free_chunks) {
		struct bm_chunk *c = l->free_chunks;

		l->free_chunks = c->next;
		free(c);
	}
	for (unsigned i = 0; i < l->n_free_pipes; i++) {
		close(l->free_pipes[i][0]);
		close(l->free_pipes[i][1]);
	}
	free(l->free_pipes);
	free(l->scratch);
	if (l->ep >= 0)
		close(l->ep);
	memset(l, 0, sizeof(*l));
	l->ep = -1;
}

int bm_loop_add(struct bm_loop *l, struct bm_ev *ev, uint32_t events)
{
	struct epoll_event e = { .events = events, .data.ptr = ev };

	return epoll_ctl(l->ep, EPOLL_CTL_ADD, ev->fd, &e) ? -errno : 0;
}

int bm_loop_mod(struct bm_loop *l, struct bm_ev *ev, uint32_t events)
{
	struct epoll_event e = { .events = events, .data.ptr = ev };

	return epoll_ctl(l->ep, EPOLL_CTL_MOD, ev->fd, &e) ? -errno : 0;
}

void bm_loop_del(struct bm_loop *l, struct bm_ev *ev)
{
	epoll_ctl(l->ep, EPOLL_CTL_DEL, ev->fd, NULL);
}

void bm_loop_defer_free(struct bm_loop *l, void *obj, void (*free_fn)(void *obj))
{
	if (l->n_zombies == l->cap_zombies) {
		unsigned cap = l->cap_zombies ? l->cap_zombies * 2 : 64;
		struct bm_zombie *z = realloc(l->zombies, cap * sizeof(*z));

		if (!z) {
			/* Better a leak than a use-after-free. */
			return;
		}
		l->zombies = z;
		l->cap_zombies = cap;
	}
	l->zombies[l->n_zombies].obj = obj;
	l->zombies[l->n_zombies].free_fn = free_fn;
	l->n_zombies++;
}

int bm_loop_run_once(struct bm_loop *l, int timeout_ms)
{
	struct epoll_event evs[64];
	struct timespec ts;
	int n = epoll_wait(l->ep, evs, 64, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	l->now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	for (int i = 0; i < n; i++) {
		struct bm_ev *ev = evs[i].data.ptr;

		if (!ev->dead)
			ev->fn(ev, evs[i].events);
	}
	run_after(l);
	run_zombies(l);
	return n;
}

#define OBJ_POOL_MAX 256

void *bm_loop_obj_get(struct bm_loop *l)
{
	void *o = l->obj_pool;

	if (o) {
		l->obj_pool = *(void **)o;
		l->n_obj_pool--;
	}
	return o;
}

void bm_loop_obj_put(struct bm_loop *l, void *obj, size_t size)
{
	if (l->n_obj_pool >= OBJ_POOL_MAX || size < sizeof(void *)) {
		free(obj);
		return;
	}
	*(void **)obj = l->obj_pool;
	l->obj_pool = obj;
	l->n_obj_pool++;
}

struct bm_chunk *bm_chunk_get(struct bm_loop *l)
{
	struct bm_chunk *c = l->free_chunks;

	if (c) {
		l->free_chunks = c->next;
		l->n_free_chunks--;
	} else {
		c = malloc(sizeof(*c));
		if (!c)
			return NULL;
	}
	c->next = NULL;
	c->off = c->len = 0;
	return c;
}

void bm_chunk_put(struct bm_loop *l, struct bm_chunk *c)
{
	if (l->n_free_chunks >= FREE_CHUNKS_MAX) {
		free(c);
		return;
	}
	c->next = l->free_chunks;
	l->free_chunks = c;
	l->n_free_chunks++;
}

int bm_chunkq_append(struct bm_loop *l, struct bm_chunkq *q, const uint8_t *data, size_t len)
{
	while (len) {
		struct bm_chunk *c = q->tail;
		size_t room, n;

		if (!c || c->off + c->len == BM_CHUNK_DATA) {
			c = bm_chunk_get(l);
			if (!c)
				return -ENOMEM;
			if (q->tail)
				q->tail->next = c;
			else
				q->head = c;
			q->tail = c;
		}
		room = BM_CHUNK_DATA - c->off - c->len;
		n = len < room ? len : room;
		memcpy(c->data + c->off + c->len, data, n);
		c->len += n;
		q->bytes += n;
		data += n;
		len -= n;
	}
	return 0;
}

ssize_t bm_chunkq_send(struct bm_loop *l, struct bm_chunkq *q, int fd)
{
	struct iovec iov[16];
	int n = 0;
	ssize_t w;

	for (struct bm_chunk *c = q->head; c && n < 16; c = c->next) {
		if (!c->len)
			continue;
		iov[n].iov_base = c->data + c->off;
		iov[n].iov_len = c->len;
		n++;
	}
	w = sendmsg(fd, &(struct msghdr){ .msg_iov = iov, .msg_iovlen = (size_t)n }, MSG_NOSIGNAL);
	if (w > 0)
		bm_chunkq_consume(l, q, (size_t)w);
	return w;
}

size_t bm_chunkq_take(struct bm_loop *l, struct bm_chunkq *q, uint8_t *buf, size_t len)
{
	size_t n = 0;

	while (n < len && q->head) {
		struct bm_chunk *c = q->head;
		size_t k = c->len < len - n ? c->len : len - n;

		memcpy(buf + n, c->data + c->off, k);
		n += k;
		bm_chunkq_consume(l, q, k);
	}
	return n;
}

void bm_chunkq_consume(struct bm_loop *l, struct bm_chunkq *q, size_t n)
{
	while (n && q->head) {
		struct bm_chunk *c = q->head;
		size_t k = n < c->len ? n : c->len;

		c->off += k;
		c->len -= k;
		q->bytes -= k;
		n -= k;
		if (!c->len) {
			q->head = c->next;
			if (!q->head)
				q->tail = NULL;
			bm_chunk_put(l, c);
		}
	}
}

void bm_chunkq_clear(struct bm_loop *l, struct bm_chunkq *q)
{
	bm_chunkq_consume(l, q, q->bytes);
	while (q->head) { /* empty chunks */
		struct bm_chunk *c = q->head;

		q->head = c->next;
		bm_chunk_put(l, c);
	}
	q->tail = NULL;
	q->bytes = 0;
}

void bm_close_reset(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (fd < 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

int bm_sock_connect_result(int fd, uint32_t events)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (!(events & (EPOLLERR | EPOLLHUP)))
		return 0;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len))
		return -errno;
	return err ? -err : 0;
}

/* ---- istio_tcp_* rows (see relay.h for the concurrency rules) ----------- */

static uint32_t mesh_hash(const struct bm_mesh_key *k)
{
	uint32_t h = 2166136261u;
	const unsigned char *p;

	h = (h ^ k->reporter) * 16777619u;
	h = (h ^ k->mtls) * 16777619u;
	h = (h ^ k->port) * 16777619u;
	h = (h ^ k->ip) * 16777619u;
	h = (h ^ k->svc_id) * 16777619u;
	for (p = (const unsigned char *)k->src; *p; p++)
		h = (h ^ *p) * 16777619u;
	h = (h ^ 0xff) * 16777619u;
	for (p = (const unsigned char *)k->dst; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h;
}

static int mesh_key_eq(const struct bm_mesh_key *a, const struct bm_mesh_key *b)
{
	return a->reporter == b->reporter && a->mtls == b->mtls && a->port == b->port &&
	       a->ip == b->ip && a->svc_id == b->svc_id && !strcmp(a->src, b->src) &&
	       !strcmp(a->dst, b->dst);
}

#define WR(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define RDR(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

struct bm_mesh_row *bm_mesh_open(struct bm_mesh_table *t, const struct bm_mesh_key *k)
{
	uint32_t h = mesh_hash(k);

	for (uint32_t i = 0; i < BM_MESH_SLOTS; i++) {
		struct bm_mesh_row *r = &t->row[(h + i) % BM_MESH_SLOTS];

		if (!r->used) {
			/* Copy the key with its strings terminated within bounds. */
			r->k = *k;
			r->k.src[BM_MESH_NAME - 1] = r->k.dst[BM_MESH_NAME - 1] = 0;
			WR(r->opened, 1);
			__atomic_store_n(&r->used, 1, __ATOMIC_RELEASE);
			return r;
		}
		if (mesh_key_eq(&r->k, k)) {
			WR(r->opened, r->opened + 1);
			return r;
		}
	}
	WR(t->overflow, t->overflow + 1);
	return NULL;
}

void bm_mesh_close(struct bm_mesh_row *r, uint64_t up, uint64_t down)
{
	if (!r)
		return;
	WR(r->closed, r->closed + 1);
	WR(r->bytes_up, r->bytes_up + up);
	WR(r->bytes_down, r->bytes_down + down);
}

int bm_mesh_collect(const struct bm_mesh_table *t, struct bm_mesh_row **out, size_t *n,
		    size_t *cap)
{
	for (uint32_t i = 0; i < BM_MESH_SLOTS; i++) {
		const struct bm_mesh_row *r = &t->row[i];
		struct bm_mesh_row *o = NULL;

		if (!__atomic_load_n(&r->used, __ATOMIC_ACQUIRE))
			continue;
		for (size_t j = 0; j < *n; j++)
			if (mesh_key_eq(&(*out)[j].k, &r->k)) {
				o = &(*out)[j];
				break;
			}
		if (!o) {
			if (*n == *cap) {
				size_t nc = *cap ? *cap * 2 : 64;
				struct bm_mesh_row *nv = realloc(*out, nc * sizeof(*nv));

				if (!nv)
					return -ENOMEM;
				*out = nv;
				*cap = nc;
			}
			o = &(*out)[(*n)++];
			memset(o, 0, sizeof(*o));
			o->k = r->k;
			o->used = 1;
		}
		o->opened += RDR(r->opened);
		o->closed += RDR(r->closed);
		o->bytes_up += RDR(r->bytes_up);
		o->bytes_down += RDR(r->bytes_down);
	}
	return 0;
}

/* ---- plaintext relay ---------------------------------------------------- */

struct relay;

struct relay_side {
	struct bm_ev ev;
	struct relay *r;
	int pipe[2];       /* bytes read from this side, waiting for the other */
	size_t in_pipe;
	uint8_t readable, writable, eof, shut;
};

struct relay {
	struct relay_side s[2];   /* 0 = client (a), 1 = upstream (b) */
	struct bm_loop *l;
	enum bm_pdir dir;
	uint8_t connecting, done;
	uint64_t bytes[2];        /* moved from side i to the other */
	struct bm_mesh_row *mrow[2]; /* istio_tcp_* rows folded into at the end */
};

static int pipe_get(struct bm_loop *l, int p[2])
{
	if (l->n_free_pipes) {
		l->n_free_pipes--;
		p[0] = l->free_pipes[l->n_free_pipes][0];
		p[1] = l->free_pipes[l->n_free_pipes][1];
		return 0;
	}
	return pipe2(p, O_NONBLOCK | O_CLOEXEC) ? -errno : 0;
}

/* Only empty pipes go back to the pool: leftover bytes would leak into the
 * next connection. */
static void pipe_put(struct bm_loop *l, int p[2], size_t in_pipe)
{
	if (p[0] < 0)
		return;
	if (!in_pipe && l->n_free_pipes < FREE_PIPES_MAX) {
		l->free_pipes[l->n_free_pipes][0] = p[0];
		l->free_pipes[l->n_free_pipes][1] = p[1];
		l->n_free_pipes++;
	} else {
		close(p[0]);
		close(p[1]);
	}
	p[0] = p[1] = -1;
}

static void relay_free(void *obj)
{
	free(obj);
}

static void relay_end(struct relay *r, int reset)
{
	struct bm_loop *l = r->l;

	if (r->done)
		return;
	r->done = 1;
	for (int i = 0; i < 2; i++) {
		r->s[i].ev.dead = 1;
		if (reset)
			bm_close_reset(r->s[i].ev.fd);
		else
			close(r->s[i].ev.fd);
		pipe_put(l, r->s[i].pipe, r->s[i].in_pipe);
	}
	l->st->active[r->dir]--;
	l->st->bytes_up[r->dir] += r->bytes[0];
	l->st->bytes_down[r->dir] += r->bytes[1];
	for (int i = 0; i < 2; i++)
		bm_mesh_close(r->mrow[i], r->bytes[0], r->bytes[1]);
	bm_loop_defer_free(l, r, relay_free);
}

/* Move what can move from side i to side 1-i. 0, or -errno on a socket error. */
static int relay_pump(struct relay *r, int i)
{
	struct relay_side *src = &r->s[i], *dst = &r->s[1 - i];

	for (;;) {
		int progress = 0;
		ssize_t n;

		if (!src->eof && src->readable && src->in_pipe < PIPE_BYTES) {
			n = splice(src->ev.fd, NULL, src->pipe[1], NULL, PIPE_BYTES - src->in_pipe,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				src->in_pipe += (size_t)n;
				progress = 1;
			} else if (n == 0) {
				src->eof = 1;
			} else if (errno == EAGAIN) {
				src->readable = 0;
			} else {
				return -errno;
			}
		}
		if (src->in_pipe && dst->writable && !r->connecting) {
			n = splice(src->pipe[0], NULL, dst->ev.fd, NULL, src->in_pipe,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				src->in_pipe -= (size_t)n;
				r->bytes[i] += (uint64_t)n;
				progress = 1;
			} else if (n < 0 && errno == EAGAIN) {
				dst->writable = 0;
			} else if (n < 0) {
				return -errno;
			}
		}
		if (!progress)
			break;
	}
	if (src->eof && !src->in_pipe && !dst->shut && !r->connecting) {
		dst->shut = 1;
		shutdown(dst->ev.fd, SHUT_WR);
	}
	return 0;
}

static void relay_on_event(struct bm_ev *ev, uint32_t events)
{
	struct relay_side *side = (struct relay_side *)ev;
	struct relay *r = side->r;
	int err;

	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		side->readable = 1;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		side->writable = 1;
	if (r->connecting && side == &r->s[1]) {
		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		if (bm_sock_connect_result(ev->fd, events)) {
			r->l->st->conns[r->dir][BM_PRES_UPSTREAM]++;
			relay_end(r, 1);
			return;
		}
		r->connecting = 0;
		r->l->st->conns[r->dir][BM_PRES_OK]++;
	}
	if ((err = relay_pump(r, 0)) || (err = relay_pump(r, 1))) {
		relay_end(r, 1);
		return;
	}
	if (r->s[0].shut && r->s[1].shut)
		relay_end(r, 0);
}

int bm_relay_start(struct bm_loop *l, int a, int b, enum bm_pdir dir)
{
	return bm_relay_start_rows(l, a, b, dir, NULL, NULL);
}

int bm_relay_start_rows(struct bm_loop *l, int a, int b, enum bm_pdir dir,
			struct bm_mesh_row *r0, struct bm_mesh_row *r1)
{
	struct relay *r = calloc(1, sizeof(*r));
	int err = -ENOMEM;

	if (!r)
		goto err_close;
	r->mrow[0] = r0;
	r->mrow[1] = r1;
	r->l = l;
	r->dir = dir;
	r->connecting = 1;
	for (int i = 0; i < 2; i++) {
		r->s[i].r = r;
		r->s[i].ev.fn = relay_on_event;
		r->s[i].ev.fd = i ? b : a;
		r->s[i].pipe[0] = r->s[i].pipe[1] = -1;
	}
	for (int i = 0; i < 2; i++) {
		err = pipe_get(l, r->s[i].pipe);
		if (err)
			goto err_pipes;
	}
	l->st->active[dir]++;
	for (int i = 0; i < 2; i++) {
		err = bm_loop_add(l, &r->s[i].ev, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
		if (err) {
			l->st->conns[dir][BM_PRES_ERROR]++;
			relay_end(r, 1);
			return err;
		}
	}
	return 0;
err_pipes:
	for (int i = 0; i < 2; i++)
		pipe_put(l, r->s[i].pipe, 0);
	free(r);
err_close:
	bm_mesh_close(r0, 0, 0);
	bm_mesh_close(r1, 0, 0);
	l->st->conns[dir][BM_PRES_ERROR]++;
	bm_close_reset(a);
	bm_close_reset(b);
	return err;
}
