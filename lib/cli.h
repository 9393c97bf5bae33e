/* cli.h - the command-line conventions every ipkit program shares.
 *
 * A program describes its options once, in a table of struct ipk_opt; from
 * that table come getopt_long parsing, --help, the config-file keys and the
 * shell completions (generated from --help). The common options (--help,
 * --version, -v, -q, --strict, --config) are appended by this module and
 * handled here.
 *
 * Config file: key=value lines, '#' starts a comment, blank lines ignored.
 * A key is a long option name ("interval = 2"), optionally prefixed by the
 * program ("ip-collect.interval = 2"). Unprefixed keys a program does not know
 * are left for other programs; prefixed keys for this program must be known.
 * The file is $IPKIT_CONFIG if set (it must then exist), else --config FILE,
 * else /etc/ipkit/ipkit.conf when present. Config values are delivered before
 * the command line's options, so flags override them.
 *
 * Ownership: struct ipk_cli lives in main; it borrows prog and argv, and owns
 * the config entries it read until ipk_cli_free().
 */
#ifndef IPK_CLI_H
#define IPK_CLI_H

#include <stdio.h>

#include "ipk.h"
#include "record.h"

struct ipk_opt {
	const char *name;    /* long name, without "--" */
	int has_arg;         /* no_argument / required_argument (getopt.h) */
	int key;             /* short option char, or a value >= 256 */
	const char *argname; /* e.g. "SECONDS"; NULL when has_arg is no_argument */
	const char *help;    /* one line */
};

struct ipk_prog {
	const char *name;           /* "ip-collect" */
	const char *synopsis;       /* "[OPTION]... [FILE]..." */
	const char *summary;        /* one line, what the program does */
	const struct ipk_opt *opts; /* terminated by an entry with name NULL */
};

/* Keys of the common options (returned to the program only for -v/-q so it
 * can see them; the rest are handled here). */
enum { IPK_OPT_STRICT = 1000, IPK_OPT_CONFIG, IPK_OPT_VERSION, IPK_OPT_HELP };

/* ipk_cli_next() results besides option keys. */
enum { IPK_CLI_END = -1, IPK_CLI_EXIT = -2 };

struct ipk_conf_entry {
	char *key, *value, *file;
	int line;
};

struct ipk_cli {
	const struct ipk_prog *prog;
	int argc;
	char **argv;
	FILE *out, *errf;   /* where --help/--version and usage errors go */
	int verbose;        /* -v count; -q makes it -1 */
	int strict;         /* --strict */
	const char *optarg; /* argument of the option just returned */
	int optind;         /* after IPK_CLI_END: index of the first operand */
	int status;         /* after IPK_CLI_EXIT: the exit status to return */
	struct ipk_err err; /* after IPK_CLI_EXIT with a non-zero status */
	/* private */
	struct ipk_conf_entry *conf;
	int nconf, confpos;
	void *longopts;
	char shortopts[256];
};

/* Prepare to parse; reads the config file. Returns 0, or -1 with cli->err
 * set (bad config file: IPK_EXIT_CONFIG). */
int ipk_cli_init(struct ipk_cli *cli, const struct ipk_prog *prog, int argc, char **argv);

/* Next option: its key (with cli->optarg), IPK_CLI_END when options are done
 * (operands start at cli->optind), or IPK_CLI_EXIT when the program should
 * return cli->status now (--help, --version, or a usage error already
 * printed to cli->errf). */
int ipk_cli_next(struct ipk_cli *cli);

/* For option values the program rejects: print "prog: message" to
 * cli->errf, set cli->status and return -1. On the command line the status
 * is IPK_EXIT_USAGE and "Try 'prog --help'" follows; for a value from the
 * configuration file the message starts "FILE:LINE: " and the status is
 * IPK_EXIT_CONFIG. */
int ipk_cli_usage_error(struct ipk_cli *cli, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Where a config value came from, for error messages: "file:line" for the
 * option being delivered from the config file, or NULL for the command line. */
const char *ipk_cli_origin(const struct ipk_cli *cli, char *buf, size_t n);

void ipk_cli_usage(const struct ipk_cli *cli, FILE *f);
void ipk_cli_free(struct ipk_cli *cli);

/* Diagnostics, "prog: message", to stderr: warnings shown unless -q, info
 * only with -v, debug with -vv. */
void ipk_warn(const struct ipk_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ipk_info(const struct ipk_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ipk_debug(const struct ipk_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Errors are always shown: "prog: message". Returns err->code (or 1). */
int ipk_fail(const struct ipk_cli *cli, const struct ipk_err *err);

/* The next record of a program's input stream: a bad line (IPK_READ_BAD) is
 * warned about ("... (skipped)") and skipped, or, under --strict, ends the
 * stream. Returns IPK_READ_RECORD (*rec filled), IPK_READ_EOF, or
 * IPK_READ_ERROR with err set (an I/O error, or a bad line under --strict). */
enum ipk_read_result ipk_cli_next_record(const struct ipk_cli *cli, struct ipk_reader *r, struct ipk_record *rec,
					 struct ipk_err *err);

/* The same policy for a reader that reports bad lines by callback
 * (ipk_dataset_read): arg is the struct ipk_cli. Warns "msg (skipped)" and
 * returns 0, or under --strict returns -1 to stop. */
int ipk_cli_bad_line(void *arg, const char *msg);

/* A repeatable KEY=VALUE option such as --map: the arguments as given (they
 * point into argv or the config and live as long as the ipk_cli). */
struct ipk_cli_pairs {
	const char **arg;
	int n;
};

/* Add cli->optarg, the argument of option --NAME, to p after checking that
 * it is KEY=VALUE with neither part empty (WANT names the form in the
 * message, e.g. "SESSION=DOMAIN"). Returns 0, or -1 after
 * ipk_cli_usage_error() or, with no message, when out of memory. */
int ipk_cli_pair_add(struct ipk_cli *cli, struct ipk_cli_pairs *p, const char *name, const char *want);
/* The VALUE of the last argument whose KEY is key (flags come after the
 * config, so they win), or NULL. */
const char *ipk_cli_pair_get(const struct ipk_cli_pairs *p, const char *key);
void ipk_cli_pairs_free(struct ipk_cli_pairs *p);

/* Parse helpers: return 0, or -1 after ipk_cli_usage_error(). */
int ipk_parse_double(struct ipk_cli *cli, const char *opt, const char *s, double min, double max, double *out);
int ipk_parse_long(struct ipk_cli *cli, const char *opt, const char *s, long min, long max, long *out);

#endif
