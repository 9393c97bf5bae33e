#define _GNU_SOURCE
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct ipk_opt common_opts[] = {
	{ "verbose", no_argument, 'v', NULL, "more diagnostics on stderr (repeat for more)" },
	{ "quiet", no_argument, 'q', NULL, "no warnings, only errors" },
	{ "strict", no_argument, IPK_OPT_STRICT, NULL, "exit on the first bad input record instead of skipping it" },
	{ "config", required_argument, IPK_OPT_CONFIG, "FILE", "read defaults from FILE (default /etc/ipkit/ipkit.conf)" },
	{ "help", no_argument, IPK_OPT_HELP, NULL, "show this help and exit" },
	{ "version", no_argument, IPK_OPT_VERSION, NULL, "show the version and exit" },
	{ NULL, 0, 0, NULL, NULL },
};

static const struct ipk_opt *find_opt(const struct ipk_prog *prog, const char *name)
{
	for (const struct ipk_opt *o = prog->opts; o && o->name; o++)
		if (strcmp(o->name, name) == 0)
			return o;
	for (const struct ipk_opt *o = common_opts; o->name; o++)
		if (strcmp(o->name, name) == 0)
			return o;
	return NULL;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int is_false(const char *v)
{
	return !strcmp(v, "0") || !strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcasecmp(v, "off");
}

static int is_true(const char *v)
{
	return !strcmp(v, "1") || !strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcasecmp(v, "on");
}

/* Read the config file into cli->conf, keeping only keys for this program. */
static int read_config(struct ipk_cli *cli, const char *path, int must_exist)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		if (!must_exist && errno == ENOENT)
			return 0;
		return ipk_err_set(&cli->err, IPK_EXIT_CONFIG, "cannot open config file '%s': %s", path, strerror(errno));
	}
	char *line = NULL;
	size_t cap = 0;
	int lineno = 0, rc = 0;
	size_t plen = strlen(cli->prog->name);
	while (getline(&line, &cap, f) != -1) {
		lineno++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		char *s = trim(line);
		if (!*s)
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			rc = ipk_err_set(&cli->err, IPK_EXIT_CONFIG, "config file '%s' line %d: expected key = value", path, lineno);
			break;
		}
		*eq = '\0';
		char *key = trim(s), *value = trim(eq + 1);
		int prefixed = 0;
		char *dot = strchr(key, '.');
		if (dot) {
			if ((size_t)(dot - key) != plen || strncmp(key, cli->prog->name, plen) != 0)
				continue; /* another program's key */
			key = dot + 1;
			prefixed = 1;
		}
		const struct ipk_opt *o = find_opt(cli->prog, key);
		if (!o || o->key == IPK_OPT_CONFIG || o->key == IPK_OPT_HELP || o->key == IPK_OPT_VERSION) {
			if (prefixed) {
				rc = ipk_err_set(&cli->err, IPK_EXIT_CONFIG, "config file '%s' line %d: unknown key '%s.%s'",
						 path, lineno, cli->prog->name, key);
				break;
			}
			continue;
		}
		if (o->has_arg == no_argument) {
			if (is_false(value))
				continue;
			if (!is_true(value) && *value) {
				rc = ipk_err_set(&cli->err, IPK_EXIT_CONFIG,
						 "config file '%s' line %d: key '%s' takes yes or no, not '%s'", path, lineno, key, value);
				break;
			}
		} else if (!*value) {
			rc = ipk_err_set(&cli->err, IPK_EXIT_CONFIG, "config file '%s' line %d: key '%s' needs a value", path, lineno, key);
			break;
		}
		struct ipk_conf_entry *n = realloc(cli->conf, (cli->nconf + 1) * sizeof(*n));
		if (!n) {
			rc = ipk_err_set(&cli->err, IPK_EXIT_OSERR, "out of memory");
			break;
		}
		cli->conf = n;
		n[cli->nconf].key = strdup(o->name);
		n[cli->nconf].value = strdup(value);
		n[cli->nconf].file = strdup(path);
		n[cli->nconf].line = lineno;
		if (!n[cli->nconf].key || !n[cli->nconf].value || !n[cli->nconf].file) {
			free(n[cli->nconf].key);
			free(n[cli->nconf].value);
			free(n[cli->nconf].file);
			rc = ipk_err_set(&cli->err, IPK_EXIT_OSERR, "out of memory");
			break;
		}
		cli->nconf++;
	}
	free(line);
	fclose(f);
	return rc;
}

