/* Name, host and address checks shared by the kind schemas. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <string.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include "duration.h"
#include "schema.h"

/* Istio validateStringMatch: longer regexes are refused (they cost Envoy
 * memory per route). */
#define MAX_REGEX_LEN 1024

static bool label_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

static bool dns_label_n(const char *s, size_t n)
{
	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!label_char(s[i]))
			return false;
	return true;
}

bool bm_is_dns1123_label(const char *s)
{
	return dns_label_n(s, strlen(s));
}

bool bm_is_dns1123_subdomain(const char *s)
{
	size_t len = strlen(s);

	if (!len || len > 253)
		return false;
	for (const char *p = s;;) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);

		if (!dns_label_n(p, n))
			return false;
		if (!dot)
			return true;
		p = dot + 1;
	}
}

bool bm_parse_ipv4(const char *s, uint32_t *addr, int *prefix, bool allow_cidr)
{
	char buf[INET_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	struct in_addr a;

	if (n >= sizeof(buf) || (slash && !allow_cidr))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	/* inet_pton takes only the strict dotted quad (no "010.1", no "1.2"). */
	if (inet_pton(AF_INET, buf, &a) != 1)
		return false;
	if (addr)
		*addr = ntohl(a.s_addr);
	if (prefix)
		*prefix = -1;
	if (slash) {
		const char *p = slash + 1;
		int bits = 0;

		if (!*p || strlen(p) > 2)
			return false;
		for (; *p; p++) {
			if (!isdigit((unsigned char)*p))
				return false;
			bits = bits * 10 + (*p - '0');
		}
		if (bits > 32)
			return false;
		if (prefix)
			*prefix = bits;
	}
	return true;
}

bool bm_looks_ipv6(const char *s)
{
	char buf[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	struct in6_addr a;

	if (n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET6, buf, &a) == 1;
}

void bm_check_dns1123_label(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!bm_is_dns1123_label(json_string_value(val)))
		bm_verr(v, n->line, "\"%.64s\" is not a valid DNS-1123 label (lower case "
			"letters, digits and '-', at most 63, starting and ending "
			"alphanumeric)", json_string_value(val));
}

void bm_check_dns1123_subdomain(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!bm_is_dns1123_subdomain(json_string_value(val)))
		bm_verr(v, n->line, "\"%.64s\" is not a valid DNS-1123 subdomain (lower case "
			"letters, digits, '-' and '.', at most 253)", json_string_value(val));
}

/* Istio host names are matched case-insensitively, so upper case is fine
 * here even though Kubernetes object names must be lower case. */
static bool host_label(const char *s, size_t n)
{
	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-')
			return false;
	return true;
}

void bm_check_host(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *h = json_string_value(val), *p = h;

	/* istio-api §1.4: "*" alone would capture every host in the mesh. */
	if (!strcmp(h, "*")) {
		bm_verr(v, n->line, "\"*\" alone is not allowed; name the host "
			"(a wildcard prefix like \"*.example.com\" is fine)");
		return;
	}
	if (strlen(h) > 255)
		goto bad;
	if (!strncmp(p, "*.", 2))
		p += 2;
	for (;;) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);

		if (!host_label(p, len))
			goto bad;
		if (!dot)
			return;
		p = dot + 1;
	}
bad:
	bm_verr(v, n->line, "\"%.64s\" is not a valid host name (DNS name, "
		"optionally prefixed with \"*.\")", h);
}

void bm_check_export_to(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *s = json_string_value(val);

	if (!strcmp(s, ".") || !strcmp(s, "*") || !strcmp(s, "~") || bm_is_dns1123_label(s))
		return;
	bm_verr(v, n->line, "\"%.64s\" must be \".\", \"*\", \"~\" or a namespace name", s);
}

/* Kubernetes qualified name: [DNS-subdomain "/"] name, where name is at most
 * 63 of [A-Za-z0-9._-] starting and ending alphanumeric. */
static bool qualified_name_part(const char *s, size_t n)
{
	if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]) ||
	    !isalnum((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("-_.", s[i]))
			return false;
	return true;
}

void bm_check_label_key(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *k = n->str, *slash = strchr(k, '/');
	bool ok;

	(void)val;
	if (slash) {
		char prefix[254];
		size_t pl = (size_t)(slash - k);

		ok = pl < sizeof(prefix);
		if (ok) {
			memcpy(prefix, k, pl);
			prefix[pl] = '\0';
			ok = bm_is_dns1123_subdomain(prefix) &&
			     qualified_name_part(slash + 1, strlen(slash + 1));
		}
	} else {
		ok = qualified_name_part(k, strlen(k));
	}
	if (!ok)
		bm_verr(v, n->line, "invalid key (want [prefix/]name: name up to 63 of "
			"[A-Za-z0-9._-], alphanumeric at both ends)");
}

void bm_check_unique_names(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	size_t count = json_array_size(val);

	/* val and n line up index for index: list items that failed to convert
	 * would have raised an error, and checks only run when none did. */
	for (size_t i = 1; i < count && i < n->len; i++) {
		const char *name = json_string_value(json_object_get(json_array_get(val, i), "name"));

		if (!name)
			continue;
		for (size_t j = 0; j < i; j++) {
			const char *other = json_string_value(
				json_object_get(json_array_get(val, j), "name"));

			if (other && !strcmp(name, other)) {
				const struct bm_ynode *nn = bm_ynode_get(n->items[i], "name");
				char suffix[40];

				snprintf(suffix, sizeof(suffix), "[%zu].name", i);
				bm_verr_at(v, nn ? nn->line : n->items[i]->line, suffix,
					   "duplicate name \"%.64s\"", name);
				break;
			}
		}
	}
}

bool bm_is_http_header_name(const char *s, bool lower_only)
{
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (lower_only && c >= 'A' && c <= 'Z')
			return false;
		if (!isalnum(c) && !strchr("!#$%&'*+-.^_`|~", c))
			return false;
	}
	return true;
}

/* Istio's regexes are RE2, which PCRE2 accepts as a superset; compiling
 * here means a route never fails to build in the agent for its regex. */
void bm_check_regex(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *re = json_string_value(val);
	size_t len = json_string_length(val);
	PCRE2_UCHAR msg[256];
	PCRE2_SIZE off;
	pcre2_code *code;
	int err;

	if (len > MAX_REGEX_LEN) {
		bm_verr(v, n->line, "regex is %zu characters long, at most %d are allowed", len,
			MAX_REGEX_LEN);
		return;
	}
	code = pcre2_compile((PCRE2_SPTR)re, len, PCRE2_UTF, &err, &off, NULL);
	if (code) {
		pcre2_code_free(code);
		return;
	}
	if (pcre2_get_error_message(err, msg, sizeof(msg)) < 0)
		snprintf((char *)msg, sizeof(msg), "error %d", err);
	bm_verr(v, n->line, "invalid regular expression \"%.64s\": %s at offset %zu", re,
		(const char *)msg, (size_t)off);
}

void bm_check_duration_or_zero(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *s = json_string_value(val);
	uint64_t ns, ms;
	int r;

	if (!bm_duration_parse_ns(s, &ns) && ns == 0)
		return;
	r = bm_duration_ms(s, &ms);
	if (r == -ERANGE)
		bm_verr(v, n->line, "must be 0s (disabled) or at least 1ms and a whole number of "
			"milliseconds");
	else if (r)
		bm_verr(v, n->line, "invalid duration \"%.64s\" (e.g. \"10s\", \"1.5s\", "
			"\"100ms\")", s);
}
