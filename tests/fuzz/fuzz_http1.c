/* libFuzzer entry for the HTTP/1.1 codec (agent/http1.c over http-parser).
 *
 * Input: two control bytes, then the byte stream of one connection.
 *   byte 0: bit 0 the request the responses answer was HEAD, bit 1 apply
 *           header edits before re-serializing;
 *   byte 1: seed of the read sizes for the split runs (0: one byte at a time
 *           for the first piece, as good as any).
 * The stream is parsed as requests and as responses, once in one read and
 * once split into fuzzer-chosen reads, each read in its own heap copy so
 * ASan sees any access past what was handed over. Every complete message
 * is re-serialized as the proxy does it (hop-by-hop headers dropped, edits,
 * re-framed body, the trailers of a chunked message) and parsed again: the
 * second parse must give the same head, body and trailers. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "http1.h"

#define FAIL(...)                                   \
	do {                                        \
		fprintf(stderr, "fuzz_http1: " __VA_ARGS__); \
		fputc('\n', stderr);                \
		abort();                            \
	} while (0)

static struct bm_l7_hdr edit_set[] = { { "x-fuzz", "1" }, { ":authority", "rewritten.example" } };
static struct bm_l7_hdr edit_add[] = { { "x-added", "v" }, { "Set-Cookie", "a=b" } };
static char *edit_rm[] = { "user-agent", "cookie" };
static const struct bm_l7_hdr_ops edits = {
	.set = edit_set, .n_set = 2, .add = edit_add, .n_add = 2, .remove = edit_rm, .n_remove = 2,
};

struct body {
	const uint8_t *lo, *hi;   /* the bytes of the current parse call */
	uint8_t *buf;             /* de-framed body so far */
	size_t len, cap;
};

static int body_piece(void *u, const uint8_t *d, size_t n)
{
	struct body *b = u;

	if (!n || d < b->lo || d + n > b->hi)
		FAIL("body piece %p+%zu outside the input [%p, %p)", (const void *)d, n,
		     (const void *)b->lo, (const void *)b->hi);
	if (b->len + n > b->cap)
		FAIL("more body (%zu) than input (%zu)", b->len + n, b->cap);
	memcpy(b->buf + b->len, d, n);
	b->len += n;
	return 0;
}

static int has_ctl(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\r' || s[i] == '\n' || s[i] == 0)
			return 1;
	return 0;
}

static void check_head(const struct bm_h1_parser *p)
{
	const struct bm_h1_head *h = &p->head;

	if (h->n_hdr > BM_H1_MAX_HDRS)
		FAIL("%zu headers", h->n_hdr);
	if (p->response) {
		if (h->status < 100 || h->status > 999 || !h->reason || h->method)
			FAIL("response status %d", h->status);
		if (has_ctl(h->reason, strlen(h->reason)))
			FAIL("control byte in the reason phrase");
	} else {
		if (!h->method || !h->target || h->target[h->target_len])
			FAIL("request line without method or terminated target");
		if (has_ctl(h->target, h->target_len))
			FAIL("control byte in the target");
	}
	for (size_t i = 0; i < h->n_hdr; i++) {
		const struct bm_http_hdr *x = &h->hdr[i];

		if (!x->name_len || x->name[x->name_len] || x->value[x->value_len])
			FAIL("header %zu not NUL-terminated or empty name", i);
		if (has_ctl(x->name, x->name_len) || has_ctl(x->value, x->value_len))
			FAIL("control byte in header %zu '%s'", i, x->name);
		for (size_t k = 0; k < x->name_len; k++)
			if (x->name[k] >= 'A' && x->name[k] <= 'Z')
				FAIL("header name '%s' not lower case", x->name);
	}
	if (h->content_length < -1 || (h->chunked && h->content_length != -1))
		FAIL("content_length %lld chunked %d", (long long)h->content_length, h->chunked);
	if (!p->response && h->has_body != (h->chunked || h->content_length > 0))
		FAIL("request has_body %d", h->has_body);
}

