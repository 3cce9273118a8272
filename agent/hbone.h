/* HBONE: HTTP/2 CONNECT streams over one TLS 1.3 connection (istio-api.md
 * §10.1). One struct bm_hbone_conn is one outer connection, client or server
 * side, living in one worker's loop; each CONNECT stream is relayed to one
 * plain TCP socket (the app's connection on the client side, the upstream
 * app on the server side) with HTTP/2 flow control as the back-pressure:
 * a stream never buffers more than its receive window, and app bytes are
 * read only when the peer's window has room.
 * Per new stream: the client sends its app's first bytes with the CONNECT,
 * not after the 200 (the server keeps them until its upstream is connected,
 * or drops them with its refusal); the server holds its 200 until the
 * upstream's first bytes when the client's came first (at most until the
 * next tick), so request and answer each take one write. A connection
 * writes once per batch of events, whatever its streams queued. */
#ifndef BM_HBONE_H
#define BM_HBONE_H
#include <stdint.h>
#include <openssl/ssl.h>
#include <nghttp2/nghttp2.h>
#include "relay.h"

#define BM_HBONE_STREAM_WINDOW (256 * 1024)   /* per stream, both directions */
#define BM_HBONE_CONN_WINDOW   (16 * 1024 * 1024)
#define BM_HBONE_MAX_STREAMS   1000
#define BM_HBONE_OUT_HIGH      (64 * 1024)    /* stop producing frames above this */
#define BM_HBONE_PEER_MAX      256

struct bm_hbone_conn;

/* A CONNECT request as the server saw it (strings NUL-terminated, possibly
 * truncated to the stream's buffers). */
struct bm_hbone_req {
	const char *method;
	const char *authority;
	const char *baggage;
	const char *forwarded;
	/* on_request may set *row: the stream's bytes are folded into it when
	 * the stream ends (its opened must already be counted). */
	struct bm_mesh_row **row;
};

struct bm_hbone_ops {
	/* Server: a request arrived. Return 400/401/503 to refuse it, or 0
	 * with *upstream_fd set to a non-blocking socket, connected or with
	 * the connect in progress (503 is answered if that connect fails). */
	int (*on_request)(struct bm_hbone_conn *c, const struct bm_hbone_req *r, int *upstream_fd);
	/* TLS handshake done (not called in plaintext mode): check the peer,
	 * fill c->peer. Nonzero closes the connection. */
	int (*on_handshake)(struct bm_hbone_conn *c);
	/* The connection is going (every stream already closed; c->ssl still
	 * there, e.g. to keep its session): unlink it. */
	void (*on_close)(struct bm_hbone_conn *c);
};

/* A request's headers, kept while its HEADERS block is parsed. */
struct bm_hbone_hdrs {
	char method[16], authority[64], baggage[384], forwarded[128];
};

struct bm_hbone_conn {
	struct bm_ev ev;
	struct bm_loop *l;
	const struct bm_hbone_ops *ops;
	void *user;                    /* the owner's (proxy: pod, pool key) */
	SSL *ssl;                      /* NULL: plaintext h2 (unit tests) */
	nghttp2_session *h2;
	struct bm_chunkq out;          /* encoded frames not yet written */
	struct hb_stream *streams;     /* open streams (and server streams awaiting upstream) */
	unsigned n_streams;
	uint8_t server, handshaking, established, draining, fatal, closed;
	uint8_t tcp_connecting;        /* client: connect() to :15008 in progress */
	uint8_t connect_failed;        /* client: that connect failed (see on_close) */
	uint8_t session_saved;         /* owner's flag: resumable session kept */
	uint8_t rx_drained;            /* the last read of the socket was short: it is empty
					* until the next (edge-triggered) event */
	uint8_t rx_eof;                /* FIN (or an error) seen: read on to EOF */
	uint64_t created_ms, last_rx_ms, idle_since_ms, ping_sent_ms;
	char peer[BM_HBONE_PEER_MAX];  /* peer principal (SPIFFE ID without spiffe://) */
	uint32_t peer_ip;              /* network order; the TCP peer */
	/* server: the request header block being parsed. One per connection,
	 * not per stream: HTTP/2 header blocks never interleave (CONTINUATION
	 * frames follow their HEADERS with nothing between). */
	struct bm_hbone_hdrs req;
	/* the owner's list links */
	struct bm_hbone_conn *next, *prev;
	struct bm_after flush;         /* one write per event batch (conn_kick) */
};

/* Take over fd (non-blocking; client: connecting or connected) and ssl (connect or
 * accept state already set; NULL for plaintext). NULL and errno on failure;
 * fd and ssl are released then too. */
struct bm_hbone_conn *bm_hbone_conn_new(struct bm_loop *l, int fd, SSL *ssl, int server,
					const struct bm_hbone_ops *ops, void *user);
/* Client: a CONNECT stream carrying app_fd (taken over). Headers may be
 * NULL. 0; -EAGAIN: this connection takes no new streams (draining, ids
 * used up), app_fd is still the caller's: open another connection; other
 * -errno: app_fd was reset and closed. */
int bm_hbone_stream_open(struct bm_hbone_conn *c, int app_fd, const char *authority,
			 const char *baggage, const char *forwarded);
/* The same, folding the stream's bytes into row at its end (row's opened
 * already counted; on a return other than 0 and -EAGAIN the row was closed
 * with no bytes). */
int bm_hbone_stream_open_row(struct bm_hbone_conn *c, int app_fd, const char *authority,
			     const char *baggage, const char *forwarded, struct bm_mesh_row *row);
/* Can this connection take another stream? */
int bm_hbone_conn_usable(const struct bm_hbone_conn *c);
/* Timers: PING when idle for ping_ms, give up when unanswered for
 * timeout_ms, close after close_idle_ms without streams (0: never), and
 * handshakes that take longer than timeout_ms. Returns 1 if it closed. */
int bm_hbone_conn_tick(struct bm_hbone_conn *c, uint64_t now_ms, uint64_t ping_ms,
		       uint64_t timeout_ms, uint64_t close_idle_ms);
/* Close now, resetting every stream's app socket. */
void bm_hbone_conn_close(struct bm_hbone_conn *c);

/* The first URI SAN of the peer's certificate (for providers that do not
 * give one): 0 or -errno. */
int bm_hbone_peer_uri(SSL *ssl, char *buf, size_t len);

#endif
