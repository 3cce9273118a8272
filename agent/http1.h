/* HTTP/1.1 message codec for the L7 proxy (agent/l7proxy.c), on top of
 * the Debian http-parser library (framing rules of RFC 9112 as it knows
 * them). A parser reads one message at a time:
 *
 *   head: bytes are copied into the parser's own buffer (at most
 *         BM_H1_HEAD_MAX: 431 beyond) and parsed incrementally; when the
 *         head is complete the message's request line / status and its
 *         headers (names lower-cased) are available as views into that
 *         buffer, and parsing stops right there;
 *   body: de-framed (content-length, chunked, or until the connection
 *         closes for responses) and handed to a callback piece by piece,
 *         straight from the caller's bytes; parsing stops at the end of
 *         the message, so pipelined messages wait their turn.
 *
 * The writer side serializes a head from an editable header list and
 * frames body pieces (chunked output is re-chunked from decoded pieces).
 * Trailers of a chunked message are kept (up to BM_H1_TRAILERS_MAX fields,
 * BM_H1_TRAILER_BYTES bytes; more are dropped) and can be written back. */
#ifndef BM_HTTP1_H
#define BM_HTTP1_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <http_parser.h>
#include "l7.h"
#include "relay.h"

#define BM_H1_HEAD_MAX (64 * 1024)  /* request/response head limit: 431 beyond */
#define BM_H1_MAX_HDRS 128          /* header lines per head (431 beyond) */
#define BM_H1_TRAILERS_MAX 16       /* trailer fields kept (gRPC sends two or three) */
#define BM_H1_TRAILER_BYTES 4096

enum bm_h1_state {
	BM_H1_HEAD,       /* reading the head */
	BM_H1_BODY,       /* head parsed, body (possibly empty) being read */
	BM_H1_DONE,       /* the message is complete */
	BM_H1_ERROR,
};

enum bm_h1_err {
	BM_H1_EOK = 0,
	BM_H1_EMALFORMED,  /* 400 */
	BM_H1_ETOOBIG,     /* 431 */
};

/* One parsed head; every pointer points into the parser's buffer and is
 * valid until bm_h1_reset() or the next head. */
struct bm_h1_head {
	const char *method;          /* request: "GET"...; NULL for responses */
	const char *target;          /* request target (path with query), NUL-terminated */
	size_t target_len;
	int status;                  /* response status */
	const char *reason;          /* response reason phrase, NUL-terminated */
	uint8_t major, minor;
	struct bm_http_hdr hdr[BM_H1_MAX_HDRS];
	size_t n_hdr;
	int64_t content_length;      /* -1: none */
	uint8_t chunked;             /* transfer-encoding: chunked */
	uint8_t keep_alive;          /* the connection may carry another message */
	uint8_t upgrade;             /* Upgrade / CONNECT request */
	uint8_t has_body;            /* a body follows (maybe until close) */
	uint8_t until_close;         /* response body delimited by the connection's end */
};

struct bm_h1_parser {
	http_parser p;
	int response;
	enum bm_h1_state state;
	enum bm_h1_err err;
	uint8_t head_method_req;     /* response parser: the request was HEAD (no body) */
	uint8_t in_value, head_done_cb, msg_done;
	char *buf;                   /* head bytes (names lower-cased in place) */
	size_t len, cap;
	struct { uint32_t no, nl, vo, vl; } off[BM_H1_MAX_HDRS];
	size_t n_off;
	uint32_t url_o, url_l, reason_o, reason_l;
	struct bm_h1_head head;
	/* body delivery during bm_h1_parse_body */
	int (*body_cb)(void *u, const uint8_t *d, size_t n);
	void *body_u;
	int body_err;
	uint64_t body_bytes;         /* decoded body bytes so far */
	/* trailers: names and values copied (they live in the caller's bytes) */
	char tbuf[BM_H1_TRAILER_BYTES];
	size_t tlen;
	struct { uint16_t no, nl, vo, vl; } toff[BM_H1_TRAILERS_MAX];
	size_t n_toff;
	uint8_t t_in_value, t_drop;
};

