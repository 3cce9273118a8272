/* Placeholder until the metrics exporter lands. */
#include <stdio.h>
#include "cli.h"

int do_metrics(int argc, char **argv)
{
	fprintf(stderr, "meshctl metrics: not implemented yet\n");
	return 1;
}
