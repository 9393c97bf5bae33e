/* ip-collect - per-session activity samples as JSON lines. */
#define _GNU_SOURCE
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "collect.h"
#include "record.h"
#include "sources.h"

enum {
	OPT_DOMAIN = 256, OPT_MAP, OPT_HOST, OPT_LIBVIRT, OPT_FORMAT, OPT_START, OPT_MAX_JUMP,
	OPT_PROM, OPT_METRIC, OPT_EVDEV, OPT_GPU, OPT_SESSION, OPT_NO_EMPTY,
};

static const struct ipk_opt opts[] = {
	{ "interval", required_argument, 'i', "SECONDS", "length of one sample interval (default 1)" },
	{ "count", required_argument, 'n', "N", "stop after N intervals" },
	{ "duration", required_argument, 'd', "SECONDS", "stop after SECONDS of stream time" },
	{ "connect", required_argument, 'c', "URI", "collect libvirt domain stats over URI (repeatable)" },
	{ "libvirt", no_argument, OPT_LIBVIRT, NULL, "collect libvirt domain stats over the default URI (LIBVIRT_DEFAULT_URI)" },
	{ "domain", required_argument, OPT_DOMAIN, "NAME", "only this libvirt domain (repeatable)" },
	{ "map", required_argument, OPT_MAP, "NAME=SESSION", "domain, device or GPU NAME is session SESSION (repeatable)" },
	{ "host", required_argument, OPT_HOST, "NAME", "host name written in libvirt samples (default: from the URI)" },
	{ "replay", required_argument, 'r', "[SESSION=]PATH", "replay a Balabit CSV file or folder, or sample records (- for stdin)" },
	{ "format", required_argument, OPT_FORMAT, "FMT", "replay format: auto, balabit or samples (default auto)" },
	{ "speed", required_argument, 's', "N", "replay pace: 1 real time, N times faster, 0 as fast as possible" },
	{ "start", required_argument, OPT_START, "TS", "Unix time of the stream's start (default now)" },
	{ "max-jump", required_argument, OPT_MAX_JUMP, "SECONDS", "treat larger forward time jumps in a trace as defects (default 3600)" },
	{ "prometheus", required_argument, OPT_PROM, "URL", "scrape a Prometheus text endpoint each interval (repeatable)" },
	{ "metric", required_argument, OPT_METRIC, "SPEC", "METRIC[{label=\"v\"}]=FIELD[@LABEL][*SCALE][:rate] (repeatable)" },
	{ "evdev", required_argument, OPT_EVDEV, "DEVICE[=SESSION]", "count input events from a Linux input device (repeatable)" },
	{ "gpu", no_argument, OPT_GPU, NULL, "GPU utilisation and memory through NVML" },
	{ "session", required_argument, OPT_SESSION, "NAME", "session of input, GPU and unlabelled metrics (default: the host name)" },
	{ "no-empty", no_argument, OPT_NO_EMPTY, NULL, "skip samples that carry no field" },
	{ NULL, 0, 0, NULL, NULL },
};

static const struct ipk_prog prog = {
	.name = "ip-collect",
	.synopsis = "[OPTION]...",
	.summary = "Emit per-session activity samples (JSON lines) from libvirt, replayed traces, Prometheus, input devices and GPUs.",
	.opts = opts,
};

static volatile int stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void diag_to_cli(void *arg, int level, const char *msg)
{
	const struct ipk_cli *cli = arg;
	if (level == 0)
		ipk_warn(cli, "%s", msg);
	else if (level == 1)
		ipk_info(cli, "%s", msg);
	else
		ipk_debug(cli, "%s", msg);
}

/* Growable arrays of option values; they point into argv or the config. */
struct strlist {
	const char **v;
	int n;
};

static int strlist_add(struct strlist *l, const char *s)
{
	const char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
	if (!v)
		return -1;
	v[l->n++] = s;
	l->v = v;
	return 0;
}

/* "NAME=VALUE" into a map entry (the string is duplicated into *own). */
static int split_pair(const char *s, char **own, const char **key, const char **val)
{
	*own = strdup(s);
	if (!*own)
		return -1;
	char *eq = strchr(*own, '=');
	if (!eq || eq == *own || !eq[1])
		return -1;
	*eq = '\0';
	*key = *own;
	*val = eq + 1;
	return 0;
}

/* A --replay argument's "=" when it is SESSION=PATH (an "=" inside the
 * path, after a "/", is the path's), else NULL. */
static const char *replay_session_eq(const char *arg)
{
	const char *eq = strchr(arg, '='), *slash = strchr(arg, '/');
	return eq && eq != arg && (!slash || slash > eq) ? eq : NULL;
}

static int add_source(struct ipk_source ***v, int *n, struct ipk_source *s)
{
	struct ipk_source **nv = realloc(*v, (*n + 1) * sizeof(*nv));
	if (!nv)
		return -1;
	nv[(*n)++] = s;
	*v = nv;
	return 0;
}

