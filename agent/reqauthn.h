/* RequestAuthentication (reference §5): which jwtRules apply to a workload,
 * where a request's token is, and whether it is valid; plus the node-wide
 * JWKS cache (inline jwks parsed at config time, jwksUri fetched with
 * libcurl on a background thread, kept 5 minutes and refreshed).
 *
 * Outcomes, as Envoy's jwt_authn does them for Istio:
 *  - no token: pass, no request principal (an AuthorizationPolicy may still
 *    require one: 403, not 401);
 *  - a token that is not valid (signature, exp/nbf, issuer, audience,
 *    malformed, configured header prefix missing, JWKS not available): 401;
 *  - a valid token: principal "<iss>/<sub>" and its claims. */
#ifndef BM_REQAUTHN_H
#define BM_REQAUTHN_H
#include <stddef.h>
#include <time.h>
#include <jansson.h>
#include "jwt.h"
#include "l7.h"

/* ---- JWKS cache -------------------------------------------------------------- */

struct bm_jwks_cache;

/* refresh_s: how long a fetched JWKS is used before it is fetched again
 * (300 = Envoy's cache duration); timeout_s: fetch timeout (5). A failed
 * refresh keeps the last keys for one more refresh period, then drops them. */
struct bm_jwks_cache *bm_jwks_cache_new(unsigned refresh_s, unsigned timeout_s);
/* Stops the fetch thread (waits for a fetch in progress) and frees. */
void bm_jwks_cache_free(struct bm_jwks_cache *c);
/* After each store change: parse every inline jwks, (re)arm fetches for every
 * jwksUri (new ones at once), forget what the configuration no longer uses.
 * Never blocks on the network. 0 or -ENOMEM. */
int bm_jwks_cache_sync(struct bm_jwks_cache *c, const json_t *resources);
/* The keys for one jwtRule (a reference: bm_jwks_put() it), or NULL with a
 * reason in err: inline jwks invalid, jwksUri not fetched (yet), no source.
 * An unknown jwksUri is registered and fetched in the background. Safe from
 * any thread. */
struct bm_jwks *bm_jwks_cache_keys(struct bm_jwks_cache *c, const json_t *rule, char *err,
				   size_t len);

/* ---- per request --------------------------------------------------------------- */

struct bm_reqauthn_req {
	const char *method;
	const char *host;                /* :authority, for the www-authenticate realm */
	const char *path;                /* without query */
	const char *query;               /* after '?', NULL = none (fromParams, access_token) */
	const struct bm_http_hdr *hdr;   /* names lower case; name_len 0 = NUL-terminated */
	size_t n_hdr;
};

#define BM_REQAUTHN_MAX_STRIP 4

struct bm_reqauthn_result {
	char principal[512];             /* "<iss>/<sub>", "" = none */
	json_t *claims;                  /* the verified payload (a reference), NULL = none */
	/* forwardOriginalToken false: remove these before forwarding */
	char strip_header[BM_REQAUTHN_MAX_STRIP][128];   /* lower case */
	size_t n_strip_header;
	char strip_param[BM_REQAUTHN_MAX_STRIP][128];
	size_t n_strip_param;
	char www_authenticate[512];      /* for a 401 */
	char err[160];                   /* why the token is invalid (401 body) */
};

/* 0 pass (out->principal set when a valid token was presented), -EPERM
 * invalid token (401 with out->www_authenticate and out->err). The caller
 * frees out with bm_reqauthn_result_free() in both cases. */
int bm_reqauthn_check(struct bm_jwks_cache *c, const json_t *resources, const char *root_ns,
		      const char *wl_ns, const json_t *wl_labels, const struct bm_reqauthn_req *r,
		      time_t now, struct bm_reqauthn_result *out);
void bm_reqauthn_result_free(struct bm_reqauthn_result *out);

#endif