int ipk_cli_init(struct ipk_cli *cli, const struct ipk_prog *prog, int argc, char **argv)
{
	memset(cli, 0, sizeof(*cli));
	cli->prog = prog;
	cli->argc = argc;
	cli->argv = argv;
	cli->out = stdout;
	cli->errf = stderr;
	cli->confpos = 0;

	size_t n = 0;
	for (const struct ipk_opt *o = prog->opts; o && o->name; o++)
		n++;
	n += sizeof(common_opts) / sizeof(common_opts[0]);
	struct option *lo = calloc(n, sizeof(*lo));
	if (!lo)
		return ipk_err_set(&cli->err, IPK_EXIT_OSERR, "out of memory");
	size_t i = 0, s = 0;
	cli->shortopts[s++] = ':';
	for (int pass = 0; pass < 2; pass++) {
		for (const struct ipk_opt *o = pass ? common_opts : prog->opts; o && o->name; o++) {
			lo[i].name = o->name;
			lo[i].has_arg = o->has_arg;
			lo[i].val = o->key;
			i++;
			if (o->key > 0 && o->key < 256 && s + 3 < sizeof(cli->shortopts)) {
				cli->shortopts[s++] = (char)o->key;
				if (o->has_arg == required_argument)
					cli->shortopts[s++] = ':';
			}
		}
	}
	cli->longopts = lo;

	/* The config path may come from the environment or --config; look for
	 * --config on the command line before anything else is parsed. */
	const char *env = getenv("IPKIT_CONFIG");
	const char *path = NULL;
	int must = 1;
	for (int a = 1; a < argc; a++) {
		if (!strcmp(argv[a], "--"))
			break;
		if (!strcmp(argv[a], "--config") && a + 1 < argc)
			path = argv[a + 1];
		else if (!strncmp(argv[a], "--config=", 9))
			path = argv[a] + 9;
	}
	if (!path && env && *env)
		path = env;
	if (!path) {
		path = "/etc/ipkit/ipkit.conf";
		must = 0;
	}
	optind = 1;
	opterr = 0;
	return read_config(cli, path, must);
}

const char *ipk_cli_origin(const struct ipk_cli *cli, char *buf, size_t n)
{
	/* While config entries are delivered, confpos is 1..nconf. */
	if (cli->confpos < 1 || cli->confpos > cli->nconf)
		return NULL;
	const struct ipk_conf_entry *e = &cli->conf[cli->confpos - 1];
	snprintf(buf, n, "%s:%d", e->file, e->line);
	return buf;
}

int ipk_cli_usage_error(struct ipk_cli *cli, const char *fmt, ...)
{
	char where[512];
	const char *origin = ipk_cli_origin(cli, where, sizeof(where));
	va_list ap;
	fprintf(cli->errf, "%s: ", cli->prog->name);
	if (origin)
		fprintf(cli->errf, "%s: ", origin);
	va_start(ap, fmt);
	vfprintf(cli->errf, fmt, ap);
	va_end(ap);
	/* a bad value in the configuration file is the file's fault, not the
	 * command line's */
	if (origin) {
		fputc('\n', cli->errf);
		cli->status = IPK_EXIT_CONFIG;
		return -1;
	}
	fprintf(cli->errf, "\nTry '%s --help' for more information.\n", cli->prog->name);
	cli->status = IPK_EXIT_USAGE;
	return -1;
}

/* After --help or --version: a full disk or a closed pipe is an error,
 * not success. */
static int info_written(struct ipk_cli *cli)
{
	cli->status = IPK_EXIT_OK;
	if (fflush(cli->out) != 0 || ferror(cli->out)) {
		fprintf(cli->errf, "%s: cannot write output: %s\n", cli->prog->name, strerror(errno));
		cli->status = IPK_EXIT_IOERR;
	}
	return 1;
}

