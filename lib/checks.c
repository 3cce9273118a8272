/* Name, host and address checks shared by the kind schemas. */
#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>
#include "schema.h"

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
