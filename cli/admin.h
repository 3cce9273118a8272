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

/* Flags shared by verbs that talk to node agents: --node NODE, -o json|table|wide,
 * -j. Positional arguments may come before or after them; *first_pos gets the
 * index of the first one after getopt's permutation. -1 on a bad flag. */
struct cli_node_opts {
	const char *node;
	int json;
};
int cli_parse_node_opts(int argc, char **argv, struct cli_node_opts *o, int *first_pos);
/* One request to every selected node: {"nodes":[reply + "node", ...]}. A node
 * that cannot be reached still gets an entry, so -o json always shows every
 * node and why it is missing; *failures counts those and the not-ok replies. */
json_t *cli_ask_nodes(const char *only, json_t *req, int *failures);
void cli_print_json(json_t *j);

#endif
