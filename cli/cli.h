/* meshctl: one do_<verb>() per file, dispatched from the table in main.c. */
#ifndef BM_CLI_H
#define BM_CLI_H

/* Each returns the process exit code: 0 ok, 1 failure, 2 usage error.
 * argv[0] is the verb itself (getopt-style parsing starts at argv[1]). */
int do_apply(int argc, char **argv);   /* cli/apply.c  */
int do_get(int argc, char **argv);     /* cli/get.c    */
int do_delete(int argc, char **argv);  /* cli/delete.c */
int do_check(int argc, char **argv);   /* cli/check.c  */
int do_status(int argc, char **argv);  /* cli/node.c: meshd status per node */
int do_backend(int argc, char **argv); /* cli/node.c: eject / uneject a backend */
int do_pod(int argc, char **argv);     /* cli/node.c: enrol / remove a pod */
int do_stats(int argc, char **argv);   /* cli/node.c: raw kernel counters */
int do_metrics(int argc, char **argv); /* cli/metrics.c: a node's Prometheus metrics */
int do_cert(int argc, char **argv);    /* cli/cert.c: workload certificates per node */
int do_ca(int argc, char **argv);      /* cli/cert.c: the mesh CA */
int do_stat(int argc, char **argv);    /* cli/stat.c: golden signals per service / workload */

/* The store URL: --store flag, else $BPFMESH_STORE, else file:///var/lib/bpfmesh. */
const char *cli_store_url(const char *flag);

#endif