static int handle_common(struct ipk_cli *cli, int key)
{
	switch (key) {
	case 'v':
		if (cli->verbose >= 0)
			cli->verbose++;
		return 0;
	case 'q':
		cli->verbose = -1;
		return 0;
	case IPK_OPT_STRICT:
		cli->strict = 1;
		return 0;
	case IPK_OPT_CONFIG:
		return 0; /* read in ipk_cli_init */
	case IPK_OPT_HELP:
		ipk_cli_usage(cli, cli->out);
		return info_written(cli);
	case IPK_OPT_VERSION:
		fprintf(cli->out, "%s (ipkit) %s\n", cli->prog->name, IPK_VERSION);
		return info_written(cli);
	}
	return -1;
}

/* getopt_long accepts unambiguous prefixes of long options; ipkit does not,
 * so that adding an option never changes what an old command line means. */
static int refuse_abbreviations(struct ipk_cli *cli)
{
	for (int a = 1; a < cli->argc; a++) {
		const char *arg = cli->argv[a];
		if (!strcmp(arg, "--"))
			break;
		if (strncmp(arg, "--", 2) != 0)
			continue;
		size_t len = strcspn(arg + 2, "=");
		char name[128];
		if (len >= sizeof(name))
			len = sizeof(name) - 1;
		memcpy(name, arg + 2, len);
		name[len] = '\0';
		const struct ipk_opt *o = find_opt(cli->prog, name);
		if (!o) {
			ipk_cli_usage_error(cli, "unknown option '--%s'", name);
			return -1;
		}
		if (o->has_arg == no_argument && arg[2 + len] == '=') {
			ipk_cli_usage_error(cli, "option '--%s' takes no argument", name);
			return -1;
		}
		if (o->has_arg == required_argument && !arg[2 + len])
			a++; /* its value may start with "--" */
	}
	return 0;
}

int ipk_cli_next(struct ipk_cli *cli)
{
	/* Config entries first, so the command line overrides them. */
	while (cli->confpos < cli->nconf) {
		const struct ipk_conf_entry *e = &cli->conf[cli->confpos++];
		const struct ipk_opt *o = find_opt(cli->prog, e->key);
		cli->optarg = o->has_arg == no_argument ? NULL : e->value;
		int h = handle_common(cli, o->key);
		if (h < 0)
			return o->key;
	}
	if (cli->confpos == cli->nconf) {
		cli->confpos = cli->nconf + 1; /* now on the command line */
		if (refuse_abbreviations(cli) < 0)
			return IPK_CLI_EXIT;
	}
	for (;;) {
		int longidx = -1;
		int c = getopt_long(cli->argc, cli->argv, cli->shortopts, (struct option *)cli->longopts, &longidx);
		if (c == -1) {
			cli->optind = optind;
			return IPK_CLI_END;
		}
		if (c == '?' || c == ':') {
			const char *bad = cli->argv[optind - 1];
			if (c == ':')
				ipk_cli_usage_error(cli, "option '%s' needs an argument", optopt && optopt < 256 && bad[1] != '-' ? (char[]){ '-', (char)optopt, 0 } : bad);
			else if (optopt && optopt < 256)
				ipk_cli_usage_error(cli, "unknown option '-%c'", optopt);
			else
				ipk_cli_usage_error(cli, "unknown option '%s'", bad);
			return IPK_CLI_EXIT;
		}
		cli->optarg = optarg;
		int h = handle_common(cli, c);
		if (h > 0)
			return IPK_CLI_EXIT;
		if (h < 0 || c == 'v' || c == 'q')
			return c;
	}
}

void ipk_cli_usage(const struct ipk_cli *cli, FILE *f)
{
	const struct ipk_prog *p = cli->prog;
	fprintf(f, "Usage: %s %s\n%s\n\nOptions:\n", p->name, p->synopsis, p->summary);
	for (int pass = 0; pass < 2; pass++) {
		for (const struct ipk_opt *o = pass ? common_opts : p->opts; o && o->name; o++) {
			char left[96];
			int k = 0;
			if (o->key > 0 && o->key < 256)
				k = snprintf(left, sizeof(left), "  -%c, --%s", o->key, o->name);
			else
				k = snprintf(left, sizeof(left), "      --%s", o->name);
			if (o->argname && k > 0 && (size_t)k < sizeof(left))
				snprintf(left + k, sizeof(left) - k, " %s", o->argname);
			fprintf(f, "%-30s %s\n", left, o->help);
		}
	}
	fprintf(f, "\nSee %s(1) for the exit status and the configuration file.\n", p->name);
}

