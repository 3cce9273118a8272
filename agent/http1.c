/*
 * HTTP/1.1 codec over http-parser (see http1.h).
 *
 * http-parser is a push parser whose callbacks point into the bytes it was
 * given. Head bytes are therefore copied into the parser's buffer first and
 * parsed there, so a header split across reads is contiguous and can be
 * recorded as offsets (the buffer may move when it grows). The parser is
 * paused in on_headers_complete and on_message_complete, which makes
 * http_parser_execute() return exactly at the head's and the message's end.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "fmt.h"
#include "http1.h"

static struct bm_h1_parser *P(http_parser *hp)
{
	return hp->data;
}

static int on_message_begin(http_parser *hp)
{
	return 0;
}

static int on_url(http_parser *hp, const char *at, size_t n)
{
	struct bm_h1_parser *p = P(hp);

	if (p->state != BM_H1_HEAD)
		return 0;
	if (!p->url_l)
		p->url_o = (uint32_t)(at - p->buf);
	p->url_l += (uint32_t)n;
	return 0;
}

static int on_status(http_parser *hp, const char *at, size_t n)
{
	struct bm_h1_parser *p = P(hp);

	if (p->state != BM_H1_HEAD)
		return 0;
	if (!p->reason_l)
		p->reason_o = (uint32_t)(at - p->buf);
	p->reason_l += (uint32_t)n;
	return 0;
}

/* Trailer bytes into tbuf; a trailer that does not fit is dropped whole. */
static void trailer_piece(struct bm_h1_parser *p, int value, const char *at, size_t n)
{
	if (!value && (p->t_in_value || !p->n_toff)) {
		if (p->n_toff == BM_H1_TRAILERS_MAX) {
			p->t_drop = 1;
			return;
		}
		p->n_toff++;
		p->toff[p->n_toff - 1].no = (uint16_t)p->tlen;
		p->toff[p->n_toff - 1].nl = 0;
		p->toff[p->n_toff - 1].vo = p->toff[p->n_toff - 1].vl = 0;
		p->t_in_value = 0;
		p->t_drop = 0;
	}
	if (p->t_drop || !p->n_toff)
		return;
	if (value && !p->t_in_value) {
		p->t_in_value = 1;
		p->toff[p->n_toff - 1].vo = (uint16_t)p->tlen;
	}
	if (p->tlen + n + 2 > sizeof(p->tbuf)) {
		p->n_toff--;
		p->t_drop = 1;
		return;
	}
	memcpy(p->tbuf + p->tlen, at, n);
	p->tlen += n;
	if (value)
		p->toff[p->n_toff - 1].vl += (uint16_t)n;
	else
		p->toff[p->n_toff - 1].nl += (uint16_t)n;
}

