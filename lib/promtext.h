/* promtext.h - parser of the Prometheus text exposition format 0.0.4, as
 * served by /metrics endpoints (and the subset of OpenMetrics text it shares).
 *
 * Accepted, line by line ('\n' ends a line; a '\r' before it is dropped):
 *   - blank lines (spaces and tabs only): ignored;
 *   - "# HELP NAME text" and "# TYPE NAME counter|gauge|histogram|summary|
 *     untyped": checked (a bad NAME or type is a malformed line); TYPE gives
 *     the type of the samples of that family that follow; any other line
 *     starting with '#' (after blanks) is a comment ("# EOF" included);
 *   - samples: NAME [ "{" LABEL "=" "\"" VALUE "\"" { "," ... } [","] "}" ]
 *     VALUE [ TIMESTAMP ], separated by blanks (spaces, tabs), trailing blanks
 *     allowed. NAME is [a-zA-Z_:][a-zA-Z0-9_:]*, LABEL [a-zA-Z_][a-zA-Z0-9_]*
 *     (unique within the set), label values use the escapes \\ \" \n (any
 *     other escape is malformed). VALUE is a float as Go's ParseFloat reads
 *     it: decimal or exponent notation, NaN, +Inf, -Inf, Inf (any case).
 *     TIMESTAMP is an integer, milliseconds since the epoch.
 * A malformed line is skipped and counted; the first one is described (line
 * number and reason) so the caller can report it. The rest is still parsed.
 *
 * Ownership: a parser (ipk_promtext_new) owns scratch buffers reused across
 * calls; free it with ipk_promtext_free (NULL is fine). The sample handed to
 * the callback, its name and labels point into those buffers and are valid
 * only during the callback.
 */
#ifndef IPK_PROMTEXT_H
#define IPK_PROMTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "ipk.h"

enum ipk_prom_type {
	IPK_PROM_UNTYPED, IPK_PROM_COUNTER, IPK_PROM_GAUGE, IPK_PROM_HISTOGRAM, IPK_PROM_SUMMARY,
};

struct ipk_prom_label {
	const char *name;
	const char *value; /* escapes resolved */
};

struct ipk_prom_sample {
	const char *name;
	const struct ipk_prom_label *labels; /* in the order written */
	int nlabels;
	double value;             /* may be NaN or +-Inf */
	int has_ts;
	int64_t ts_ms;            /* when has_ts */
	enum ipk_prom_type type;  /* from the family's # TYPE (NAME, or NAME_sum/_count/_bucket
	                             of a histogram or summary); IPK_PROM_UNTYPED when none */
	long line;                /* 1-based line number */
};

/* What one parse saw. */
struct ipk_promtext_stats {
	long lines;      /* lines read */
	long samples;    /* samples handed to the callback */
	long bad;        /* malformed lines skipped */
	long bad_line;   /* line number of the first malformed line (0: none) */
	char bad_why[160]; /* why it is malformed, e.g. "missing value" */
};

/* Called for each sample; returns 0 to go on, non-zero to stop the parse. */
typedef int (*ipk_promtext_fn)(void *arg, const struct ipk_prom_sample *s);

struct ipk_promtext;

/* A new parser, or NULL when out of memory. */
struct ipk_promtext *ipk_promtext_new(void);
void ipk_promtext_free(struct ipk_promtext *p);

/* Parse buf[0..len) (no terminating NUL needed; a NUL byte inside makes its
 * line malformed), calling fn(arg, sample) for each sample and filling st.
 * Returns 0; 1 when fn stopped the parse; -1 with err set
 * (IPK_EXIT_OSERR) when out of memory. */
int ipk_promtext_parse(struct ipk_promtext *p, const char *buf, size_t len, ipk_promtext_fn fn, void *arg,
		       struct ipk_promtext_stats *st, struct ipk_err *err);

/* Parse a label set written as in the format, "{a=\"x\",b=\"y\"}", starting
 * at s[0] == '{'. On success returns the number of bytes consumed and points
 * *labels at *nlabels labels held in p (valid until p's next use); returns -1
 * with why (n bytes) describing the error, or -2 when out of memory. Used to
 * parse label selectors given on the command line. */
long ipk_promtext_labels(struct ipk_promtext *p, const char *s, size_t len, const struct ipk_prom_label **labels,
			 int *nlabels, char *why, size_t n);

/* Value of label name in s, or NULL when absent. */
const char *ipk_prom_label(const struct ipk_prom_sample *s, const char *name);

/* "counter", "gauge", ... */
const char *ipk_prom_type_name(enum ipk_prom_type t);

#endif
