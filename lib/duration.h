/* Istio / protobuf duration strings. */
#ifndef BM_DURATION_H
#define BM_DURATION_H
#include <stdint.h>

/* Parses "10s", "1.5s", "100ms", "2m", "1h", "1h30m", "0.001s", "250us",
 * "10ns" (Go time.ParseDuration syntax, which covers protobuf JSON "<n>s").
 * Returns 0, -EINVAL on bad syntax or a negative value, -ERANGE on overflow. */
int bm_duration_parse_ns(const char *s, uint64_t *ns);

/* The validation rule Istio applies to duration fields (istio-api §0,
 * ValidateDuration): at least 1 ms and a whole number of milliseconds.
 * Returns 0 with *ms set, -EINVAL on bad syntax, -ERANGE when the rule is
 * broken ("0s", "1.5ms", "100us") or the value overflows. */
int bm_duration_ms(const char *s, uint64_t *ms);

#endif