/* The serialized bytes of q in one buffer. */
static uint8_t *flatten(const struct bm_chunkq *q, size_t *len)
{
	uint8_t *buf = malloc(q->bytes ? q->bytes : 1);
	size_t o = 0;

	if (!buf)
		abort();
	for (const struct bm_chunk *c = q->head; c; c = c->next) {
		memcpy(buf + o, c->data + c->off, c->len);
		o += c->len;
	}
	if (o != q->bytes)
		FAIL("chunk queue holds %zu bytes, says %zu", o, q->bytes);
	*len = o;
	return buf;
}

/* Parse one whole message from d[0..n) (the connection ends there). */
static int parse_whole(struct bm_h1_parser *p, const uint8_t *d, size_t n, struct body *b)
{
	ssize_t r = bm_h1_parse_head(p, d, n);

	if (r < 0 || p->state != BM_H1_BODY)
		return -1;
	b->lo = d + r;
	b->hi = d + n;
	while (p->state == BM_H1_BODY) {
		ssize_t k = bm_h1_parse_body(p, d + r, n - (size_t)r, body_piece, b);

		if (k < 0)
			return -1;
		if (!k && n - (size_t)r)
			return -1;
		r += k;
		if ((size_t)r == n && p->state == BM_H1_BODY) {
			/* the connection ends */
			if (bm_h1_parse_body(p, d + n, 0, body_piece, b) < 0)
				return -1;
		}
	}
	return (size_t)r == n ? 0 : -1;
}

static int same_hdrs(const struct bm_h1_hlist *l, const struct bm_h1_head *h)
{
	if (l->n != h->n_hdr)
		return 0;
	for (size_t i = 0; i < l->n; i++) {
		const struct bm_http_hdr *a = &l->h[i], *b = &h->hdr[i];

		if (a->name_len != b->name_len || strncasecmp(a->name, b->name, a->name_len) ||
		    a->value_len != b->value_len || memcmp(a->value, b->value, a->value_len))
			return 0;
	}
	return 1;
}

/* The trailers of a completed message: well formed views into the parser. */
static size_t get_trailers(struct bm_h1_parser *p, struct bm_http_hdr *t)
{
	size_t n = bm_h1_trailers(p, t, BM_H1_TRAILERS_MAX);
	const char *lo = p->tbuf, *hi = p->tbuf + sizeof(p->tbuf);

	if (n > BM_H1_TRAILERS_MAX)
		FAIL("%zu trailers", n);
	for (size_t i = 0; i < n; i++) {
		if (!t[i].name_len || t[i].name < lo || t[i].name + t[i].name_len > hi ||
		    (t[i].value_len && (t[i].value < lo || t[i].value + t[i].value_len > hi)))
			FAIL("trailer %zu outside the parser's buffer", i);
		if (has_ctl(t[i].name, t[i].name_len) || has_ctl(t[i].value, t[i].value_len))
			FAIL("control byte in trailer %zu", i);
		for (size_t k = 0; k < t[i].name_len; k++)
			if (t[i].name[k] >= 'A' && t[i].name[k] <= 'Z')
				FAIL("trailer name not lower case");
	}
	return n;
}

/* What bm_h1_write_end_trailers drops. */
static int trailer_dropped(const struct bm_http_hdr *t)
{
	static const char *const no[] = { "content-length", "transfer-encoding", "host",
					  "connection", "te", "trailer", "keep-alive", "upgrade" };

	if (t->name[0] == ':')
		return 1;
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		if (t->name_len == strlen(no[i]) && !strncasecmp(t->name, no[i], t->name_len))
			return 1;
	return 0;
}

/* Re-serialize the message just parsed (head of p, de-framed body) the way
 * the proxy forwards it, and parse it again. */
