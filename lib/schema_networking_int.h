/* Internal to schema_networking.c, schema_virtualservice.c and
 * schema_httproute.c, the networking.istio.io schemas: the field macros and
 * the tables they share. Nothing else includes this; the validator has
 * schema.h. */
#ifndef BM_SCHEMA_NETWORKING_INT_H
#define BM_SCHEMA_NETWORKING_INT_H
#include "schema.h"

/* An Istio field that we refuse until it is implemented. */
#define LATER(n) { .name = (n), .type = BM_T_NONE, .flags = BM_F_UNSUPPORTED }
#define LABELS(n) { .name = (n), .type = BM_T_MAP, .elem = &bm_label_value, \
		    .key_check = bm_check_label_key }
#define PORT_RANGE .flags = BM_F_RANGE, .min = 1, .max = 65535

/* schema_networking.c */
extern const struct bm_field net_host_elem;
extern const struct bm_field net_export_to_elem;
extern const struct bm_field net_ipv4_or_cidr_elem;

/* schema_virtualservice.c */
extern const struct bm_field net_destination[];
extern const struct bm_field net_headers[];
extern const struct bm_field net_http_route_destination_elem;
extern const struct bm_field net_http_match_elem;
void net_check_weights(struct bm_vctx *v, const struct bm_ynode *n, json_t *val);

#define DESTINATION { .name = "destination", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED, \
		      .fields = net_destination }
#define HEADERS { .name = "headers", .type = BM_T_OBJECT, .fields = net_headers }

/* schema_httproute.c */
extern const struct bm_field net_http_route_elem;

#endif
