/*
 * meshctl check: can this host run bpfmesh? One line per requirement, each
 * failure with what to do about it (like `linkerd check`).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <yaml.h>
#include "cli.h"

#define MIN_KERNEL_MAJOR 5
#define MIN_KERNEL_MINOR 18 /* bpf_set_retval() in cgroup hooks */

struct check_ctx {
	int json, failed, warned;
	json_t *rows;
};

static void report(struct check_ctx *c, const char *status, const char *what, const char *hint)
{
	if (!strcmp(status, "fail"))
		c->failed++;
	if (!strcmp(status, "warn"))
		c->warned++;
	if (c->json) {
		json_array_append_new(c->rows, json_pack("{s:s,s:s,s:s}", "check", what, "status", status,
							 "hint", hint ? hint : ""));
		return;
	}
	printf("%s %s\n", !strcmp(status, "ok") ? "\u221a" : !strcmp(status, "warn") ? "\u203c" : "\u00d7",
	       what);
	if (hint && *hint && strcmp(status, "ok"))
		printf("    see: %s\n", hint);
}

static void check_kernel(struct check_ctx *c)
{
	struct utsname u;
	int maj = 0, min = 0;
	char what[256];

	uname(&u);
	sscanf(u.release, "%d.%d", &maj, &min);
	snprintf(what, sizeof(what), "kernel %s is at least %d.%d", u.release, MIN_KERNEL_MAJOR,
		 MIN_KERNEL_MINOR);
	report(c, maj > MIN_KERNEL_MAJOR || (maj == MIN_KERNEL_MAJOR && min >= MIN_KERNEL_MINOR) ? "ok" : "fail",
	       what, "upgrade the kernel: connect4 refuses over-limit connections with bpf_set_retval()");
	report(c, access("/sys/kernel/btf/vmlinux", R_OK) ? "fail" : "ok",
	       "kernel BTF at /sys/kernel/btf/vmlinux (CO-RE)",
	       "a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed");
}

/* libbpf's probes answer 1 (supported), 0 (not) or -errno (could not tell). */
static void report_probe(struct check_ctx *c, int r, const char *kind, const char *name,
			 const char *missing)
{
	char what[128];

	snprintf(what, sizeof(what), "%s %s", kind, name);
	report(c, r == 1 ? "ok" : "fail", what, r < 0 ? strerror(-r) : missing);
}

static void check_prog(struct check_ctx *c, enum bpf_prog_type t, const char *name)
{
	report_probe(c, libbpf_probe_bpf_prog_type(t, NULL), "BPF program type", name,
		     "not supported by this kernel");
}

static void check_map(struct check_ctx *c, enum bpf_map_type t, const char *name)
{
	report_probe(c, libbpf_probe_bpf_map_type(t, NULL), "BPF map type", name,
		     "not supported by this kernel");
}

static void check_helper(struct check_ctx *c, enum bpf_prog_type t, enum bpf_func_id f,
			 const char *name)
{
	report_probe(c, libbpf_probe_bpf_helper(t, f, NULL), "BPF helper", name,
		     "not available to the program type");
}

static void check_mounts(struct check_ctx *c)
{
	FILE *f = fopen("/proc/self/mounts", "r");
	char line[8192], cg2[4096] = "", what[4200];
	struct statfs st;

	while (f && fgets(line, sizeof(line), f)) {
		char dev[256], mnt[4096], type[64];

		if (sscanf(line, "%255s %4095s %63s", dev, mnt, type) == 3 && !strcmp(type, "cgroup2") && !cg2[0])
			snprintf(cg2, sizeof(cg2), "%s", mnt);
	}
	if (f)
		fclose(f);
	snprintf(what, sizeof(what), "cgroup v2 mounted%s%s", cg2[0] ? " at " : "", cg2);
	report(c, cg2[0] ? "ok" : "fail", what,
	       "mount it: mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd.unified_cgroup_hierarchy=1)");
	if (!statfs("/sys/fs/bpf", &st) && st.f_type == BPF_FS_MAGIC)
		report(c, "ok", "bpffs mounted at /sys/fs/bpf", NULL);
	else if (geteuid() == 0)
		report(c, "ok", "bpffs not mounted at /sys/fs/bpf; meshd mounts it at start", NULL);
	else
		report(c, "fail", "bpffs not mounted at /sys/fs/bpf",
		       "mount -t bpf bpf /sys/fs/bpf (as root), or run meshd as root");
}

