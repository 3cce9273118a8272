/* JSON -> YAML with libyaml's emitter: it handles the syntax (which
 * characters force quoting, escaping, indentation); we add the YAML 1.1 type
 * guessing it does not know about. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>
#include "yamlout.h"

bool bm_yaml_needs_quotes(const char *s, size_t len)
{
	static const char *const words[] = {
		"y", "yes", "n", "no", "true", "false", "on", "off", "null", "~",
		".inf", "-.inf", "+.inf", ".nan",
		"<<", /* YAML 1.1 merge key: go-yaml and we treat it specially */
		NULL,
	};

	if (!len)
		return true; /* a plain empty value reads back as null */
	for (const char *const *w = words; *w; w++)
		if (strlen(*w) == len && !strncasecmp(*w, s, len))
			return true;
	/* Anything that starts like a number may be one in some reader
	 * (ints, floats, 0x, 0o, 1_000, sexagesimal 1:30, dates 2024-01-01):
	 * quoting a few extra strings ("10s") costs nothing. */
	if (s[0] >= '0' && s[0] <= '9')
		return true;
	if ((s[0] == '-' || s[0] == '+' || s[0] == '.') && len > 1 &&
	    ((s[1] >= '0' && s[1] <= '9') || s[1] == '.'))
		return true;
	return false;
}

static int emit(yaml_emitter_t *em, yaml_event_t *ev)
{
	return yaml_emitter_emit(em, ev) ? 0 : (em->error == YAML_MEMORY_ERROR ? -ENOMEM : -EIO);
}

static int emit_scalar(yaml_emitter_t *em, const char *s, size_t len, bool quote)
{
	yaml_event_t ev;

	if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)len, !quote,
					  1, quote ? YAML_DOUBLE_QUOTED_SCALAR_STYLE
						   : YAML_ANY_SCALAR_STYLE))
		return -ENOMEM;
	return emit(em, &ev);
}

static int emit_value(yaml_emitter_t *em, const json_t *v, int depth)
{
	yaml_event_t ev;
	char num[64];
	int r = 0;

	/* jansson values cannot be cyclic, but bound the recursion anyway. */
	if (depth > 256)
		return -ELOOP;
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		const char *key;
		json_t *val;

		if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
							 json_object_size(v) ? YAML_BLOCK_MAPPING_STYLE
									     : YAML_FLOW_MAPPING_STYLE))
			return -ENOMEM;
		r = emit(em, &ev);
		json_object_foreach((json_t *)v, key, val) {
			if (r)
				break;
			r = emit_scalar(em, key, strlen(key), bm_yaml_needs_quotes(key, strlen(key)));
			if (!r)
				r = emit_value(em, val, depth + 1);
		}
		if (!r && !yaml_mapping_end_event_initialize(&ev))
			r = -ENOMEM;
		return r ? r : emit(em, &ev);
	}
	case JSON_ARRAY: {
		size_t i;
		json_t *val;

		if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
							  json_array_size(v) ? YAML_BLOCK_SEQUENCE_STYLE
									     : YAML_FLOW_SEQUENCE_STYLE))
			return -ENOMEM;
		r = emit(em, &ev);
		json_array_foreach(v, i, val) {
			if (r)
				break;
			r = emit_value(em, val, depth + 1);
		}
		if (!r && !yaml_sequence_end_event_initialize(&ev))
			r = -ENOMEM;
		return r ? r : emit(em, &ev);
	}
	case JSON_STRING: {
		const char *s = json_string_value(v);
		size_t len = json_string_length(v);

		bool ctl = false;

		/* Double quotes keep newlines and control characters visible as
		 * escapes instead of libyaml's folded single-quoted form. */
		for (size_t i = 0; i < len && !ctl; i++)
			ctl = (unsigned char)s[i] < 0x20 || s[i] == 0x7f;
		return emit_scalar(em, s, len, ctl || bm_yaml_needs_quotes(s, len));
	}
	case JSON_INTEGER:
		snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return emit_scalar(em, num, strlen(num), false);
	case JSON_REAL: {
		double d = json_real_value(v);

		if (!isfinite(d))
			return emit_scalar(em, "null", 4, false);
		snprintf(num, sizeof(num), "%.17g", d);
		/* Keep it a float when read back: "100" would become an int. */
		if (!strpbrk(num, ".eE"))
			strncat(num, ".0", sizeof(num) - strlen(num) - 1);
		return emit_scalar(em, num, strlen(num), false);
	}
	case JSON_TRUE:
		return emit_scalar(em, "true", 4, false);
	case JSON_FALSE:
		return emit_scalar(em, "false", 5, false);
	case JSON_NULL:
	default:
		return emit_scalar(em, "null", 4, false);
	}
}

static int write_file(void *data, unsigned char *buf, size_t size)
{
	return fwrite(buf, 1, size, data) == size;
}

int bm_yaml_dump(const json_t *v, FILE *f)
{
	yaml_emitter_t em;
	yaml_event_t ev;
	int r = -ENOMEM;

	if (!yaml_emitter_initialize(&em))
		return -ENOMEM;
	yaml_emitter_set_output(&em, write_file, f);
	yaml_emitter_set_unicode(&em, 1);
	/* Never fold long strings: a wrapped host name helps no one. */
	yaml_emitter_set_width(&em, -1);
	yaml_emitter_set_indent(&em, 2);
	if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING))
		goto out;
	r = emit(&em, &ev);
	if (r)
		goto out;
	r = -ENOMEM;
	if (!yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1))
		goto out;
	r = emit(&em, &ev);
	if (!r)
		r = emit_value(&em, v, 0);
	if (!r) {
		r = -ENOMEM;
		if (yaml_document_end_event_initialize(&ev, 1))
			r = emit(&em, &ev);
	}
	if (!r) {
		r = -ENOMEM;
		if (yaml_stream_end_event_initialize(&ev))
			r = emit(&em, &ev);
	}
	if (!r && !yaml_emitter_flush(&em))
		r = -EIO;
out:
	yaml_emitter_delete(&em);
	return r;
}

char *bm_yaml_dumps(const json_t *v)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	int r;

	if (!f)
		return NULL;
	r = bm_yaml_dump(v, f);
	if (fclose(f) && !r)
		r = -EIO;
	if (r) {
		free(buf);
		errno = -r;
		return NULL;
	}
	return buf;
}
