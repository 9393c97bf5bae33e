/* promtext.c - Prometheus text exposition parser (see promtext.h). */
#define _GNU_SOURCE
#include "promtext.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A label while the line is parsed: offsets into the scratch buffer, which
 * may move while it grows. */
struct lab_off {
	size_t name, value;
};

struct ipk_promtext {
	char *sb;            /* scratch: NUL-terminated name, label names and values */
	size_t sblen, sbcap;
	struct lab_off *off;
	struct ipk_prom_label *labels;
	int nlab, labcap;
	char *fam;           /* family of the last # TYPE line ("" none) */
	size_t famcap;
	enum ipk_prom_type famtype;
};

struct ipk_promtext *ipk_promtext_new(void)
{
	return calloc(1, sizeof(struct ipk_promtext));
}

void ipk_promtext_free(struct ipk_promtext *p)
{
	if (!p)
		return;
	free(p->sb);
	free(p->off);
	free(p->labels);
	free(p->fam);
	free(p);
}

static const char *const type_names[] = {
	[IPK_PROM_UNTYPED] = "untyped", [IPK_PROM_COUNTER] = "counter", [IPK_PROM_GAUGE] = "gauge",
	[IPK_PROM_HISTOGRAM] = "histogram", [IPK_PROM_SUMMARY] = "summary",
};

const char *ipk_prom_type_name(enum ipk_prom_type t)
{
	return (unsigned)t <= IPK_PROM_SUMMARY ? type_names[t] : "untyped";
}

const char *ipk_prom_label(const struct ipk_prom_sample *s, const char *name)
{
	for (int i = 0; i < s->nlabels; i++)
		if (strcmp(s->labels[i].name, name) == 0)
			return s->labels[i].value;
	return NULL;
}

/* Parse state of one line: [p, end). */
struct cur {
	const char *p, *end;
	char *why;
	size_t nwhy;
};

/* Outcome of a line parser: OK, malformed (why filled), out of memory. */
enum { L_OK = 0, L_BAD = -1, L_OOM = -2 };

static int bad(struct cur *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct cur *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->why, c->nwhy, fmt, ap);
	va_end(ap);
	return L_BAD;
}

static int is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

static void skip_blanks(struct cur *c)
{
	while (c->p < c->end && is_blank(*c->p))
		c->p++;
}

static int name_start(char ch, int colon)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || (colon && ch == ':');
}

static int name_char(char ch, int colon)
{
	return name_start(ch, colon) || (ch >= '0' && ch <= '9');
}

/* Scratch buffer: append n bytes; returns the offset or -1 (out of memory). */
static long sb_put(struct ipk_promtext *p, const char *s, size_t n)
{
	if (p->sblen + n + 1 > p->sbcap) {
		size_t cap = p->sbcap ? p->sbcap : 256;
		while (p->sblen + n + 1 > cap)
			cap *= 2;
		char *nb = realloc(p->sb, cap);
		if (!nb)
			return -1;
		p->sb = nb;
		p->sbcap = cap;
	}
	size_t at = p->sblen;
	memcpy(p->sb + at, s, n);
	p->sblen += n;
	return (long)at;
}

static int sb_end(struct ipk_promtext *p)
{
	return sb_put(p, "", 1) < 0 ? -1 : 0;
}

/* A metric name (colon) or label name at c->p, copied NUL-terminated into
 * the scratch buffer; *at gets its offset. */
static int read_name(struct ipk_promtext *p, struct cur *c, int colon, size_t *at, const char *what)
{
	const char *s = c->p;
	if (s >= c->end || !name_start(*s, colon))
		return s >= c->end ? bad(c, "missing %s", what) : bad(c, "invalid %s at '%c'", what, *s);
	while (c->p < c->end && name_char(*c->p, colon))
		c->p++;
	long o = sb_put(p, s, (size_t)(c->p - s));
	if (o < 0 || sb_end(p) < 0)
		return L_OOM;
	*at = (size_t)o;
	return L_OK;
}

