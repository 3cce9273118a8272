/* The mesh CA as a service (docs/identity.md §6): nodes never hold the CA key.
 *
 * Server (`meshd --ca-serve ADDR`): the meshd that holds the root signs CSRs
 * on a thread of its own (never a data-path worker), one TLS 1.3 connection
 * per request, each bounded in size and time. Three operations:
 *   join   no client certificate; a one-time join token (bm_store_token_*)
 *          buys a node certificate spiffe://<td>/bpfmesh/node/<NODE>;
 *   renew  client certificate = the current node certificate: a new one;
 *   sign   client certificate = a node certificate of NODE: an X.509-SVID for
 *          ns/sa, only if a WorkloadEntry of that namespace and service
 *          account carries the label bpfmesh.io/node=NODE. NODE comes from the
 *          certificate, never from the request body.
 *
 * Client (`meshd --ca-addr HOST:PORT --ca-bundle ROOT.pem`): keeps the node key
 * and certificate in its state directory, joins with the token once, renews
 * at half life, and is the identity manager's issuer (bm_caclient_issue).
 * Every exchange is bounded by BM_CASVC_TIMEOUT_MS; after a failure the client
 * backs off (1 s doubling to 30 s) and answers -EAGAIN meanwhile, so a CA
 * that is down costs the caller at most one timeout per back-off period.
 *
 * Wire format: a frame is a 4-byte big-endian length and that many bytes of
 * JSON (at most BM_CASVC_MSG_MAX). The client sends one request frame, the
 * server answers with one frame and closes:
 *   {"v":1,"op":"join","node":N,"token":T,"csr":PEM}
 *   {"v":1,"op":"renew","csr":PEM}
 *   {"v":1,"op":"sign","namespace":NS,"service_account":SA,"ttl":S,"csr":PEM}
 *   -> {"v":1,"ok":true,"cert":PEM} | {"v":1,"ok":false,"code":ERRNO,"error":WHY}
 *
 * Threads: the server's handler runs on its thread with its own store handle;
 * the client is used by one thread (meshd's main loop). */
#ifndef BM_CASVC_H
#define BM_CASVC_H
#include <stddef.h>
#include <time.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include "ca.h"

#define BM_CASVC_PORT 15012               /* Istio's CA/xDS mTLS port */
#define BM_CASVC_VERSION 1
#define BM_CASVC_MSG_MAX (64 * 1024)      /* a CSR or certificate is ~1 KiB */
#define BM_CASVC_TIMEOUT_MS 2000          /* connect + handshake + answer */
#define BM_NODE_CERT_TTL (30L * 24 * 3600)
#define BM_CASVC_SERVER_TTL (24L * 3600)  /* the service's own certificate */
#define BM_CASVC_NODE_LABEL "bpfmesh.io/node"
#define BM_NODE_KEY_FILE "node-key.pem"
#define BM_NODE_CERT_FILE "node-cert.pem"
#define BM_NODE_NAME_MAX 253

/* ---- names ---- */

/* spiffe://<td>/bpfmesh/node/<node>: a path no workload ID (/ns/NS/sa/SA) can
 * have. 0, -EINVAL (node not [a-z0-9.-], 1-253 bytes, or a dot segment). */
int bm_casvc_node_id(const char *td, const char *node, char *buf, size_t len);
/* spiffe://<td>/bpfmesh/ca: what the service presents. */
int bm_casvc_server_id(const char *td, char *buf, size_t len);
/* Store keys: "nodes/<node>/join-token", "nodes/<node>/record". */
int bm_casvc_token_key(const char *node, char *buf, size_t len);
int bm_casvc_record_key(const char *node, char *buf, size_t len);

/* ---- wire format ---- */

/* *buf malloc'd: header + compact JSON. -EMSGSIZE over BM_CASVC_MSG_MAX. */
int bm_casvc_frame_encode(const json_t *msg, char **buf, size_t *len);
/* One frame at the start of buf: 0 with *msg (a JSON object) and *used;
 * -EAGAIN incomplete (*used = bytes needed in all); -EMSGSIZE announced
 * length over the limit; -EBADMSG not a JSON object. */