void bm_h1_init(struct bm_h1_parser *p, int response);
void bm_h1_fini(struct bm_h1_parser *p);
/* Ready for the next message on the same connection (keeps the buffer).
 * A response parser gets whether the next request is a HEAD request. */
void bm_h1_reset(struct bm_h1_parser *p);
void bm_h1_expect_head_response(struct bm_h1_parser *p, int head_request);

/* Feed head bytes. Returns how many were consumed (the rest, if state is
 * now BM_H1_BODY, starts the body: pass it to bm_h1_parse_body), or
 * -EBADMSG (p->err says 400 or 431), -ENOMEM. */
ssize_t bm_h1_parse_head(struct bm_h1_parser *p, const uint8_t *d, size_t n);
/* Feed body bytes (n == 0: the connection ended). cb gets de-framed body
 * pieces; a nonzero return from cb stops parsing and is returned. Returns
 * bytes consumed (state becomes BM_H1_DONE at the message's end), or
 * -EBADMSG on a framing error or a premature end. */
ssize_t bm_h1_parse_body(struct bm_h1_parser *p, const uint8_t *d, size_t n,
			 int (*cb)(void *u, const uint8_t *d, size_t n), void *u);

/* The trailers of a completed chunked message (names lower case) into
 * out[0..max); returns how many. Views into p, valid until the next reset. */
size_t bm_h1_trailers(struct bm_h1_parser *p, struct bm_http_hdr *out, size_t max);

/* The first value of header name (lower case) or NULL. */
const struct bm_http_hdr *bm_h1_find(const struct bm_http_hdr *h, size_t n, const char *name);
/* Does a comma-separated header value contain token (case-insensitive)? */
int bm_h1_has_token(const char *v, size_t len, const char *token);

/* ---- writer ---------------------------------------------------------------- */

/* An editable header list whose strings live in the caller's storage or in
 * the list's own arena (values added by edits). */
struct bm_h1_hlist {
	struct bm_http_hdr h[BM_H1_MAX_HDRS + 32];
	size_t n;
	char arena[8192];
	size_t arena_len;
};

void bm_h1_hlist_from(struct bm_h1_hlist *l, const struct bm_http_hdr *h, size_t n);
void bm_h1_hlist_remove(struct bm_h1_hlist *l, const char *name);
/* set replaces every value of name; add appends one. -ENOSPC when full. */
int bm_h1_hlist_set(struct bm_h1_hlist *l, const char *name, const char *value, size_t vlen);
int bm_h1_hlist_add(struct bm_h1_hlist *l, const char *name, const char *value, size_t vlen);
const struct bm_http_hdr *bm_h1_hlist_get(const struct bm_h1_hlist *l, const char *name);
/* Istio header operations (headers.request/response): remove, set, add,
 * in Envoy's order. */
int bm_h1_hlist_apply(struct bm_h1_hlist *l, const struct bm_l7_hdr_ops *ops);
/* Drop hop-by-hop headers (connection, keep-alive, proxy-connection,
 * transfer-encoding, te, upgrade, trailer, and those named in Connection). */
void bm_h1_hlist_strip_hop(struct bm_h1_hlist *l);

/* Append "METHOD TARGET HTTP/1.1" (or "HTTP/1.x STATUS REASON") and the
 * headers and the blank line to q. */
int bm_h1_write_request(struct bm_loop *lp, struct bm_chunkq *q, const char *method,
			const char *target, size_t target_len, const struct bm_h1_hlist *l);
int bm_h1_write_response(struct bm_loop *lp, struct bm_chunkq *q, int minor, int status,
			 const char *reason, const struct bm_h1_hlist *l);
/* A body piece, chunk-framed when chunked (never a zero-length chunk). */
int bm_h1_write_body(struct bm_loop *lp, struct bm_chunkq *q, int chunked, const uint8_t *d,
		     size_t n);
/* The last chunk of a chunked body. */
int bm_h1_write_end(struct bm_loop *lp, struct bm_chunkq *q);
/* The same with trailer fields (hop-by-hop and framing names skipped). */
int bm_h1_write_end_trailers(struct bm_loop *lp, struct bm_chunkq *q,
			     const struct bm_http_hdr *t, size_t n);
const char *bm_h1_reason(int status);

#endif