/* A quoted label value at c->p (the opening quote), unescaped. */
static int read_value(struct ipk_promtext *p, struct cur *c, size_t *at, size_t name_off)
{
	/* The label's name, for messages: the scratch buffer moves as it grows. */
#define lname (p->sb + name_off)
	if (c->p >= c->end || *c->p != '"')
		return bad(c, "label '%s': value must be in double quotes", lname);
	c->p++;
	*at = p->sblen;
	for (;;) {
		const char *s = c->p;
		while (c->p < c->end && *c->p != '"' && *c->p != '\\' && *c->p != '\0')
			c->p++;
		if (c->p > s && sb_put(p, s, (size_t)(c->p - s)) < 0)
			return L_OOM;
		if (c->p >= c->end)
			return bad(c, "label '%s': unterminated value", lname);
		if (*c->p == '\0')
			return bad(c, "label '%s': NUL byte in value", lname);
		if (*c->p == '"') {
			c->p++;
			return sb_end(p) < 0 ? L_OOM : L_OK;
		}
		/* backslash */
		if (c->p + 1 >= c->end)
			return bad(c, "label '%s': unterminated value", lname);
		char e = c->p[1], out;
		if (e == '\\' || e == '"')
			out = e;
		else if (e == 'n')
			out = '\n';
		else
			return bad(c, "label '%s': invalid escape '\\%c'", lname, e);
		if (sb_put(p, &out, 1) < 0)
			return L_OOM;
		c->p += 2;
	}
#undef lname
}

static int lab_push(struct ipk_promtext *p, size_t name, size_t value)
{
	if (p->nlab == p->labcap) {
		int cap = p->labcap ? p->labcap * 2 : 8;
		struct lab_off *no = realloc(p->off, (size_t)cap * sizeof(*no));
		if (!no)
			return L_OOM;
		p->off = no;
		struct ipk_prom_label *nl = realloc(p->labels, (size_t)cap * sizeof(*nl));
		if (!nl)
			return L_OOM;
		p->labels = nl;
		p->labcap = cap;
	}
	p->off[p->nlab].name = name;
	p->off[p->nlab].value = value;
	p->nlab++;
	return L_OK;
}

/* "{...}" at c->p; labels appended to p->off. */
static int read_labels(struct ipk_promtext *p, struct cur *c)
{
	c->p++; /* '{' */
	for (;;) {
		skip_blanks(c);
		if (c->p >= c->end)
			return bad(c, "unterminated label set");
		if (*c->p == '}') {
			c->p++;
			return L_OK;
		}
		size_t name = 0, value = 0;
		int r = read_name(p, c, 0, &name, "label name");
		if (r)
			return r;
		const char *lname = p->sb + name;
		for (int i = 0; i < p->nlab; i++)
			if (strcmp(p->sb + p->off[i].name, lname) == 0)
				return bad(c, "duplicate label '%s'", lname);
		skip_blanks(c);
		if (c->p >= c->end || *c->p != '=')
			return bad(c, "expected '=' after label name '%s'", lname);
		c->p++;
		skip_blanks(c);
		if ((r = read_value(p, c, &value, name)) != L_OK)
			return r;
		if ((r = lab_push(p, name, value)) != L_OK)
			return r;
		skip_blanks(c);
		if (c->p < c->end && *c->p == ',') {
			c->p++;
			continue;
		}
		if (c->p < c->end && *c->p == '}')
			continue;
		return bad(c, "expected ',' or '}' after label '%s'", p->sb + name);
	}
}

/* Resolve the label offsets into pointers (the scratch buffer is final). */
static void lab_resolve(struct ipk_promtext *p)
{
	for (int i = 0; i < p->nlab; i++) {
		p->labels[i].name = p->sb + p->off[i].name;
		p->labels[i].value = p->sb + p->off[i].value;
	}
}

long ipk_promtext_labels(struct ipk_promtext *p, const char *s, size_t len, const struct ipk_prom_label **labels,
			 int *nlabels, char *why, size_t n)
{
	struct cur c = { s, s + len, why, n };
	p->sblen = 0;
	p->nlab = 0;
	if (!len || *s != '{')
		return bad(&c, "label set must start with '{'");
	int r = read_labels(p, &c);
	if (r == L_OOM)
		return -2;
	if (r)
		return -1;
	lab_resolve(p);
	*labels = p->labels;
	*nlabels = p->nlab;
	return (long)(c.p - s);
}

