#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "strmap.h"

#define TOMB ((char *)1)

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

static struct bm_strmap_slot *find(const struct bm_strmap *m, const char *key)
{
	size_t mask, i;

	if (!m->cap)
		return NULL;
	mask = m->cap - 1;
	for (i = hash_str(key) & mask;; i = (i + 1) & mask) {
		struct bm_strmap_slot *s = &m->slots[i];

		if (!s->key)
			return NULL;
		if (s->key != TOMB && !strcmp(s->key, key))
			return s;
	}
}

static int grow(struct bm_strmap *m)
{
	size_t ncap = m->cap ? m->cap * 2 : 64;
	struct bm_strmap_slot *old = m->slots, *ns;
	size_t ocap = m->cap;

	if (m->len * 4 < m->cap) /* mostly tombstones: rehash at same size */
		ncap = m->cap;
	ns = calloc(ncap, sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	m->slots = ns;
	m->cap = ncap;
	m->used = m->len;
	for (size_t i = 0; i < ocap; i++) {
		size_t j;

		if (!old[i].key || old[i].key == TOMB)
			continue;
		for (j = hash_str(old[i].key) & (ncap - 1); ns[j].key; j = (j + 1) & (ncap - 1))
			;
		ns[j] = old[i];
	}
	free(old);
	return 0;
}

int bm_strmap_set(struct bm_strmap *m, const char *key, uint64_t val)
{
	struct bm_strmap_slot *s = find(m, key);
	size_t i, mask;
	char *dup;

	if (s) {
		s->val = val;
		return 0;
	}
	if ((m->used + 1) * 4 >= m->cap * 3) {
		int err = grow(m);

		if (err)
			return err;
	}
	dup = strdup(key);
	if (!dup)
		return -ENOMEM;
	mask = m->cap - 1;
	for (i = hash_str(key) & mask; m->slots[i].key && m->slots[i].key != TOMB; i = (i + 1) & mask)
		;
	if (!m->slots[i].key)
		m->used++;
	m->slots[i].key = dup;
	m->slots[i].val = val;
	m->len++;
	return 0;
}

int bm_strmap_get(const struct bm_strmap *m, const char *key, uint64_t *val)
{
	struct bm_strmap_slot *s = find(m, key);

	if (!s)
		return -ENOENT;
	if (val)
		*val = s->val;
	return 0;
}

int bm_strmap_del(struct bm_strmap *m, const char *key)
{
	struct bm_strmap_slot *s = find(m, key);

	if (!s)
		return -ENOENT;
	free(s->key);
	s->key = TOMB;
	m->len--;
	return 0;
}

int bm_strmap_next(const struct bm_strmap *m, size_t *iter, const char **key, uint64_t *val)
{
	for (; *iter < m->cap; (*iter)++) {
		struct bm_strmap_slot *s = &m->slots[*iter];

		if (s->key && s->key != TOMB) {
			*key = s->key;
			*val = s->val;
			(*iter)++;
			return 1;
		}
	}
	return 0;
}

void bm_strmap_free(struct bm_strmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].key && m->slots[i].key != TOMB)
			free(m->slots[i].key);
	free(m->slots);
	memset(m, 0, sizeof(*m));
}