int bm_casvc_frame_decode(const char *buf, size_t len, json_t **msg, size_t *used);
json_t *bm_casvc_req_join(const char *node, const char *token, const char *csr);
json_t *bm_casvc_req_renew(const char *csr);
json_t *bm_casvc_req_sign(const char *ns, const char *sa, long ttl, const char *csr);
json_t *bm_casvc_answer_ok(const char *cert_pem);
json_t *bm_casvc_answer_err(int err, const char *why);
/* 0 and *cert_pem (malloc'd), or the answer's -errno with why filled. */
int bm_casvc_answer_parse(const json_t *ans, char **cert_pem, char *why, size_t why_len);

/* ---- authorization (pure; the server's decisions) ---- */

/* The node an authenticated client certificate speaks for: signed by the CA,
 * not expired at now, its single URI SAN spiffe://<td>/bpfmesh/node/NAME.
 * 0 and node, or -EPERM with *why. */
int bm_casvc_peer_node(const struct bm_ca *ca, X509 *peer, time_t now, char *node, size_t len,
		       const char **why);
/* Does a WorkloadEntry in workload_entries (a store list) have namespace ns,
 * serviceAccount sa (Istio's default "default") and the label
 * bpfmesh.io/node=node? NULL when yes, else why not. */
const char *bm_casvc_workload_on_node(const json_t *workload_entries, const char *node, const char *ns,
				      const char *sa);

/* ---- server ---- */

struct bm_casvc;

/* ca is borrowed and must outlive the service; store_url is opened again
 * (a store handle belongs to one thread). node_ttl 0: 30 days. */
int bm_casvc_new(struct bm_ca *ca, const char *store_url, long node_ttl, struct bm_casvc **out);
/* Bind addr (IP:PORT) and start the service thread. */
int bm_casvc_listen(struct bm_casvc *s, const char *addr);
/* Stops the thread (if any) and frees. */
void bm_casvc_free(struct bm_casvc *s);
/* One request: peer is the client certificate the TLS layer verified (NULL:
 * none). Always an answer object; refusals are logged and counted. */
json_t *bm_casvc_handle(struct bm_casvc *s, X509 *peer, const json_t *req, time_t now);
/* {"listen","joined","renewed","signed","refused","tls_failed","last_refusal"} */
json_t *bm_casvc_stats_json(struct bm_casvc *s);

/* ---- client ---- */

struct bm_caclient;

struct bm_caclient_opts {
	const char *addr;         /* HOST:PORT of the CA service */
	const char *bundle;       /* PEM file with the root certificate */
	const char *node;         /* this node's name */
	const char *state_dir;    /* node-key.pem (0600) and node-cert.pem live here */
	const char *trust_domain; /* NULL: cluster.local */
	const char *join_token;   /* used once when there is no valid node certificate */
};

/* Loads the bundle and any node certificate; contacts nothing. */
int bm_caclient_new(const struct bm_caclient_opts *o, struct bm_caclient **out);
void bm_caclient_free(struct bm_caclient *c);
/* The root of the bundle (borrowed). */
X509 *bm_caclient_root(struct bm_caclient *c);
/* Make sure a valid node certificate is held: join when there is none,
 * renew at half life. 0 when one is held (even if a due renewal failed),
 * -ENOKEY none and no token, -EAGAIN backing off, else the failure. */
int bm_caclient_node_cert(struct bm_caclient *c, time_t now);
/* bm_issue_fn for the identity manager (arg: the client). */
int bm_caclient_issue(void *arg, const char *spiffe_id, EVP_PKEY *key, long ttl, time_t now, X509 **cert,
		      STACK_OF(X509) **chain);
/* Ask for an SVID of ns/sa with a throw-away key and install nothing (meshctl
 * cert request: shows what the CA decides for this node). */
json_t *bm_caclient_request_json(struct bm_caclient *c, const char *ns, const char *sa, long ttl);
json_t *bm_caclient_status_json(struct bm_caclient *c);

#endif