/* The next blank-separated token: [*s, *e). */
static void token(struct cur *c, const char **s, const char **e)
{
	skip_blanks(c);
	*s = c->p;
	while (c->p < c->end && !is_blank(*c->p))
		c->p++;
	*e = c->p;
}

/* A float as Go's strconv.ParseFloat accepts it in the text format. */
static int parse_float(const char *s, size_t n, double *out)
{
	char buf[128];
	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	const char *q = buf + (buf[0] == '+' || buf[0] == '-');
	if (!strcasecmp(q, "inf") || !strcasecmp(q, "infinity")) {
		*out = buf[0] == '-' ? -INFINITY : INFINITY;
		return 0;
	}
	if (!strcasecmp(q, "nan")) {
		if (q != buf)
			return -1;
		*out = NAN;
		return 0;
	}
	/* strtod would also take "nan(...)", "0x..." hex and leading blanks:
	 * allow only digits, '.', exponent and signs. */
	for (const char *t = buf; *t; t++)
		if (!strchr("0123456789.eE+-", *t))
			return -1;
	char *end;
	errno = 0;
	double v = strtod(buf, &end);
	if (end != buf + n || end == buf)
		return -1;
	if (errno == ERANGE && fabs(v) > 1) /* overflow: Go returns +-Inf with an error */
		return -1;
	*out = v;
	return 0;
}

static int parse_ts(const char *s, size_t n, int64_t *out)
{
	char buf[32];
	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	const char *q = buf + (buf[0] == '-' || buf[0] == '+');
	if (!*q)
		return -1;
	for (const char *t = q; *t; t++)
		if (*t < '0' || *t > '9')
			return -1;
	char *end;
	errno = 0;
	long long v = strtoll(buf, &end, 10);
	if (errno || *end)
		return -1;
	*out = (int64_t)v;
	return 0;
}

static int fam_is(const struct ipk_promtext *p, const char *name)
{
	if (!p->fam || !p->fam[0])
		return 0;
	size_t fl = strlen(p->fam);
	if (strncmp(name, p->fam, fl) != 0)
		return 0;
	const char *suf = name + fl;
	if (!*suf)
		return 1;
	if (p->famtype == IPK_PROM_HISTOGRAM)
		return !strcmp(suf, "_bucket") || !strcmp(suf, "_sum") || !strcmp(suf, "_count");
	if (p->famtype == IPK_PROM_SUMMARY)
		return !strcmp(suf, "_sum") || !strcmp(suf, "_count");
	return 0;
}

/* "# HELP ..." / "# TYPE ..." / other comments; c->p is after '#'. */
static int comment_line(struct ipk_promtext *p, struct cur *c)
{
	skip_blanks(c);
	const char *ks, *ke;
	const char *save = c->p;
	token(c, &ks, &ke);
	size_t kl = (size_t)(ke - ks);
	int help = kl == 4 && !memcmp(ks, "HELP", 4), type = kl == 4 && !memcmp(ks, "TYPE", 4);
	if (!help && !type) {
		c->p = save;
		return L_OK; /* a plain comment */
	}
	const char *kw = help ? "HELP" : "TYPE";
	skip_blanks(c);
	size_t name;
	p->sblen = 0;
	int r = read_name(p, c, 1, &name, "metric name");
	if (r == L_BAD) {
		char inner[128];
		snprintf(inner, sizeof(inner), "%s", c->why);
		return bad(c, "# %s: %s", kw, inner);
	}
	if (r)
		return r;
	if (c->p < c->end && !is_blank(*c->p))
		return bad(c, "# %s: invalid metric name", kw);
	if (help) {
		/* Docstring: any text; escapes \\ and \n are the only ones defined. */
		for (const char *t = c->p; t < c->end; t++) {
			if (*t == '\0')
				return bad(c, "# HELP: NUL byte");
			if (*t == '\\' && t + 1 < c->end && (t[1] == '\\' || t[1] == 'n'))
				t++;
		}
		return L_OK;
	}
	const char *ts, *te;
	token(c, &ts, &te);
	size_t tl = (size_t)(te - ts);
	enum ipk_prom_type t = IPK_PROM_UNTYPED;
	int found = 0;
	for (int i = IPK_PROM_UNTYPED; i <= IPK_PROM_SUMMARY; i++)
		if (tl == strlen(type_names[i]) && !memcmp(ts, type_names[i], tl)) {
			t = (enum ipk_prom_type)i;
			found = 1;
		}
	if (!found)
		return tl ? bad(c, "# TYPE: unknown type '%.*s'", (int)(tl > 32 ? 32 : tl), ts)
			  : bad(c, "# TYPE: missing type");
	skip_blanks(c);
	if (c->p < c->end)
		return bad(c, "# TYPE: unexpected text after the type");
	size_t nl = strlen(p->sb + name) + 1;
	if (nl > p->famcap) {
		char *nf = realloc(p->fam, nl);
		if (!nf)
			return L_OOM;
		p->fam = nf;
		p->famcap = nl;
	}
	memcpy(p->fam, p->sb + name, nl);
	p->famtype = t;
	return L_OK;
}