static int cmd_collect(int argc, char **argv)
{
	struct ipk_cli cli;
	struct ipk_collect_opts copts = { .interval = 1, .speed = 1, .emit_empty = 1 };
	struct strlist uris = { 0 }, domains = { 0 }, replays = { 0 }, proms = { 0 }, metrics = { 0 },
		       evdevs = { 0 };
	struct ipk_cli_pairs maps = { 0 };
	const char *host = NULL, *session = NULL;
	enum ipk_replay_format format = IPK_REPLAY_AUTO;
	double max_jump = 3600;
	int use_default_libvirt = 0, use_gpu = 0, speed_set = 0;
	struct ipk_source **src = NULL;
	int nsrc = 0, status = IPK_EXIT_OK;
	struct ipk_session_map *map = NULL;
	char **owned = NULL;
	int nowned = 0;
	struct ipk_err err = { 0 };
	struct ipk_writer out;

	if (ipk_cli_init(&cli, &prog, argc, argv) < 0) {
		status = ipk_fail(&cli, &cli.err);
		goto done;
	}
	int c;
	long lv;
	while ((c = ipk_cli_next(&cli)) >= 0) {
		const char *a = cli.optarg;
		int bad = 0;
		switch (c) {
		case 'i':
			bad = ipk_parse_double(&cli, "interval", a, 0.01, 86400, &copts.interval);
			break;
		case 'n':
			bad = ipk_parse_long(&cli, "count", a, 1, 1L << 40, &lv);
			copts.count = lv;
			break;
		case 'd':
			bad = ipk_parse_double(&cli, "duration", a, 0.001, 1e9, &copts.duration);
			break;
		case 'c':
			bad = strlist_add(&uris, a);
			break;
		case OPT_LIBVIRT:
			use_default_libvirt = 1;
			break;
		case OPT_DOMAIN:
			bad = strlist_add(&domains, a);
			break;
		case OPT_MAP:
			bad = ipk_cli_pair_add(&cli, &maps, "map", "NAME=SESSION");
			break;
		case OPT_HOST:
			host = a;
			break;
		case 'r':
			bad = strlist_add(&replays, a);
			break;
		case OPT_FORMAT:
			if (!strcmp(a, "auto"))
				format = IPK_REPLAY_AUTO;
			else if (!strcmp(a, "balabit"))
				format = IPK_REPLAY_BALABIT;
			else if (!strcmp(a, "samples"))
				format = IPK_REPLAY_SAMPLES;
			else
				bad = ipk_cli_usage_error(&cli, "invalid --format '%s' (auto, balabit or samples)", a);
			break;
		case 's':
			bad = ipk_parse_double(&cli, "speed", a, 0, 1e9, &copts.speed);
			speed_set = 1;
			break;
		case OPT_START:
			bad = ipk_parse_double(&cli, "start", a, 0, 1e11, &copts.start_ts);
			break;
		case OPT_MAX_JUMP:
			bad = ipk_parse_double(&cli, "max-jump", a, 1, 1e9, &max_jump);
			break;
		case OPT_PROM:
			bad = strlist_add(&proms, a);
			break;
		case OPT_METRIC:
			bad = strlist_add(&metrics, a);
			break;
		case OPT_EVDEV:
			bad = strlist_add(&evdevs, a);
			break;
		case OPT_GPU:
			use_gpu = 1;
			break;
		case OPT_SESSION:
			session = a;
			break;
		case OPT_NO_EMPTY:
			copts.emit_empty = 0;
			break;
		}
		if (bad) {
			status = cli.status ? cli.status : IPK_EXIT_OSERR;
			goto done;
		}
	}
	if (c == IPK_CLI_EXIT) {
		status = cli.status;
		goto done;
	}
	if (cli.optind < argc) {
		status = (ipk_cli_usage_error(&cli, "unexpected argument '%s'", argv[cli.optind]), IPK_EXIT_USAGE);
		goto done;
	}
	if (!uris.n && !use_default_libvirt && !replays.n && !proms.n && !evdevs.n && !use_gpu) {
		status = (ipk_cli_usage_error(&cli, "no source: give --connect, --libvirt, --replay, --prometheus, --evdev or --gpu"),
			  IPK_EXIT_USAGE);
		goto done;
	}
	if (metrics.n && !proms.n) {
		status = (ipk_cli_usage_error(&cli, "--metric needs --prometheus"), IPK_EXIT_USAGE);
		goto done;
	}
	if (speed_set && copts.speed != 1 && (uris.n || use_default_libvirt || proms.n || evdevs.n || use_gpu)) {
		status = (ipk_cli_usage_error(&cli, "--speed other than 1 works only with --replay sources alone"), IPK_EXIT_USAGE);
		goto done;
	}

	map = calloc(maps.n + 1, sizeof(*map));
	owned = calloc(maps.n + evdevs.n + replays.n + 1, sizeof(*owned));
	if (!map || !owned) {
		status = IPK_EXIT_OSERR;
		goto done;
	}
	for (int i = 0; i < maps.n; i++)
		if (split_pair(maps.arg[i], &owned[nowned++], &map[i].key, &map[i].session) < 0) {
			status = IPK_EXIT_OSERR;
			goto done;
		}

	signal(SIGPIPE, SIG_IGN);
	ipk_writer_init(&out, stdout);
	struct ipk_diag diag = { diag_to_cli, &cli };

	struct ipk_source *s;
	for (int i = 0; i < uris.n + use_default_libvirt; i++) {
		struct ipk_libvirt_opts lo = {
			.uri = i < uris.n ? uris.v[i] : NULL,
			.domains = domains.v, .ndomains = domains.n,
			.map = map, .nmap = maps.n, .host = host,
		};
		if (!(s = ipk_source_libvirt_new(&lo, &err)) || add_source(&src, &nsrc, s) < 0)
			goto fail;
	}
	/* standard input can be read once (checked before any source reads it) */
	int stdin_replays = 0;
	for (int i = 0; i < replays.n; i++) {
		const char *eq = replay_session_eq(replays.v[i]);
		stdin_replays += !strcmp(eq ? eq + 1 : replays.v[i], "-");
	}
	if (stdin_replays > 1) {
		status = (ipk_cli_usage_error(&cli, "--replay: standard input (-) given more than once"), IPK_EXIT_USAGE);
		goto done;
	}
	for (int i = 0; i < replays.n; i++) {
		struct ipk_replay_opts ro = { .path = replays.v[i], .format = format, .max_jump = max_jump,
					      .strict = cli.strict, .passthrough = &out };
		if (replay_session_eq(replays.v[i])) {
			if (split_pair(replays.v[i], &owned[nowned++], &ro.session, &ro.path) < 0) {
				status = (ipk_cli_usage_error(&cli, "invalid --replay '%s'", replays.v[i]), IPK_EXIT_USAGE);
				goto done;
			}
		}
		if (!(s = ipk_source_replay_new(&ro, &err)) || add_source(&src, &nsrc, s) < 0)
			goto fail;
	}
	for (int i = 0; i < proms.n; i++) {
		struct ipk_prom_opts po = { .url = proms.v[i], .map = metrics.v, .nmap = metrics.n, .session = session,
					    .timeout = copts.interval };
		if (!(s = ipk_source_prom_new(&po, &err)) || add_source(&src, &nsrc, s) < 0)
			goto fail;
	}
	for (int i = 0; i < evdevs.n; i++) {
		struct ipk_evdev_opts eo = { .path = evdevs.v[i], .session = session };
		const char *eq = strchr(evdevs.v[i], '=');
		if (eq && split_pair(evdevs.v[i], &owned[nowned++], &eo.path, &eo.session) < 0) {
			status = (ipk_cli_usage_error(&cli, "invalid --evdev '%s'", evdevs.v[i]), IPK_EXIT_USAGE);
			goto done;
		}
		if (!(s = ipk_source_evdev_new(&eo, &err)) || add_source(&src, &nsrc, s) < 0)
			goto fail;
	}
	if (use_gpu) {
		struct ipk_nvml_opts no = { .map = map, .nmap = maps.n, .session = session };
		if ((s = ipk_source_nvml_new(&no, &err))) {
			if (add_source(&src, &nsrc, s) < 0)
				goto fail;
		} else if (err.code == IPK_EXIT_UNAVAILABLE && nsrc > 0) {
			/* Other sources go on; GPU fields are absent, never zero. */
			ipk_warn(&cli, "%s", err.msg);
			ipk_info(&cli, "--gpu falls back to no GPU data: fields gpu and gpu_mem_bytes are omitted");
			err = (struct ipk_err){ 0 };
		} else {
			goto fail;
		}
	}

	if (!speed_set && replays.n && nsrc == replays.n)
		ipk_info(&cli, "replaying at recorded pace (--speed 1); --speed 0 replays as fast as possible");
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (ipk_collect_run(src, nsrc, &copts, &out, &diag, &stop_flag, &err) < 0 && !ipk_writer_closed(&out))
		goto fail;
	if (!ipk_writer_closed(&out) && ipk_writer_finish(&out, &err) < 0 && !ipk_writer_closed(&out))
		goto fail;
	goto done;
fail:
	if (!err.code)
		ipk_err_set(&err, IPK_EXIT_OSERR, "out of memory");
	status = ipk_fail(&cli, &err);
done:
	for (int i = 0; i < nsrc; i++)
		ipk_source_free(src[i]);
	for (int i = 0; i < nowned; i++)
		free(owned[i]);
	free(owned);
	free(src);
	free(map);
	free(uris.v);
	free(domains.v);
	ipk_cli_pairs_free(&maps);
	free(replays.v);
	free(proms.v);
	free(metrics.v);
	free(evdevs.v);
	ipk_cli_free(&cli);
	return status;
}

int main(int argc, char **argv)
{
	return cmd_collect(argc, argv);
}
