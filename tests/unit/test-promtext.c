/* Unit tests of the Prometheus text exposition parser (promtext.h). */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "promtext.h"

/* Samples as "name{l=v,...} value [ts] type line" strings, for comparison. */
struct got {
	char s[64][256];
	double v[64];
	int n;
	int stop_after; /* stop the parse after this many (0: never) */
};

static int collect(void *arg, const struct ipk_prom_sample *s)
{
	struct got *g = arg;
	if (g->n >= 64)
		return 1;
	char *p = g->s[g->n];
	size_t left = sizeof(g->s[0]);
	int w = snprintf(p, left, "%s{", s->name);
	for (int i = 0; i < s->nlabels && w >= 0 && (size_t)w < left; i++)
		w += snprintf(p + w, left - (size_t)w, "%s%s=%s", i ? "," : "", s->labels[i].name, s->labels[i].value);
	if (w >= 0 && (size_t)w < left) {
		w += snprintf(p + w, left - (size_t)w, "} %s L%ld", ipk_prom_type_name(s->type), s->line);
		if (s->has_ts && (size_t)w < left)
			snprintf(p + w, left - (size_t)w, " @%lld", (long long)s->ts_ms);
	}
	g->v[g->n++] = s->value;
	return g->stop_after && g->n >= g->stop_after;
}

static int parse(struct ipk_promtext *p, const char *text, struct got *g, struct ipk_promtext_stats *st)
{
	struct ipk_err err = { 0 };
	memset(g, 0, sizeof(*g));
	return ipk_promtext_parse(p, text, strlen(text), collect, g, st, &err);
}