static int sample_line(struct ipk_promtext *p, struct cur *c, struct ipk_prom_sample *s)
{
	size_t name;
	p->sblen = 0;
	p->nlab = 0;
	int r = read_name(p, c, 1, &name, "metric name");
	if (r)
		return r;
	if (c->p < c->end && *c->p != '{' && !is_blank(*c->p))
		return bad(c, "invalid character '%c' in metric name", *c->p);
	skip_blanks(c);
	if (c->p < c->end && *c->p == '{' && (r = read_labels(p, c)) != L_OK)
		return r;
	const char *vs, *ve;
	token(c, &vs, &ve);
	if (vs == ve)
		return bad(c, "missing value");
	if (parse_float(vs, (size_t)(ve - vs), &s->value) < 0)
		return bad(c, "invalid value '%.*s'", (int)(ve - vs > 40 ? 40 : ve - vs), vs);
	const char *ts, *te;
	token(c, &ts, &te);
	s->has_ts = 0;
	if (ts != te) {
		if (parse_ts(ts, (size_t)(te - ts), &s->ts_ms) < 0)
			return bad(c, "invalid timestamp '%.*s'", (int)(te - ts > 40 ? 40 : te - ts), ts);
		s->has_ts = 1;
	}
	skip_blanks(c);
	if (c->p < c->end)
		return bad(c, "unexpected text after %s", s->has_ts ? "the timestamp" : "the value");
	lab_resolve(p);
	s->name = p->sb + name;
	s->labels = p->labels;
	s->nlabels = p->nlab;
	s->type = fam_is(p, s->name) ? p->famtype : IPK_PROM_UNTYPED;
	return L_OK;
}

int ipk_promtext_parse(struct ipk_promtext *p, const char *buf, size_t len, ipk_promtext_fn fn, void *arg,
		       struct ipk_promtext_stats *st, struct ipk_err *err)
{
	memset(st, 0, sizeof(*st));
	if (p->fam)
		p->fam[0] = '\0';
	p->famtype = IPK_PROM_UNTYPED;
	const char *q = buf, *end = buf + len;
	char why[160];
	while (q < end) {
		const char *nl = memchr(q, '\n', (size_t)(end - q));
		const char *le = nl ? nl : end;
		const char *next = nl ? nl + 1 : end;
		if (le > q && le[-1] == '\r')
			le--;
		st->lines++;
		struct cur c = { q, le, why, sizeof(why) };
		why[0] = '\0';
		skip_blanks(&c);
		int r = L_OK;
		struct ipk_prom_sample s;
		int have = 0;
		if (c.p == c.end) {
			/* blank */
		} else if (*c.p == '#') {
			c.p++;
			r = comment_line(p, &c);
		} else if (memchr(c.p, '\0', (size_t)(c.end - c.p))) {
			r = bad(&c, "NUL byte in line");
		} else {
			memset(&s, 0, sizeof(s));
			r = sample_line(p, &c, &s);
			have = r == L_OK;
		}
		if (r == L_OOM)
			return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		if (r == L_BAD) {
			if (!st->bad++) {
				st->bad_line = st->lines;
				snprintf(st->bad_why, sizeof(st->bad_why), "%s", why);
			}
		} else if (have) {
			s.line = st->lines;
			st->samples++;
			if (fn && fn(arg, &s))
				return 1;
		}
		q = next;
	}
	return 0;
}
