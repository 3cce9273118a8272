/* Declarative resource schemas. Each kind's spec is a table of fields (name,
 * type, flags, enum values, range, custom check); lib/validate.c walks a YAML
 * tree against a table, producing canonical JSON and one error per problem.
 *
 * Istio fields we do not implement yet stay in the tables with
 * BM_F_UNSUPPORTED so they are refused by name ("not supported yet") instead
 * of being reported as unknown or silently dropped; enabling one later means
 * giving it a type/sub-table and removing the flag. */
#ifndef BM_SCHEMA_H
#define BM_SCHEMA_H
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "diag.h"
#include "ytree.h"

enum bm_ftype {
	BM_T_NONE,     /* only for BM_F_UNSUPPORTED placeholders */
	BM_T_STRING,   /* any scalar, kept as text ("true" and true alike) */
	BM_T_INT,      /* plain integer literal, range-checked */
	BM_T_BOOL,     /* plain true/false */
	BM_T_NUMBER,   /* plain int or float literal */
	BM_T_DURATION, /* string like "1.5s", >= 1 ms, whole ms (istio-api §0) */
	BM_T_OBJECT,   /* mapping with the fields in .fields */
	BM_T_LIST,     /* sequence of .elem */
	BM_T_MAP,      /* mapping of free-form keys to .elem */
	BM_T_ANY,      /* anything; used with BM_F_IGNORED */
};

#define BM_F_REQUIRED    0x01u /* must be present and not null */
#define BM_F_UNSUPPORTED 0x02u /* Istio field we refuse: "not supported yet" */
#define BM_F_NONEMPTY    0x04u /* list/map/string must not be empty */
#define BM_F_ICASE       0x08u /* enum compared case-insensitively, kept as given */
#define BM_F_RANGE       0x10u /* int: enforce [min, max] */
#define BM_F_IGNORED     0x20u /* accepted and dropped from the output */

struct bm_vctx;
struct bm_field;

/* Custom check, run after a value converted with no error inside it. It may
 * add errors with bm_verr()/bm_verr_at(); val is the converted JSON value. */
typedef void (*bm_check_fn)(struct bm_vctx *v, const struct bm_ynode *n, json_t *val);

struct bm_field {
	const char *name; /* NULL ends a field table */
	enum bm_ftype type;
	unsigned flags;
	const char *const *enums;       /* STRING: accepted values (NULL-ended) */
	const char *const *enums_later; /* STRING: Istio values we refuse for now */
	long long min, max;             /* INT with BM_F_RANGE */
	const struct bm_field *fields;  /* OBJECT: its fields */
	const struct bm_field *elem;    /* LIST/MAP: the element (name unused) */
	bm_check_fn check;
	bm_check_fn key_check;          /* MAP: called with each key node */
};

/* Largest field table; validate.c tracks "seen" fields in a fixed array. */
#define BM_SCHEMA_MAX_FIELDS 48

/* A resource kind. spec == NULL: known to Istio but not supported yet. */
struct bm_kind {
	const char *kind;      /* canonical CamelCase: "VirtualService" */
	const char *group;     /* "networking.istio.io" */
	const char *const *versions;
	const char *plural;    /* lower case: "virtualservices" */
	const char *shortname; /* "vs", or NULL */
	const struct bm_field *spec; /* the "spec" field (OBJECT + checks) */
};

/* All kinds, supported first; NULL-terminated by kind == NULL. */
extern const struct bm_kind bm_kinds[];
/* Exact kind match as written in a document, or NULL. */
const struct bm_kind *bm_kind_find(const char *kind);
/* CLI spelling: case-insensitive kind, plural, short name or "kind.group";
 * NULL when unknown. */
const struct bm_kind *bm_kind_lookup(const char *name);
/* "virtualservice.networking.istio.io" into buf (kubectl's resource prefix). */
const char *bm_kind_fullname(const struct bm_kind *k, char *buf, size_t size);
/* Does "group/version" name this kind? */
bool bm_kind_accepts_api_version(const struct bm_kind *k, const char *api_version);