static int on_header_field(http_parser *hp, const char *at, size_t n)
{
	struct bm_h1_parser *p = P(hp);

	if (p->state != BM_H1_HEAD) {
		trailer_piece(p, 0, at, n);
		return 0;
	}
	/* Debian's http-parser is built lenient: "Content-Length : 5" frames
	 * the body, but under a name with a space that strip_hop misses, so
	 * it would be forwarded next to our own framing (smuggling). RFC 9112
	 * §5.1: reject whitespace between field name and colon. */
	if (memchr(at, ' ', n) || memchr(at, '\t', n)) {
		p->err = BM_H1_EMALFORMED;
		return -1;
	}
	if (p->in_value || !p->n_off) {
		if (p->n_off == BM_H1_MAX_HDRS) {
			p->err = BM_H1_ETOOBIG;
			return -1;
		}
		p->n_off++;
		p->off[p->n_off - 1].no = (uint32_t)(at - p->buf);
		p->off[p->n_off - 1].nl = 0;
		p->off[p->n_off - 1].vo = p->off[p->n_off - 1].vl = 0;
		p->in_value = 0;
	}
	p->off[p->n_off - 1].nl += (uint32_t)n;
	return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t n)
{
	struct bm_h1_parser *p = P(hp);

	if (p->state != BM_H1_HEAD) {
		trailer_piece(p, 1, at, n);
		return 0;
	}
	if (!p->n_off)
		return 0;
	/* http-parser lets NUL through in values; RFC 9110 §5.5 says reject
	 * (the matchers would see the value cut short, the upstream all of it). */
	if (memchr(at, 0, n)) {
		p->err = BM_H1_EMALFORMED;
		return -1;
	}
	if (!p->in_value) {
		p->in_value = 1;
		p->off[p->n_off - 1].vo = (uint32_t)(at - p->buf);
		p->off[p->n_off - 1].vl = 0;
	} else if (n && at != p->buf + p->off[p->n_off - 1].vo + p->off[p->n_off - 1].vl) {
		/* A piece that does not continue the value is an obs-fold line
		 * ("a\r\n b"): the value is recorded as one span, which would
		 * take in the CR LF and lose the tail. RFC 9112 §5.2 lets a
		 * proxy reject it (400, or 502 for a response). */
		p->err = BM_H1_EMALFORMED;
		return -1;
	}
	p->off[p->n_off - 1].vl += (uint32_t)n;
	return 0;
}

static int on_headers_complete(http_parser *hp)
{
	struct bm_h1_parser *p = P(hp);

	/* http-parser takes any number of digits up to 999; a status code is
	 * three (RFC 9112 §4), and "HTTP/1.1 40" is not forwarded as one. */
	if (p->response && hp->status_code < 100) {
		p->err = BM_H1_EMALFORMED;
		return -1;
	}
	p->head_done_cb = 1;
	http_parser_pause(hp, 1);
	/* A response to HEAD, and 1xx/204/304, have no body whatever the
	 * headers say (1 = skip body). */
	if (p->response && (p->head_method_req || hp->status_code / 100 == 1 ||
			    hp->status_code == 204 || hp->status_code == 304))
		return 1;
	return 0;
}

static int on_body(http_parser *hp, const char *at, size_t n)
{
	struct bm_h1_parser *p = P(hp);
	int rc;

	p->body_bytes += n;
	if (!p->body_cb)
		return 0;
	rc = p->body_cb(p->body_u, (const uint8_t *)at, n);
	if (rc) {
		p->body_err = rc;
		return -1;
	}
	return 0;
}

static int on_message_complete(http_parser *hp)
{
	struct bm_h1_parser *p = P(hp);

	p->msg_done = 1;
	http_parser_pause(hp, 1);
	return 0;
}

static const http_parser_settings settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_status = on_status,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

void bm_h1_init(struct bm_h1_parser *p, int response)
{
	char *buf = p->buf;
	size_t cap = p->cap;

	memset(p, 0, sizeof(*p));
	p->buf = buf;
	p->cap = cap;
	p->response = response;
	http_parser_init(&p->p, response ? HTTP_RESPONSE : HTTP_REQUEST);
	p->p.data = p;
	p->state = BM_H1_HEAD;
}

void bm_h1_fini(struct bm_h1_parser *p)
{
	free(p->buf);
	p->buf = NULL;
	p->cap = p->len = 0;
}

void bm_h1_reset(struct bm_h1_parser *p)
{
	uint8_t hm = p->head_method_req;

	bm_h1_init(p, p->response);
	p->head_method_req = hm;
}

void bm_h1_expect_head_response(struct bm_h1_parser *p, int head_request)
{
	p->head_method_req = head_request ? 1 : 0;
}

