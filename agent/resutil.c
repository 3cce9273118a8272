#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "resutil.h"

int bm_labels_match(const json_t *selector, const json_t *labels)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)selector, k, v) {
		const char *have = json_string_value(json_object_get(labels, k));

		if (!have || !json_string_value(v) || strcmp(have, json_string_value(v)))
			return 0;
	}
	return 1;
}

int bm_cidr_contains(const char *cidr, uint32_t ip)
{
	char buf[64];
	char *slash;
	struct in_addr a;
	int bits = 32;
	uint32_t mask;

	snprintf(buf, sizeof(buf), "%s", cidr);
	slash = strchr(buf, '/');
	if (slash) {
		bits = atoi(slash + 1);
		*slash = 0;
	}
	if (inet_pton(AF_INET, buf, &a) != 1 || bits < 0 || bits > 32)
		return 0;
	mask = bits ? htonl(~0u << (32 - bits)) : 0;
	return (a.s_addr & mask) == (ip & mask);
}

const json_t *bm_find_workload_entry(const json_t *resources, const char *ns, const char *ip)
{
	size_t i;
	json_t *r;

	json_array_foreach(resources, i, r) {
		const json_t *md = json_object_get(r, "metadata"), *spec = json_object_get(r, "spec");
		const char *rns = json_string_value(json_object_get(md, "namespace"));
		const char *addr = json_string_value(json_object_get(spec, "address"));
		const char *kind = json_string_value(json_object_get(r, "kind"));

		if (!kind || strcmp(kind, "WorkloadEntry") || !addr || strcmp(addr, ip))
			continue;
		if (!ns || !strcmp(rns ? rns : "default", ns))
			return r;
	}
	return NULL;
}

int bm_res_level(const json_t *r, const char *ns, const json_t *labels, const char *root_ns)
{
	const json_t *sel = json_object_get(json_object_get(json_object_get(r, "spec"), "selector"),
					    "matchLabels");
	const char *rns = json_string_value(json_object_get(json_object_get(r, "metadata"), "namespace"));

	if (!rns || !*rns)
		rns = "default";
	if (json_object_size(sel))
		return !strcmp(rns, ns) && bm_labels_match(sel, labels) ? 2 : -1;
	if (!strcmp(rns, ns))
		return 1;
	return !strcmp(rns, root_ns) ? 0 : -1;
}