/* Spec tables (lib/schema_networking.c, lib/schema_virtualservice.c). */
extern const struct bm_field bm_spec_virtualservice;
extern const struct bm_field bm_spec_destinationrule;
extern const struct bm_field bm_spec_serviceentry;
extern const struct bm_field bm_spec_workloadentry;
/* Spec tables (lib/schema_security.c). */
extern const struct bm_field bm_spec_peerauthentication;
extern const struct bm_field bm_spec_authorizationpolicy;
extern const struct bm_field bm_spec_requestauthentication;
/* Spec table (lib/schema_telemetry.c). */
extern const struct bm_field bm_spec_telemetry;
/* Element of a labels map (value checked as a Kubernetes label value). */
extern const struct bm_field bm_label_value;
/* metadata: name, namespace, labels, annotations; server fields ignored. */
extern const struct bm_field bm_metadata_fields[];

/* ---- validation engine (lib/validate.c) ---- */

struct bm_vctx {
	const char *file;
	struct bm_errlist *errs;
	char *path; /* "spec.http[0].route" while inside that node */
	size_t plen, pcap;
	unsigned key_line; /* line of the key whose value is converted next */
	bool oom;
};

void bm_vctx_init(struct bm_vctx *v, const char *file, struct bm_errlist *errs);
void bm_vctx_fini(struct bm_vctx *v);
/* Converts n according to f. Returns a new reference, or NULL when n is
 * unusable (errors recorded). The caller compares bm_errlist_count() before
 * and after to know whether anything inside was wrong. */
json_t *bm_validate_node(struct bm_vctx *v, const struct bm_field *f, const struct bm_ynode *n);
/* Converts map n against a field table (the whole document, metadata...). */
json_t *bm_validate_object(struct bm_vctx *v, const struct bm_field *fields,
			   const struct bm_ynode *n);
/* Path helpers: push returns the length to pop back to. */
size_t bm_vpath_push_key(struct bm_vctx *v, const char *key);
size_t bm_vpath_push_index(struct bm_vctx *v, size_t i);
void bm_vpath_pop(struct bm_vctx *v, size_t mark);
/* Error at the current path / at current path + suffix (".weight", "[1]"). */
void bm_verr(struct bm_vctx *v, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void bm_verr_at(struct bm_vctx *v, unsigned line, const char *suffix, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Warnings: the input is accepted, the user is told (deprecated fields). */
void bm_vwarn(struct bm_vctx *v, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void bm_vwarn_at(struct bm_vctx *v, unsigned line, const char *suffix, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* ---- reusable checks (lib/checks.c) ---- */

bool bm_is_dns1123_label(const char *s);     /* [a-z0-9]([-a-z0-9]*[a-z0-9])?, <= 63 */
bool bm_is_dns1123_subdomain(const char *s); /* labels joined by '.', <= 253 */
/* Strict dotted-quad IPv4; with prefix, "a.b.c.d/n" too (*prefix = n or -1). */
bool bm_parse_ipv4(const char *s, uint32_t *addr, int *prefix, bool allow_cidr);
bool bm_looks_ipv6(const char *s);

void bm_check_dns1123_label(struct bm_vctx *v, const struct bm_ynode *n, json_t *val);
void bm_check_dns1123_subdomain(struct bm_vctx *v, const struct bm_ynode *n, json_t *val);
/* Service host: FQDN, short name or "*.suffix"; "*" alone refused. */
void bm_check_host(struct bm_vctx *v, const struct bm_ynode *n, json_t *val);
/* exportTo entry: ".", "*", "~" or a namespace name. */
void bm_check_export_to(struct bm_vctx *v, const struct bm_ynode *n, json_t *val);
/* Label keys: [prefix/]name as Kubernetes qualified names. */
void bm_check_label_key(struct bm_vctx *v, const struct bm_ynode *n, json_t *val);
/* IPv4 address or CIDR; IPv6 is refused as "not supported yet". */
void bm_check_ipv4_or_cidr(struct bm_vctx *v, const struct bm_ynode *n, json_t *val);
/* RFC 7230 token; with lower_only, no upper case (Istio's match headers). */
bool bm_is_http_header_name(const char *s, bool lower_only);
/* Regular expression (RE2 syntax, checked with PCRE2): the compiler's
 * message, or no error. */
void bm_check_regex(struct bm_vctx *v, const struct bm_ynode *n, json_t *val);
/* Duration that may also be 0 ("0s" = disabled), else Istio's >= 1 ms rule. */
void bm_check_duration_or_zero(struct bm_vctx *v, const struct bm_ynode *n, json_t *val);
/* List of objects whose "name" must be unique. */
void bm_check_unique_names(struct bm_vctx *v, const struct bm_ynode *n, json_t *val);

#endif