static void finish_head(struct bm_h1_parser *p)
{
	struct bm_h1_head *h = &p->head;
	http_parser *hp = &p->p;

	memset(h, 0, offsetof(struct bm_h1_head, hdr));
	h->n_hdr = 0;
	h->content_length = -1;
	/* NUL-terminate every piece in the buffer: each is followed by at
	 * least one delimiter byte (SP, ':', CR or LF) of the head itself. */
	for (size_t i = 0; i < p->n_off; i++) {
		struct bm_http_hdr *x = &h->hdr[h->n_hdr++];
		char *name = p->buf + p->off[i].no;
		char *val = p->buf + p->off[i].vo;
		size_t vl = p->off[i].vl;

		for (size_t k = 0; k < p->off[i].nl; k++)
			name[k] = (char)tolower((unsigned char)name[k]);
		while (vl && (val[vl - 1] == ' ' || val[vl - 1] == '\t'))
			vl--;
		/* empty value: point at the name's end. Not by vo: http-parser
		 * reports an empty value as a zero-length piece at the start of
		 * the next line, whose first byte the NUL below would clobber. */
		if (!vl)
			val = name + p->off[i].nl;
		x->name = name;
		x->name_len = p->off[i].nl;
		x->value = val;
		x->value_len = vl;
	}
	for (size_t i = 0; i < h->n_hdr; i++) {
		((char *)h->hdr[i].name)[h->hdr[i].name_len] = 0;
		((char *)h->hdr[i].value)[h->hdr[i].value_len] = 0;
	}
	h->major = (uint8_t)hp->http_major;
	h->minor = (uint8_t)hp->http_minor;
	if (p->response) {
		h->status = hp->status_code;
		h->reason = p->reason_l ? p->buf + p->reason_o : "";
		if (p->reason_l)
			p->buf[p->reason_o + p->reason_l] = 0;
	} else {
		h->method = http_method_str((enum http_method)hp->method);
		h->target = p->buf + p->url_o;
		h->target_len = p->url_l;
		p->buf[p->url_o + p->url_l] = 0;
	}
	h->chunked = (hp->flags & F_CHUNKED) ? 1 : 0;
	if (!h->chunked && (hp->flags & F_CONTENTLENGTH))
		h->content_length = (int64_t)hp->content_length;
	/* A CONNECT request has no content (RFC 9110 §9.3.6): http-parser
	 * ends the message at its head whatever the framing headers say, so
	 * the head must not promise a body that never comes. */
	if (!p->response && hp->method == HTTP_CONNECT) {
		h->chunked = 0;
		h->content_length = -1;
	}
	h->keep_alive = http_should_keep_alive(hp) ? 1 : 0;
	h->upgrade = (!p->response && (hp->method == HTTP_CONNECT ||
				       ((hp->flags & F_UPGRADE) && (hp->flags & F_CONNECTION_UPGRADE))));
	if (p->response) {
		int nobody = p->head_method_req || h->status / 100 == 1 || h->status == 204 ||
			     h->status == 304;

		h->has_body = !nobody && (h->chunked || h->content_length != 0);
		h->until_close = !nobody && !h->chunked && h->content_length < 0;
		if (h->until_close)
			h->keep_alive = 0;
	} else {
		h->has_body = h->chunked || h->content_length > 0;
	}
}

ssize_t bm_h1_parse_head(struct bm_h1_parser *p, const uint8_t *d, size_t n)
{
	size_t start = p->len, got;

	if (p->state != BM_H1_HEAD)
		return 0;
	if (n > BM_H1_HEAD_MAX + 1 - p->len)
		n = BM_H1_HEAD_MAX + 1 - p->len; /* one byte over the limit tells */
	if (p->len + n + 1 > p->cap) {
		size_t cap = p->cap ? p->cap : 4096;
		char *nb;

		while (cap < p->len + n + 1)
			cap *= 2;
		nb = realloc(p->buf, cap);
		if (!nb)
			return -ENOMEM;
		p->buf = nb;
		p->cap = cap;
	}
	memcpy(p->buf + p->len, d, n);
	p->len += n;
	got = http_parser_execute(&p->p, &settings, p->buf + start, n);
	if (p->head_done_cb) {
		p->len = start + got;
		if (p->len > BM_H1_HEAD_MAX) {
			p->err = BM_H1_ETOOBIG;
			p->state = BM_H1_ERROR;
			return -EBADMSG;
		}
		finish_head(p);
		http_parser_pause(&p->p, 0);
		p->state = BM_H1_BODY;
		return (ssize_t)got;
	}
	if (HTTP_PARSER_ERRNO(&p->p) != HPE_OK) {
		if (!p->err)
			p->err = HTTP_PARSER_ERRNO(&p->p) == HPE_HEADER_OVERFLOW ? BM_H1_ETOOBIG :
										     BM_H1_EMALFORMED;
		p->state = BM_H1_ERROR;
		return -EBADMSG;
	}
	if (p->len > BM_H1_HEAD_MAX) {
		p->err = BM_H1_ETOOBIG;
		p->state = BM_H1_ERROR;
		return -EBADMSG;
	}
	return (ssize_t)got;
}