int main(void)
{
	struct ipk_promtext *p = ipk_promtext_new();
	struct got g;
	struct ipk_promtext_stats st;

	/* A typical exposition: HELP/TYPE, labels, timestamps, comments. */
	const char *basic =
		"# HELP stream_frames_per_second Frames rendered per second.\n"
		"# TYPE stream_frames_per_second gauge\n"
		"stream_frames_per_second{session=\"s1\"} 59.9\n"
		"stream_frames_per_second{session=\"s2\",gpu=\"0\"} 30 1764115200123\n"
		"# a free comment\n"
		"\n"
		"# TYPE stream_input_events_total counter\n"
		"stream_input_events_total{session=\"s1\"} 1234\n"
		"untyped_thing 7\n";
	CHECK("basic: parse returns 0", parse(p, basic, &g, &st) == 0);
	CHECK("basic: 4 samples, 9 lines, no bad line", g.n == 4 && st.samples == 4 && st.lines == 9 && st.bad == 0);
	CHECK("basic: gauge with label", !strcmp(g.s[0], "stream_frames_per_second{session=s1} gauge L3"));
	CHECK_NEAR("basic: value 59.9", g.v[0], 59.9, 1e-12);
	CHECK("basic: two labels and a timestamp",
	      !strcmp(g.s[1], "stream_frames_per_second{session=s2,gpu=0} gauge L4 @1764115200123"));
	CHECK("basic: counter type from # TYPE", !strcmp(g.s[2], "stream_input_events_total{session=s1} counter L8"));
	CHECK("basic: sample of another family is untyped", !strcmp(g.s[3], "untyped_thing{} untyped L9"));

	/* Escapes in label values: \" \\ \n; commas, braces and '=' inside values. */
	const char *esc = "m{a=\"say \\\"hi\\\"\",b=\"back\\\\slash\",c=\"two\\nlines\",d=\"x,y}=z\"} 1\n";
	CHECK("escapes: one sample", parse(p, esc, &g, &st) == 0 && g.n == 1 && st.bad == 0);
	CHECK("escapes: resolved", !strcmp(g.s[0], "m{a=say \"hi\",b=back\\slash,c=two\nlines,d=x,y}=z} untyped L1"));
	CHECK("escapes: unknown escape is malformed",
	      parse(p, "m{a=\"\\t\"} 1\nok 2\n", &g, &st) == 0 && st.bad == 1 && st.bad_line == 1 && g.n == 1 &&
		      strstr(st.bad_why, "invalid escape"));

	/* Special values. */
	const char *special = "a NaN\nb +Inf\nc -Inf\nd Inf\ne 1.5e3\nf -0.25\ng nan\nh 0x10\ni +NaN\n";
	parse(p, special, &g, &st);
	CHECK("special: 7 values, 2 malformed (hex, signed NaN)", g.n == 7 && st.bad == 2 && st.bad_line == 8);
	CHECK("special: NaN", isnan(g.v[0]) && isnan(g.v[6]));
	CHECK("special: +Inf, -Inf, Inf", isinf(g.v[1]) && g.v[1] > 0 && isinf(g.v[2]) && g.v[2] < 0 && isinf(g.v[3]));
	CHECK_NEAR("special: exponent", g.v[4], 1500, 0);
	CHECK_NEAR("special: negative fraction", g.v[5], -0.25, 0);

	/* Timestamps: negative allowed, non-integer not. */
	parse(p, "a 1 -5\nb 2 1.5\nc 3 123 extra\nd 4 99999999999999999999\n", &g, &st);
	CHECK("timestamps: negative accepted", g.n == 1 && !strcmp(g.s[0], "a{} untyped L1 @-5"));
	CHECK("timestamps: fraction, extra text, overflow are malformed", st.bad == 3 && st.bad_line == 2 &&
	      strstr(st.bad_why, "invalid timestamp"));

	/* CRLF, trailing blanks, tabs, blank lines of blanks, no final newline. */
	const char *crlf = "# TYPE x gauge\r\nx{a=\"1\"} 2 \t \r\n  \t\r\n\tx { a = \"2\" , } 3\r\ny\t4";
	CHECK("crlf: parse", parse(p, crlf, &g, &st) == 0);
	CHECK("crlf: 3 samples, 5 lines, none bad", g.n == 3 && st.lines == 5 && st.bad == 0);
	CHECK("crlf: no CR kept in values", g.v[0] == 2 && g.v[1] == 3 && g.v[2] == 4);
	CHECK("crlf: blanks inside braces, trailing comma", !strcmp(g.s[1], "x{a=2} gauge L4"));
	CHECK("crlf: last line without newline", !strcmp(g.s[2], "y{} untyped L5"));

	/* Malformed lines: each skipped, counted, first one described. */
	const char *bad =
		"good 1\n"
		"missing_value\n"            /* 2 */
		"m{a=\"x\" 1\n"              /* 3 unterminated set */
		"m{a=x} 1\n"                 /* 4 unquoted value */
		"m{a=\"1\",a=\"2\"} 1\n"     /* 5 duplicate label */
		"m{1a=\"1\"} 1\n"            /* 6 bad label name */
		"9metric 1\n"                /* 7 bad metric name */
		"m 12abc\n"                  /* 8 bad value */
		"# TYPE m sometype\n"        /* 9 bad type */
		"# TYPE 0m gauge\n"          /* 10 bad name in TYPE */
		"m{a=\"unterminated} 1\n"    /* 11 */
		"m-x 1\n"                    /* 12 bad character in name */
		"# HELP\n"                   /* 13 HELP without name */
		"good 2\n";
	parse(p, bad, &g, &st);
	CHECK("malformed: the two good lines survive", g.n == 2 && g.v[0] == 1 && g.v[1] == 2 && !strcmp(g.s[1], "good{} untyped L14"));
	CHECK("malformed: 12 bad lines counted", st.bad == 12);
	CHECK("malformed: first bad line is 2, missing value", st.bad_line == 2 && !strcmp(st.bad_why, "missing value"));
	/* The reason given for each kind, one line at a time. */
	static const struct {
		const char *line, *why;
	} whys[] = {
		{ "m{a=\"x\" 1", "expected ',' or '}'" },
		{ "m{a=x} 1", "double quotes" },
		{ "m{a=\"1\",a=\"2\"} 1", "duplicate label 'a'" },
		{ "m{1a=\"1\"} 1", "invalid label name" },
		{ "9metric 1", "invalid metric name" },
		{ "m 12abc", "invalid value '12abc'" },
		{ "# TYPE m sometype", "unknown type 'sometype'" },
		{ "# TYPE m", "missing type" },
		{ "m{a=\"unterminated} 1", "unterminated value" },
		{ "m-x 1", "invalid character '-'" },
		{ "m{a=\"1\"}", "missing value" },
	};
	for (size_t i = 0; i < sizeof(whys) / sizeof(whys[0]); i++) {
		char name[128];
		snprintf(name, sizeof(name), "malformed: '%s' says %s", whys[i].line, whys[i].why);
		parse(p, whys[i].line, &g, &st);
		CHECK(name, g.n == 0 && st.bad == 1 && st.bad_line == 1 && strstr(st.bad_why, whys[i].why));
	}

	/* A NUL byte inside a line makes that line malformed, not the text end. */
	static const char nul[] = "a 1\nb\0x 2\nc 3\n";
	struct ipk_err err = { 0 };
	memset(&g, 0, sizeof(g));
	ipk_promtext_parse(p, nul, sizeof(nul) - 1, collect, &g, &st, &err);
	CHECK("nul: line 2 bad, lines 1 and 3 parsed", g.n == 2 && st.bad == 1 && st.bad_line == 2 && g.v[1] == 3);

	/* Histogram / summary families type their suffixed series. */
	const char *hist = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_sum 1.5\nh_count 3\nh_other 1\n"
			   "# TYPE s summary\ns{quantile=\"0.5\"} 2\ns_sum 4\ns_bucket 1\n";
	parse(p, hist, &g, &st);
	CHECK("histogram: _bucket/_sum/_count typed", strstr(g.s[0], "histogram") && strstr(g.s[1], "histogram") &&
	      strstr(g.s[2], "histogram") && strstr(g.s[3], "untyped"));
	CHECK("summary: NAME and _sum typed, _bucket not", strstr(g.s[4], "summary") && strstr(g.s[5], "summary") &&
	      strstr(g.s[6], "untyped"));
	CHECK("histogram: le=\"+Inf\" is a plain label value", strstr(g.s[0], "le=+Inf"));

	/* A TYPE line does not leak from one parse into the next. */
	parse(p, "h_sum 1\n", &g, &st);
	CHECK("type state reset between parses", g.n == 1 && strstr(g.s[0], "untyped"));

	/* The callback can stop the parse. */
	memset(&g, 0, sizeof(g));
	g.stop_after = 2;
	CHECK("stop: returns 1", ipk_promtext_parse(p, basic, strlen(basic), collect, &g, &st, &err) == 1 && g.n == 2);

	/* Label helper. */
	parse(p, "m{session=\"s9\",x=\"\"} 1\n", &g, &st);
	CHECK("long label values and empty values", g.n == 1 && !strcmp(g.s[0], "m{session=s9,x=} untyped L1"));

	/* A long line and many labels. */
	size_t big = 200000;
	char *huge = malloc(big + 64);
	if (huge) {
		int w = sprintf(huge, "big{v=\"");
		memset(huge + w, 'x', big);
		strcpy(huge + w + big, "\"} 42\n");
		memset(&g, 0, sizeof(g));
		ipk_promtext_parse(p, huge, strlen(huge), collect, &g, &st, &err);
		CHECK("huge label value parsed", g.n == 1 && g.v[0] == 42 && st.bad == 0);
		free(huge);
	}

	/* A malformed value long enough to move the scratch buffer still names
	 * its label (found by fuzzing: the name was read from the old buffer). */
	char *longbad = malloc(5000);
	if (longbad) {
		strcpy(longbad, "m{somelabel=\"");
		memset(longbad + strlen(longbad), 'v', 4000);
		strcpy(longbad + 13 + 4000, "\\q\"} 1\n");
		parse(p, longbad, &g, &st);
		CHECK("long bad value: names its label", st.bad == 1 && strstr(st.bad_why, "label 'somelabel': invalid escape"));
		free(longbad);
	}

	/* Label selectors as given on the command line. */
	const struct ipk_prom_label *lab;
	int nl;
	char why[160];
	const char *sel = "{job=\"a\\\"b\",x=\"\"}=fps";
	long used = ipk_promtext_labels(p, sel, strlen(sel), &lab, &nl, why, sizeof(why));
	CHECK("selector: consumed up to '}'", used == (long)(strchr(sel, '}') - sel) + 1);
	CHECK("selector: labels", nl == 2 && !strcmp(lab[0].name, "job") && !strcmp(lab[0].value, "a\"b") &&
	      !strcmp(lab[1].value, ""));
	CHECK("selector: rest is '=fps'", used > 0 && !strcmp(sel + used, "=fps"));
	CHECK("selector: bad one fails", ipk_promtext_labels(p, "{a=1}", 5, &lab, &nl, why, sizeof(why)) == -1 &&
	      strstr(why, "double quotes"));

	ipk_promtext_free(p);
	ipk_promtext_free(NULL);
	CHECK_DONE();
}