void ipk_cli_free(struct ipk_cli *cli)
{
	for (int i = 0; i < cli->nconf; i++) {
		free(cli->conf[i].key);
		free(cli->conf[i].value);
		free(cli->conf[i].file);
	}
	free(cli->conf);
	free(cli->longopts);
	cli->conf = NULL;
	cli->longopts = NULL;
	cli->nconf = 0;
}

static void vmsg(const struct ipk_cli *cli, const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", cli->prog->name);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void ipk_warn(const struct ipk_cli *cli, const char *fmt, ...)
{
	if (cli->verbose < 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vmsg(cli, fmt, ap);
	va_end(ap);
}

int ipk_cli_pair_add(struct ipk_cli *cli, struct ipk_cli_pairs *p, const char *name, const char *want)
{
	const char *a = cli->optarg;
	if (!strchr(a, '=') || a[0] == '=' || a[strlen(a) - 1] == '=')
		return ipk_cli_usage_error(cli, "invalid --%s '%s' (want %s)", name, a, want), -1;
	const char **v = realloc(p->arg, (size_t)(p->n + 1) * sizeof(*v));
	if (!v)
		return -1;
	p->arg = v;
	v[p->n++] = a;
	return 0;
}

const char *ipk_cli_pair_get(const struct ipk_cli_pairs *p, const char *key)
{
	const char *val = NULL;
	size_t kl = strlen(key);
	for (int i = 0; i < p->n; i++)
		if (!strncmp(p->arg[i], key, kl) && p->arg[i][kl] == '=')
			val = p->arg[i] + kl + 1;
	return val;
}

void ipk_cli_pairs_free(struct ipk_cli_pairs *p)
{
	free(p->arg);
	p->arg = NULL;
	p->n = 0;
}

enum ipk_read_result ipk_cli_next_record(const struct ipk_cli *cli, struct ipk_reader *r, struct ipk_record *rec,
					 struct ipk_err *err)
{
	for (;;) {
		enum ipk_read_result rr = ipk_reader_next(r, rec, err);
		if (rr != IPK_READ_BAD)
			return rr;
		if (cli->strict)
			return IPK_READ_ERROR;
		ipk_warn(cli, "%s (skipped)", err->msg);
	}
}

int ipk_cli_bad_line(void *arg, const char *msg)
{
	const struct ipk_cli *cli = arg;
	if (cli->strict)
		return -1;
	ipk_warn(cli, "%s (skipped)", msg);
	return 0;
}

void ipk_info(const struct ipk_cli *cli, const char *fmt, ...)
{
	if (cli->verbose < 1)
		return;
	va_list ap;
	va_start(ap, fmt);
	vmsg(cli, fmt, ap);
	va_end(ap);
}

void ipk_debug(const struct ipk_cli *cli, const char *fmt, ...)
{
	if (cli->verbose < 2)
		return;
	va_list ap;
	va_start(ap, fmt);
	vmsg(cli, fmt, ap);
	va_end(ap);
}

int ipk_fail(const struct ipk_cli *cli, const struct ipk_err *err)
{
	fprintf(stderr, "%s: %s\n", cli->prog->name, err->msg[0] ? err->msg : "failed");
	return err->code ? err->code : IPK_EXIT_FAIL;
}

int ipk_parse_double(struct ipk_cli *cli, const char *opt, const char *s, double min, double max, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < min || v > max) {
		ipk_cli_usage_error(cli, "invalid value '%s' for --%s (a number from %g to %g)", s, opt, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

int ipk_parse_long(struct ipk_cli *cli, const char *opt, const char *s, long min, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		ipk_cli_usage_error(cli, "invalid value '%s' for --%s (an integer from %ld to %ld)", s, opt, min, max);
		return -1;
	}
	*out = v;
	return 0;
}
