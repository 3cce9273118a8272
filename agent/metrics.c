/* Placeholder until the metrics exporter lands: serves nothing. */
#include "agent.h"
#include "metrics.h"

int bm_metrics_start(struct bm_agent *a, const char *addr)
{
	return 0;
}

int bm_metrics_render(struct bm_agent *a, FILE *f)
{
	return 0;
}