static void round_trip(const struct bm_h1_parser *p, const struct body *body, int head_req,
		       int edit, const struct bm_http_hdr *tr, size_t n_tr)
{
	struct bm_http_hdr tr2[BM_H1_TRAILERS_MAX];
	size_t n_tr2, k;
	const struct bm_h1_head *h = &p->head;
	struct bm_loop lp = { .ep = -1 };
	struct bm_chunkq q = { 0 };
	struct bm_h1_hlist *l = malloc(sizeof(*l));
	struct bm_h1_parser p2 = { 0 };
	struct body b2 = { 0 };
	int chunked, nobody, err = 0;
	char cl[32];
	uint8_t *out;
	size_t len;

	if (!l)
		abort();
	bm_h1_hlist_from(l, h->hdr, h->n_hdr);
	bm_h1_hlist_strip_hop(l);
	for (size_t i = 0; i < l->n; i++)
		if (!strcasecmp(l->h[i].name, "connection") ||
		    !strcasecmp(l->h[i].name, "transfer-encoding") ||
		    !strcasecmp(l->h[i].name, "content-length"))
			FAIL("hop-by-hop header '%s' survived", l->h[i].name);
	if (edit) {
		err = bm_h1_hlist_apply(l, &edits);
		if (!err && !bm_h1_hlist_get(l, "x-fuzz"))
			FAIL("set header missing after edits");
		if (!err && bm_h1_hlist_get(l, "user-agent"))
			FAIL("removed header still there");
	}
	nobody = p->response && (head_req || h->status / 100 == 1 || h->status == 204 ||
				  h->status == 304);
	chunked = !nobody && (h->chunked || (p->response && h->until_close));
	if (nobody)
		;
	else if (!err && chunked)
		err = bm_h1_hlist_add(l, "transfer-encoding", "chunked", 7);
	else if (!err && (h->has_body || body->len)) {
		snprintf(cl, sizeof(cl), "%zu", body->len);
		err = bm_h1_hlist_add(l, "content-length", cl, strlen(cl));
	}
	if (err)
		goto out; /* header list full: the proxy answers 431/502 */
	if (p->response)
		err = bm_h1_write_response(&lp, &q, h->minor, h->status, h->reason, l);
	else
		err = bm_h1_write_request(&lp, &q, h->method, h->target, h->target_len, l);
	/* re-chunk in uneven pieces, as reads would deliver them */
	for (size_t o = 0; !err && o < body->len;) {
		size_t n = body->len - o < 1 + o % 7 ? body->len - o : 1 + o % 7;

		err = bm_h1_write_body(&lp, &q, chunked, body->buf + o, n);
		o += n;
	}
	if (!err && chunked)
		err = bm_h1_write_end_trailers(&lp, &q, tr, n_tr);
	if (err)
		FAIL("serialization failed: %d", err);
	out = flatten(&q, &len);
	bm_h1_init(&p2, p->response);
	if (p->response)
		bm_h1_expect_head_response(&p2, head_req);
	b2.buf = malloc(len + 1);
	b2.cap = len;
	if (parse_whole(&p2, out, len, &b2)) {
		fwrite(out, 1, len, stderr);
		FAIL("re-serialized message does not parse (state %d err %d)", p2.state, p2.err);
	}
	if (p->response ? p2.head.status != h->status :
			  strcmp(p2.head.method, h->method) || p2.head.target_len != h->target_len ||
				  memcmp(p2.head.target, h->target, h->target_len))
		FAIL("request/status line changed in the round trip");
	/* the writer keeps at most 100 bytes of the reason */
	if (p->response && *h->reason &&
	    (strncmp(p2.head.reason, h->reason, 100) || strlen(p2.head.reason) > 100))
		FAIL("reason '%s' became '%s'", h->reason, p2.head.reason);
	if (!same_hdrs(l, &p2.head)) {
		fwrite(out, 1, len, stderr);
		FAIL("headers changed in the round trip");
	}
	if (b2.len != body->len || memcmp(b2.buf, body->buf, body->len))
		FAIL("body changed in the round trip (%zu -> %zu bytes)", body->len, b2.len);
	n_tr2 = chunked ? get_trailers(&p2, tr2) : 0;
	k = 0;
	for (size_t i = 0; chunked && i < n_tr; i++) {
		if (trailer_dropped(&tr[i]))
			continue;
		if (k == n_tr2 || tr2[k].name_len != tr[i].name_len ||
		    memcmp(tr2[k].name, tr[i].name, tr[i].name_len) ||
		    tr2[k].value_len != tr[i].value_len ||
		    memcmp(tr2[k].value, tr[i].value, tr[i].value_len))
			FAIL("trailer %zu changed in the round trip", i);
		k++;
	}
	if (k != n_tr2)
		FAIL("%zu trailers after the round trip, %zu before", n_tr2, k);
	free(out);
out:
	free(b2.buf);
	bm_h1_fini(&p2);
	bm_chunkq_clear(&lp, &q);
	bm_loop_fini(&lp);
	free(l);
}