ssize_t bm_h1_parse_body(struct bm_h1_parser *p, const uint8_t *d, size_t n,
			 int (*cb)(void *u, const uint8_t *d, size_t n), void *u)
{
	size_t got;

	if (p->state == BM_H1_DONE)
		return 0;
	if (p->state != BM_H1_BODY)
		return -EINVAL;
	p->body_cb = cb;
	p->body_u = u;
	p->body_err = 0;
	got = http_parser_execute(&p->p, &settings, (const char *)d, n);
	p->body_cb = NULL;
	if (p->body_err)
		return p->body_err;
	if (p->msg_done) {
		http_parser_pause(&p->p, 0);
		p->state = BM_H1_DONE;
		return (ssize_t)got;
	}
	if (HTTP_PARSER_ERRNO(&p->p) != HPE_OK || !n) {
		/* !n: the connection ended before the message did */
		p->err = BM_H1_EMALFORMED;
		p->state = BM_H1_ERROR;
		return -EBADMSG;
	}
	return (ssize_t)got;
}

size_t bm_h1_trailers(struct bm_h1_parser *p, struct bm_http_hdr *out, size_t max)
{
	size_t k = 0;

	for (size_t i = 0; i < p->n_toff && k < max; i++) {
		char *name = p->tbuf + p->toff[i].no, *val = p->tbuf + p->toff[i].vo;
		size_t vl = p->toff[i].vl;

		if (!p->toff[i].nl || memchr(val, 0, vl))
			continue;
		for (size_t j = 0; j < p->toff[i].nl; j++)
			name[j] = (char)tolower((unsigned char)name[j]);
		while (vl && (val[vl - 1] == ' ' || val[vl - 1] == '\t'))
			vl--;
		out[k].name = name;
		out[k].name_len = p->toff[i].nl;
		out[k].value = vl ? val : "";
		out[k].value_len = vl;
		k++;
	}
	return k;
}

const struct bm_http_hdr *bm_h1_find(const struct bm_http_hdr *h, size_t n, const char *name)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i < n; i++)
		if (h[i].name_len == nl && !memcmp(h[i].name, name, nl))
			return &h[i];
	return NULL;
}

int bm_h1_has_token(const char *v, size_t len, const char *token)
{
	size_t tl = strlen(token);
	size_t i = 0;

	while (i < len) {
		size_t s, e;

		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < len && v[i] != ',')
			i++;
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && !strncasecmp(v + s, token, tl))
			return 1;
	}
	return 0;
}

/* ---- header lists ----------------------------------------------------------- */

void bm_h1_hlist_from(struct bm_h1_hlist *l, const struct bm_http_hdr *h, size_t n)
{
	l->n = n < BM_H1_MAX_HDRS ? n : BM_H1_MAX_HDRS;
	if (l->n)
		memcpy(l->h, h, l->n * sizeof(*h));
	l->arena_len = 0;
}

static const char *arena_dup(struct bm_h1_hlist *l, const char *s, size_t n)
{
	char *d;

	if (l->arena_len + n + 1 > sizeof(l->arena))
		return NULL;
	d = l->arena + l->arena_len;
	memcpy(d, s, n);
	d[n] = 0;
	l->arena_len += n + 1;
	return d;
}

