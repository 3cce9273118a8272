/* libFuzzer entry for what the metrics endpoint (agent/prom.c) reads from a
 * scraper: the request's header block, for Accept-Encoding. The input is
 * handed over as an exact-size NUL-terminated heap copy (what read_request
 * gives serve_one), so ASan sees any read past it. The answer must be 0 or
 * 1. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "prom.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *req = malloc(size + 1);
	int a;

	if (!req)
		return 0;
	memcpy(req, data, size);
	req[size] = 0;
	a = bm_http_accepts_gzip(req);
	if (a != 0 && a != 1)
		abort();
	free(req);
	return 0;
}
