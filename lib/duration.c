/* Duration parsing: see duration.h. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include "duration.h"

static const struct unit {
	const char *name;
	uint64_t ns;
} units[] = {
	/* Longest first so "ms" is not read as "m" followed by garbage. */
	{ "ns", 1 },
	{ "us", 1000 },
	{ "\xc2\xb5s", 1000 }, /* U+00B5 micro sign, as Go accepts */
	{ "\xce\xbcs", 1000 }, /* U+03BC greek mu */
	{ "ms", 1000000 },
	{ "s", 1000000000ULL },
	{ "m", 60ULL * 1000000000ULL },
	{ "h", 3600ULL * 1000000000ULL },
};

static const struct unit *match_unit(const char *p, size_t *len)
{
	const struct unit *best = NULL;
	size_t best_len = 0;

	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		size_t l = strlen(units[i].name);

		if (l > best_len && !strncmp(p, units[i].name, l)) {
			best = &units[i];
			best_len = l;
		}
	}
	*len = best_len;
	return best;
}

int bm_duration_parse_ns(const char *s, uint64_t *ns)
{
	uint64_t total = 0;
	const char *p = s;

	if (!s || !*s)
		return -EINVAL;
	if (*p == '+')
		p++;
	/* "0" alone is Go's spelling of zero; nothing else may omit a unit. */
	if (!strcmp(p, "0")) {
		*ns = 0;
		return 0;
	}
	if (!*p)
		return -EINVAL;
	while (*p) {
		uint64_t whole = 0, frac = 0, scale = 1, part;
		bool digits = false;
		const struct unit *u;
		size_t ulen;

		for (; *p >= '0' && *p <= '9'; p++, digits = true) {
			if (whole > (UINT64_MAX - 9) / 10)
				return -ERANGE;
			whole = whole * 10 + (uint64_t)(*p - '0');
		}
		if (*p == '.') {
			p++;
			for (; *p >= '0' && *p <= '9'; p++, digits = true) {
				/* Digits past nanosecond precision of any unit
				 * cannot change the result; drop them. */
				if (scale < 100000000000000000ULL) {
					frac = frac * 10 + (uint64_t)(*p - '0');
					scale *= 10;
				}
			}
		}
		if (!digits)
			return -EINVAL;
		u = match_unit(p, &ulen);
		if (!u)
			return -EINVAL;
		p += ulen;
		if (whole > UINT64_MAX / u->ns)
			return -ERANGE;
		part = whole * u->ns;
		/* frac/scale of a unit, computed without overflowing: the unit
		 * is at most 3.6e12 ns and frac < scale <= 1e17. */
		{
			unsigned __int128 f = (unsigned __int128)frac * u->ns / scale;

			if (part > UINT64_MAX - (uint64_t)f)
				return -ERANGE;
			part += (uint64_t)f;
		}
		if (total > UINT64_MAX - part)
			return -ERANGE;
		total += part;
	}
	*ns = total;
	return 0;
}

int bm_duration_ms(const char *s, uint64_t *ms)
{
	uint64_t ns;
	int r = bm_duration_parse_ns(s, &ns);

	if (r)
		return r;
	if (ns < 1000000 || ns % 1000000)
		return -ERANGE;
	*ms = ns / 1000000;
	return 0;
}