void bm_h1_hlist_remove(struct bm_h1_hlist *l, const char *name)
{
	size_t nl = strlen(name), j = 0;

	for (size_t i = 0; i < l->n; i++)
		if (!(l->h[i].name_len == nl && !strncasecmp(l->h[i].name, name, nl)))
			l->h[j++] = l->h[i];
	l->n = j;
}

int bm_h1_hlist_add(struct bm_h1_hlist *l, const char *name, const char *value, size_t vlen)
{
	const char *n, *v;
	size_t nl = strlen(name);

	if (l->n == sizeof(l->h) / sizeof(l->h[0]))
		return -ENOSPC;
	n = arena_dup(l, name, nl);
	v = n ? arena_dup(l, value, vlen) : NULL;
	if (!v)
		return -ENOSPC;
	for (size_t i = 0; i < nl; i++)
		((char *)n)[i] = (char)tolower((unsigned char)n[i]);
	l->h[l->n].name = n;
	l->h[l->n].name_len = nl;
	l->h[l->n].value = v;
	l->h[l->n].value_len = vlen;
	l->n++;
	return 0;
}

int bm_h1_hlist_set(struct bm_h1_hlist *l, const char *name, const char *value, size_t vlen)
{
	bm_h1_hlist_remove(l, name);
	return bm_h1_hlist_add(l, name, value, vlen);
}

const struct bm_http_hdr *bm_h1_hlist_get(const struct bm_h1_hlist *l, const char *name)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i < l->n; i++)
		if (l->h[i].name_len == nl && !strncasecmp(l->h[i].name, name, nl))
			return &l->h[i];
	return NULL;
}

int bm_h1_hlist_apply(struct bm_h1_hlist *l, const struct bm_l7_hdr_ops *ops)
{
	int err = 0;

	if (!ops)
		return 0;
	for (size_t i = 0; i < ops->n_remove; i++)
		bm_h1_hlist_remove(l, ops->remove[i]);
	for (size_t i = 0; i < ops->n_set && !err; i++) {
		const char *name = ops->set[i].name;

		/* :authority is the Host header in HTTP/1.1 */
		if (!strcmp(name, ":authority"))
			name = "host";
		err = bm_h1_hlist_set(l, name, ops->set[i].value, strlen(ops->set[i].value));
	}
	for (size_t i = 0; i < ops->n_add && !err; i++)
		err = bm_h1_hlist_add(l, ops->add[i].name, ops->add[i].value,
				      strlen(ops->add[i].value));
	return err;
}

void bm_h1_hlist_strip_hop(struct bm_h1_hlist *l)
{
	static const char *const hop[] = { "keep-alive", "proxy-connection", "transfer-encoding",
					   "te", "upgrade", "trailer", "content-length" };
	const struct bm_http_hdr *c;

	/* Headers the Connection header names are hop-by-hop too (RFC 9110
	 * §7.6.1). content-length is re-added by the framing code. */
	while ((c = bm_h1_hlist_get(l, "connection"))) {
		char tok[64];
		const char *v = c->value, *end = c->value + c->value_len;

		while (v < end) {
			const char *s;
			size_t n;

			while (v < end && (*v == ' ' || *v == ','))
				v++;
			s = v;
			while (v < end && *v != ',')
				v++;
			n = (size_t)(v - s);
			while (n && s[n - 1] == ' ')
				n--;
			if (n && n < sizeof(tok)) {
				memcpy(tok, s, n);
				tok[n] = 0;
				if (strcasecmp(tok, "connection"))
					bm_h1_hlist_remove(l, tok);
			}
		}
		bm_h1_hlist_remove(l, "connection");
	}
	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		bm_h1_hlist_remove(l, hop[i]);
}

/* ---- serialization ---------------------------------------------------------- */

