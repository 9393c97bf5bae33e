/* Common CLI: option table, config file, precedence, errors. */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "cli.h"

static const struct ipk_opt opts[] = {
	{ "interval", required_argument, 'i', "S", "interval" },
	{ "name", required_argument, 300, "N", "name" },
	{ "flag", no_argument, 301, NULL, "flag" },
	{ NULL, 0, 0, NULL, NULL },
};
static const struct ipk_prog prog = { "ip-test", "[OPTION]...", "test", opts };

struct seen {
	char interval[32], name[32];
	int flag, verbose, strict;
};

static int run(const char *conf, int argc, char **argv, struct seen *s, struct ipk_cli *cli)
{
	char path[] = "/tmp/ipkit-test-cli.XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	fputs(conf, f);
	fclose(f);
	setenv("IPKIT_CONFIG", path, 1);
	memset(s, 0, sizeof(*s));
	int rc = ipk_cli_init(cli, &prog, argc, argv);
	unlink(path);
	if (rc < 0)
		return -100;
	cli->errf = fopen("/dev/null", "w");
	cli->out = cli->errf;
	int c;
	while ((c = ipk_cli_next(cli)) >= 0) {
		if (c == 'i')
			snprintf(s->interval, sizeof(s->interval), "%s", cli->optarg);
		else if (c == 300)
			snprintf(s->name, sizeof(s->name), "%s", cli->optarg);
		else if (c == 301)
			s->flag = 1;
	}
	s->verbose = cli->verbose;
	s->strict = cli->strict;
	fclose(cli->errf);
	return c;
}

int main(void)
{
	struct ipk_cli cli;
	struct seen s;
	char *a1[] = { "ip-test", "-i", "3", "x", NULL };
	int rc = run("# comment\ninterval = 2\nip-test.name = fromconf\nip-other.bogus = 1\nunknown = z\nflag = yes\n", 4, a1, &s, &cli);
	CHECK("parse ends", rc == IPK_CLI_END);
	CHECK("flag overrides config", strcmp(s.interval, "3") == 0);
	CHECK("prefixed config key applies", strcmp(s.name, "fromconf") == 0);
	CHECK("boolean config key", s.flag == 1);
	CHECK("operand index", cli.optind == 3);
	ipk_cli_free(&cli);

	char *a2[] = { "ip-test", NULL };
	rc = run("ip-test.nosuch = 1\n", 1, a2, &s, &cli);
	CHECK("unknown prefixed key refused", rc == -100 && cli.err.code == IPK_EXIT_CONFIG &&
						      strstr(cli.err.msg, "line 1: unknown key 'ip-test.nosuch'"));
	ipk_cli_free(&cli);

	rc = run("\n\njust words\n", 1, a2, &s, &cli);
	CHECK("malformed config line named", rc == -100 && strstr(cli.err.msg, "line 3: expected key = value"));
	ipk_cli_free(&cli);

	rc = run("flag = maybe\n", 1, a2, &s, &cli);
	CHECK("bad boolean refused", rc == -100 && strstr(cli.err.msg, "takes yes or no"));
	ipk_cli_free(&cli);

	char *a3[] = { "ip-test", "--bogus", NULL };
	rc = run("", 2, a3, &s, &cli);
	CHECK("unknown option is a usage error", rc == IPK_CLI_EXIT && cli.status == IPK_EXIT_USAGE);
	ipk_cli_free(&cli);

	char *a4[] = { "ip-test", "-vv", "--strict", "--name", "--n1", NULL };
	rc = run("", 5, a4, &s, &cli);
	CHECK("verbose counted", s.verbose == 2);
	CHECK("strict", s.strict == 1);
	CHECK("long option with argument", strcmp(s.name, "--n1") == 0);
	ipk_cli_free(&cli);

	char *a5[] = { "ip-test", "--interval", NULL };
	rc = run("", 2, a5, &s, &cli);
	CHECK("missing argument is a usage error", rc == IPK_CLI_EXIT && cli.status == IPK_EXIT_USAGE);
	ipk_cli_free(&cli);

	char *a6[] = { "ip-test", "--inter", "1", NULL };
	rc = run("", 3, a6, &s, &cli);
	CHECK("abbreviated long option refused", rc == IPK_CLI_EXIT && cli.status == IPK_EXIT_USAGE);
	ipk_cli_free(&cli);

	setenv("IPKIT_CONFIG", "/nonexistent/ipkit.conf", 1);
	char *a7[] = { "ip-test", NULL };
	rc = ipk_cli_init(&cli, &prog, 1, a7);
	CHECK("explicit missing config file is an error", rc < 0 && cli.err.code == IPK_EXIT_CONFIG &&
								strstr(cli.err.msg, "/nonexistent/ipkit.conf"));
	ipk_cli_free(&cli);
	CHECK_DONE();
}
