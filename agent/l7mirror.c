/*
 * Request mirroring of the L7 engine (VirtualService mirror / mirrors,
 * istio-api §1.7): a copy of a complete request (its head bytes and whole
 * body) goes to a host of the mirror cluster, its answer is read and
 * dropped, bounded in flight (BM_L7_MIRRORS_MAX) and in time.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "l7upstream.h"

/* ---- mirrors ------------------------------------------------------------------------ */

struct l7_mirror {
	struct l7_x x;
	struct bm_chunkq q;
	struct l7_timer t;
	uint8_t counted;
};

static void mirror_free_mem(void *obj)
{
	free(obj);
}

static void mirror_end(struct l7_mirror *m, int reuse)
{
	struct bm_l7_engine *e = m->x.e;

	l7_x_end(&m->x, reuse);
	l7_timer_cancel(e, &m->t);
	bm_chunkq_clear(e->l, &m->q);
	if (m->counted)
		l7_cb_give(&m->x.c->rt->requests);
	e->n_mirrors--;
	bm_loop_defer_free(e->l, m, mirror_free_mem);
}

static void mirror_ready(struct l7_x *x)
{
	struct l7_mirror *m = (struct l7_mirror *)x;

	x->req_done = 1;
	if (l7_x_write_q(x, &m->q, 0))
		mirror_end(m, 0);
}

static void mirror_head(struct l7_x *x, const struct bm_h1_head *h)
{
}

static void mirror_body(struct l7_x *x, const uint8_t *d, size_t n)
{
}

static void mirror_done(struct l7_x *x)
{
	mirror_end((struct l7_mirror *)x, 1);
}

static void mirror_fail(struct l7_x *x, enum bm_attempt_result r)
{
	mirror_end((struct l7_mirror *)x, 0);
}

static void mirror_timeout(struct l7_timer *t)
{
	mirror_end((struct l7_mirror *)((char *)t - offsetof(struct l7_mirror, t)), 0);
}

static const struct l7_x_ops mirror_ops = {
	.ready = mirror_ready,
	.head = mirror_head,
	.body = mirror_body,
	.done = mirror_done,
	.fail = mirror_fail,
};

void l7_mirror_send(struct bm_l7_engine *e, struct bm_l7_cluster *c, uint64_t pool_key,
		    void *user, const struct bm_chunkq *head, const struct bm_chunkq *body,
		    int chunked, int head_request, uint32_t timeout_ms)
{
	const struct bm_l7_backend *b;
	struct l7_mirror *m;
	int err = 0;

	if (!c || e->n_mirrors >= BM_L7_MIRRORS_MAX) {
		e->st.mirrors_dropped++;
		return;
	}
	b = l7_lb_pick(e, c, NULL, 0, 0);
	m = b ? calloc(1, sizeof(*m)) : NULL;
	if (!m) {
		e->st.mirrors_dropped++;
		return;
	}
	e->n_mirrors++;
	e->st.mirrors++;
	m->x.e = e;
	m->x.ops = &mirror_ops;
	m->x.c = c;
	m->x.b = *b;
	m->x.pool_key = pool_key;
	m->x.user = user;
	m->x.head_request = (uint8_t)head_request;
	m->x.h2 = c->proto == BM_L7_UP_H2;
	l7_timer_init(&m->t, mirror_timeout);
	for (const struct bm_chunk *k = head->head; k && !err; k = k->next)
		err = bm_chunkq_append(e->l, &m->q, k->data + k->off, k->len);
	for (const struct bm_chunk *k = body->head; k && !err; k = k->next)
		err = bm_h1_write_body(e->l, &m->q, chunked, k->data + k->off, k->len);
	if (!err && chunked)
		err = bm_h1_write_end(e->l, &m->q);
	if (err || !l7_cb_take(&c->rt->requests, c->max_requests)) {
		e->st.mirrors_dropped++;
		mirror_end(m, 0);
		return;
	}
	m->counted = 1;
	l7_timer_arm(e, &m->t, timeout_ms ? timeout_ms : 10000);
	err = l7_x_start(&m->x);
	if (err)
		mirror_end(m, 0);
}