static void check_caps(struct check_ctx *c)
{
	static const struct { int bit; const char *name; } caps[] = {
		{ 39, "CAP_BPF" }, { 12, "CAP_NET_ADMIN" }, { 21, "CAP_SYS_ADMIN" }, { 38, "CAP_PERFMON" },
	};
	FILE *f = fopen("/proc/self/status", "r");
	unsigned long long eff = 0;
	char line[256], what[128];

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			break;
	if (f)
		fclose(f);
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		snprintf(what, sizeof(what), "capability %s", caps[i].name);
		report(c, eff & (1ULL << caps[i].bit) ? "ok" : "fail", what,
		       "run meshd as root or grant it (DaemonSet securityContext.capabilities.add)");
	}
}

static void check_libs(struct check_ctx *c)
{
	char what[256];

	snprintf(what, sizeof(what), "libbpf %u.%u", libbpf_major_version(), libbpf_minor_version());
	report(c, libbpf_major_version() >= 1 ? "ok" : "fail", what, "install libbpf >= 1.0 (scripts/deps.sh)");
	snprintf(what, sizeof(what), "%s", OpenSSL_version(OPENSSL_VERSION));
	report(c, OpenSSL_version_num() >= 0x30000000L ? "ok" : "fail", what, "OpenSSL 3 is required");
	snprintf(what, sizeof(what), "jansson %s, libyaml %s", jansson_version_str(), yaml_get_version_string());
	report(c, "ok", what, NULL);
}

static void check_ktls(struct check_ctx *c)
{
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");
	char ulp[256] = "";

	if (f) {
		if (!fgets(ulp, sizeof(ulp), f))
			ulp[0] = 0;
		fclose(f);
	}
	if (strstr(ulp, "tls"))
		report(c, "ok", "kernel TLS (kTLS) available", NULL);
	else
		report(c, "warn", "kernel TLS (kTLS) not available: mTLS runs in user space (OpenSSL)",
		       "optional; CONFIG_TLS enables kTLS offload");
}

int do_check(int argc, char **argv)
{
	struct check_ctx c = { 0 };

	for (int i = 1; i < argc; i++) {
		if ((!strcmp(argv[i], "-o") && i + 1 < argc && !strcmp(argv[i + 1], "json")) ||
		    !strcmp(argv[i], "-j") || !strcmp(argv[i], "--json"))
			c.json = 1;
	}
	c.rows = json_array();
	libbpf_set_print(NULL);
	check_kernel(&c);
	check_prog(&c, BPF_PROG_TYPE_CGROUP_SOCK_ADDR, "cgroup_sock_addr (connect4, getpeername4)");
	check_prog(&c, BPF_PROG_TYPE_SOCK_OPS, "sock_ops");
	check_prog(&c, BPF_PROG_TYPE_CGROUP_SOCK, "cgroup_sock (sock_release)");
	check_prog(&c, BPF_PROG_TYPE_SK_LOOKUP, "sk_lookup (inbound capture)");
	check_prog(&c, BPF_PROG_TYPE_SCHED_CLS, "sched_cls (tc)");
	check_prog(&c, BPF_PROG_TYPE_SK_MSG, "sk_msg");
	check_map(&c, BPF_MAP_TYPE_HASH, "hash");
	check_map(&c, BPF_MAP_TYPE_ARRAY, "array");
	check_map(&c, BPF_MAP_TYPE_PERCPU_HASH, "percpu_hash");
	check_map(&c, BPF_MAP_TYPE_PERCPU_ARRAY, "percpu_array");
	check_map(&c, BPF_MAP_TYPE_SK_STORAGE, "sk_storage");
	check_map(&c, BPF_MAP_TYPE_SOCKHASH, "sockhash");
	check_map(&c, BPF_MAP_TYPE_SOCKMAP, "sockmap");
	check_helper(&c, BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_set_retval, "bpf_set_retval (connect4)");
	check_helper(&c, BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_sk_storage_get,
		     "bpf_sk_storage_get (connect4)");
	check_mounts(&c);
	check_caps(&c);
	check_libs(&c);
	check_ktls(&c);
	if (c.json) {
		char *s;
		json_t *o = json_pack("{s:b,s:i,s:i,s:o}", "ok", c.failed == 0, "failed", c.failed,
				      "warnings", c.warned, "checks", c.rows);

		s = json_dumps(o, JSON_INDENT(2));
		puts(s ? s : "{}");
		free(s);
		json_decref(o);
	} else {
		printf("\nStatus check results are %s\n", c.failed ? "\u00d7 (see the hints above)" : "\u221a");
		json_decref(c.rows);
	}
	return c.failed ? 1 : 0;
}