static uint32_t next_rand(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* One connection's stream through one parser. seed 0: everything in one
 * read; else reads of fuzzer-chosen sizes. */
static void run(const uint8_t *d, size_t n, int response, int head_req, int edit, uint32_t seed)
{
	struct bm_h1_parser p = { 0 };
	struct body b = { .buf = malloc(n + 1), .cap = n };
	size_t pos = 0;
	unsigned msgs = 0;
	int eof = 0;

	if (!b.buf)
		abort();
	bm_h1_init(&p, response);
	if (response)
		bm_h1_expect_head_response(&p, head_req);
	while (msgs < 100 && !eof) {
		size_t avail = n - pos, piece = avail;
		uint8_t *copy;
		ssize_t r;

		if (seed && avail)
			piece = 1 + next_rand(&seed) % (avail < 97 ? avail : 97);
		copy = malloc(piece ? piece : 1);
		if (!copy)
			abort();
		memcpy(copy, d + pos, piece);
		if (p.state == BM_H1_HEAD) {
			if (!avail) {
				free(copy);
				break; /* the connection ends between messages (or mid-head) */
			}
			r = bm_h1_parse_head(&p, copy, piece);
			if (r < 0) {
				if (p.state != BM_H1_ERROR || !p.err)
					FAIL("head error %zd without error state", r);
			} else if ((size_t)r > piece) {
				FAIL("head took %zd of %zu bytes", r, piece);
			} else if (p.state == BM_H1_HEAD && (size_t)r != piece) {
				FAIL("head incomplete, %zd of %zu bytes taken", r, piece);
			} else if (p.state == BM_H1_BODY) {
				check_head(&p);
				b.len = 0;
			} else if (p.state != BM_H1_HEAD) {
				FAIL("state %d after a head", p.state);
			}
		} else {
			b.lo = copy;
			b.hi = copy + piece;
			r = bm_h1_parse_body(&p, copy, piece, body_piece, &b);
			if (!piece)
				eof = 1;
			if (r >= 0 && (size_t)r > piece)
				FAIL("body took %zd of %zu bytes", r, piece);
			if (r == 0 && piece && p.state == BM_H1_BODY)
				FAIL("body parser stalls on %zu bytes", piece);
			if (r >= 0 && p.state == BM_H1_DONE) {
				const struct bm_h1_head *h = &p.head;

				if (!h->chunked && h->content_length >= 0 && h->has_body &&
				    b.len != (size_t)h->content_length)
					FAIL("content-length %lld, body %zu", (long long)h->content_length,
					     b.len);
				if (!h->has_body && b.len)
					FAIL("%zu body bytes for a message without body", b.len);
				struct bm_http_hdr tr[BM_H1_TRAILERS_MAX];
				size_t n_tr = get_trailers(&p, tr);

				if (n_tr && !h->chunked)
					FAIL("%zu trailers without chunked framing", n_tr);
				if (!h->upgrade)
					round_trip(&p, &b, head_req, edit, tr, n_tr);
				bm_h1_reset(&p);
				msgs++;
			}
		}
		free(copy);
		if (r < 0)
			break;
		pos += (size_t)r;
	}
	bm_h1_fini(&p);
	free(b.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t seed;
	int head_req, edit;

	if (size < 2)
		return 0;
	head_req = data[0] & 1;
	edit = (data[0] >> 1) & 1;
	seed = 0x9e3779b9u ^ ((uint32_t)data[1] << 8) ^ data[0];
	for (int response = 0; response < 2; response++) {
		run(data + 2, size - 2, response, head_req, edit, 0);
		run(data + 2, size - 2, response, head_req, edit, seed);
	}
	return 0;
}
