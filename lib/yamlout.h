/* JSON values printed as YAML (for `meshctl get -o yaml`). */
#ifndef BM_YAMLOUT_H
#define BM_YAMLOUT_H
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

/* Writes v as one block-style YAML document. Strings that a YAML 1.1 reader
 * (kubectl, PyYAML, go-yaml) would take as another type ("true", "10",
 * "1e3", "null", "", timestamps...) are double-quoted. Returns 0, -EIO or
 * -ENOMEM. */
int bm_yaml_dump(const json_t *v, FILE *f);
/* Same into a malloc'ed NUL-terminated string; NULL with errno on failure. */
char *bm_yaml_dumps(const json_t *v);
/* Would this plain scalar be read as something other than a string? */
bool bm_yaml_needs_quotes(const char *s, size_t len);

#endif