static int put(struct bm_loop *lp, struct bm_chunkq *q, const void *d, size_t n)
{
	return bm_chunkq_append(lp, q, d, n);
}

static int put_headers(struct bm_loop *lp, struct bm_chunkq *q, const struct bm_h1_hlist *l)
{
	int err = 0;

	for (size_t i = 0; i < l->n && !err; i++) {
		err = put(lp, q, l->h[i].name, l->h[i].name_len);
		if (!err)
			err = put(lp, q, ": ", 2);
		if (!err)
			err = put(lp, q, l->h[i].value, l->h[i].value_len);
		if (!err)
			err = put(lp, q, "\r\n", 2);
	}
	return err ? err : put(lp, q, "\r\n", 2);
}

int bm_h1_write_request(struct bm_loop *lp, struct bm_chunkq *q, const char *method,
			const char *target, size_t target_len, const struct bm_h1_hlist *l)
{
	int err = put(lp, q, method, strlen(method));

	if (!err)
		err = put(lp, q, " ", 1);
	if (!err)
		err = put(lp, q, target, target_len);
	if (!err)
		err = put(lp, q, " HTTP/1.1\r\n", 11);
	return err ? err : put_headers(lp, q, l);
}

int bm_h1_write_response(struct bm_loop *lp, struct bm_chunkq *q, int minor, int status,
			 const char *reason, const struct bm_h1_hlist *l)
{
	char line[9 + 20 + 1 + 100 + 2];
	/* The reason is cut to 100 characters: a longer line would not fit
	 * (an upstream's reason can be any length). */
	const char *rs = reason && *reason ? reason : bm_h1_reason(status);
	size_t rl = strnlen(rs, 100), n;
	int err;

	memcpy(line, minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
	n = 9 + bm_utoa(line + 9, status < 0 ? 0 : (uint64_t)status);
	line[n++] = ' ';
	memcpy(line + n, rs, rl);
	n += rl;
	memcpy(line + n, "\r\n", 2);
	err = put(lp, q, line, n + 2);

	return err ? err : put_headers(lp, q, l);
}

int bm_h1_write_body(struct bm_loop *lp, struct bm_chunkq *q, int chunked, const uint8_t *d,
		     size_t n)
{
	char hdr[24];
	int err, k;

	if (!n)
		return 0;
	if (!chunked)
		return put(lp, q, d, n);
	k = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
	err = put(lp, q, hdr, (size_t)k);
	if (!err)
		err = put(lp, q, d, n);
	return err ? err : put(lp, q, "\r\n", 2);
}

int bm_h1_write_end(struct bm_loop *lp, struct bm_chunkq *q)
{
	return put(lp, q, "0\r\n\r\n", 5);
}

/* Names a trailer may not carry (RFC 9110 §6.5.1: framing, routing). */
static int trailer_forbidden(const struct bm_http_hdr *h)
{
	static const char *const no[] = { "content-length", "transfer-encoding", "host",
					  "connection", "te", "trailer", "keep-alive", "upgrade" };

	if (h->name_len && h->name[0] == ':')
		return 1;
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		if (h->name_len == strlen(no[i]) && !strncasecmp(h->name, no[i], h->name_len))
			return 1;
	return 0;
}

int bm_h1_write_end_trailers(struct bm_loop *lp, struct bm_chunkq *q,
			     const struct bm_http_hdr *t, size_t n)
{
	int err = put(lp, q, "0\r\n", 3);

	for (size_t i = 0; i < n && !err; i++) {
		if (trailer_forbidden(&t[i]))
			continue;
		err = put(lp, q, t[i].name, t[i].name_len);
		if (!err)
			err = put(lp, q, ": ", 2);
		if (!err)
			err = put(lp, q, t[i].value, t[i].value_len);
		if (!err)
			err = put(lp, q, "\r\n", 2);
	}
	return err ? err : put(lp, q, "\r\n", 2);
}

const char *bm_h1_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 408: return "Request Timeout";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Unknown";
	}
}
