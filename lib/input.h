/* Reading resources from what users point `meshctl apply/delete -f` at. */
#ifndef BM_INPUT_H
#define BM_INPUT_H
#include <jansson.h>
#include <stddef.h>
#include "diag.h"

/* Reads every path ("-" = standard input; a directory = its *.yaml, *.yml
 * and *.json files in name order, not recursive) and parses them with
 * bm_resources_parse(flags). Returns 0 with *out = all resources in input
 * order; -EINVAL when anything failed (every problem in errs, *out NULL);
 * -ENOMEM. */
int bm_load_inputs(char *const *paths, size_t npaths, unsigned flags, json_t **out,
		   struct bm_errlist *errs);

/* Whole contents of fd (or the file at path). Returns 0 or -errno. */
int bm_read_fd(int fd, char **buf, size_t *len);
int bm_read_path(const char *path, char **buf, size_t *len);

#endif
