/* Talking to node agents over their admin sockets. */
#ifndef BM_CLI_ADMIN_H
#define BM_CLI_ADMIN_H
#include <jansson.h>

struct cli_node {
	char name[256];
	char sock[4400];
};

/* Nodes found as $BPFMESH_RUN/NAME/admin.sock; only NAME when only != NULL.
 * Returns how many (0 with a message on stderr when none). */
int cli_nodes(const char *only, struct cli_node **out);
/* One request, one reply; NULL and errno set on failure. */
json_t *cli_admin_call(const char *sock, json_t *req);

#endif
