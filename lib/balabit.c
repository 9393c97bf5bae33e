#define _GNU_SOURCE
#include "balabit.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUF_INIT (64 * 1024)
#define LINE_MAX_BYTES (1024 * 1024) /* longer lines are skipped as unparseable */

int ipk_balabit_has_position(const struct ipk_balabit_row *r)
{
	return r->button != IPK_BB_SCROLL && !(r->x == IPK_BALABIT_OFFSCREEN && r->y == IPK_BALABIT_OFFSCREEN);
}

static const double pow10_exact[] = {
	1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

int ipk_balabit_parse_number(const char *s, size_t n, double *out)
{
	size_t i = 0;
	int neg = 0;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		neg = s[i++] == '-';
	/* Fast path (Clinger): an integer mantissa below 2^53 divided by an
	 * exact power of ten is correctly rounded by one IEEE division. */
	uint64_t m = 0;
	int digits = 0, frac = 0, seen_dot = 0, fast = 1;
	for (; i < n; i++) {
		char c = s[i];
		if (c >= '0' && c <= '9') {
			digits++;
			if (m > (UINT64_C(1) << 53) / 10)
				fast = 0;
			else
				m = m * 10 + (uint64_t)(c - '0');
			frac += seen_dot;
		} else if (c == '.' && !seen_dot) {
			seen_dot = 1;
		} else {
			break;
		}
	}
	if (digits == 0)
		return -1;
	if (i == n && fast && m <= (UINT64_C(1) << 53) && frac <= 22) {
		double v = (double)m / pow10_exact[frac];
		*out = neg ? -v : v;
		return 0;
	}
	/* Slow path: exponents, long mantissas. Only decimal syntax. */
	for (size_t j = i; j < n; j++)
		if (!((s[j] >= '0' && s[j] <= '9') || s[j] == '.' || s[j] == 'e' || s[j] == 'E' || s[j] == '+' ||
		      s[j] == '-'))
			return -1;
	char buf[128];
	if (n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	char *end;
	errno = 0;
	double v = strtod(buf, &end);
	if (end != buf + n || !isfinite(v))
		return -1;
	*out = v;
	return 0;
}

static int field_is(const char *f, size_t n, const char *lit)
{
	size_t l = strlen(lit);
	return n == l && memcmp(f, lit, l) == 0;
}

static int parse_button(const char *f, size_t n, enum ipk_balabit_button *b)
{
	if (n == 0)
		return -1;
	if (field_is(f, n, "NoButton"))
		*b = IPK_BB_NOBUTTON;
	else if (field_is(f, n, "Left"))
		*b = IPK_BB_LEFT;
	else if (field_is(f, n, "Right"))
		*b = IPK_BB_RIGHT;
	else if (field_is(f, n, "Scroll"))
		*b = IPK_BB_SCROLL;
	else
		*b = IPK_BB_OTHER_BUTTON;
	return 0;
}

static int parse_state(const char *f, size_t n, enum ipk_balabit_state *st)
{
	if (n == 0)
		return -1;
	if (field_is(f, n, "Move"))
		*st = IPK_BB_MOVE;
	else if (field_is(f, n, "Pressed"))
		*st = IPK_BB_PRESSED;
	else if (field_is(f, n, "Released"))
		*st = IPK_BB_RELEASED;
	else if (field_is(f, n, "Drag"))
		*st = IPK_BB_DRAG;
	else if (field_is(f, n, "Down"))
		*st = IPK_BB_DOWN;
	else if (field_is(f, n, "Up"))
		*st = IPK_BB_UP;
	else
		*st = IPK_BB_OTHER_STATE;
	return 0;
}

int ipk_balabit_parse_row(const char *line, size_t len, struct ipk_balabit_row *row)
{
	const char *f[6];
	size_t fl[6];
	int nf = 0;
	const char *p = line, *end = line + len;
	for (;;) {
		if (nf == 6)
			return -1; /* a seventh field */
		const char *c = memchr(p, ',', (size_t)(end - p));
		f[nf] = p;
		if (!c) {
			fl[nf++] = (size_t)(end - p);
			break;
		}
		fl[nf++] = (size_t)(c - p);
		p = c + 1;
	}
	if (nf != 6)
		return -1;
	if (ipk_balabit_parse_number(f[0], fl[0], &row->record_ts) < 0 ||
	    ipk_balabit_parse_number(f[1], fl[1], &row->client_ts) < 0 || parse_button(f[2], fl[2], &row->button) < 0 ||
	    parse_state(f[3], fl[3], &row->state) < 0 || ipk_balabit_parse_number(f[4], fl[4], &row->x) < 0 ||
	    ipk_balabit_parse_number(f[5], fl[5], &row->y) < 0)
		return -1;
	return 0;
}

int ipk_balabit_is_header(const char *line, size_t len)
{
	if (len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
		line += 3;
		len -= 3;
	}
	if (len > 0 && line[len - 1] == '\r')
		len--;
	return field_is(line, len, IPK_BALABIT_HEADER);
}

struct ipk_balabit_reader {
	int fd, own_fd, eof;
	char *name;
	char *buf;
	size_t cap, start, end; /* unread bytes are buf[start..end) */
	char *prev;             /* the previous accepted row, for repeats */
	size_t prev_len, prev_cap;
	int have_prev, have_last, strict;
	double last_t, shift, max_jump;
	struct ipk_balabit_stats st;
};

void ipk_balabit_set_strict(struct ipk_balabit_reader *r, int strict)
{
	r->strict = strict;
}

/* Read more bytes after buf[end]; makes room first. Returns bytes read, 0
 * at end of file, -1 on error (errno set). */
static ssize_t fill(struct ipk_balabit_reader *r)
{
	if (r->start > 0) {
		memmove(r->buf, r->buf + r->start, r->end - r->start);
		r->end -= r->start;
		r->start = 0;
	}
	if (r->end == r->cap) {
		size_t cap = r->cap * 2;
		char *b = realloc(r->buf, cap);
		if (!b) {
			errno = ENOMEM;
			return -1;
		}
		r->buf = b;
		r->cap = cap;
	}
	for (;;) {
		ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end);
		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0)
			r->end += (size_t)n;
		return n;
	}
}

/* Next line without its newline (and without a CR before it). Returns 1,
 * 0 at end of file, -1 on a read error (err set). An overlong line comes
 * back with *len == (size_t)-1 (its bytes discarded). */
static int next_line(struct ipk_balabit_reader *r, const char **line, size_t *len, struct ipk_err *err)
{
	size_t scan = r->start;
	int overlong = 0;
	for (;;) {
		char *nl = memchr(r->buf + scan, '\n', r->end - scan);
		if (nl) {
			size_t l = (size_t)(nl - (r->buf + r->start));
			*line = r->buf + r->start;
			r->start += l + 1;
			if (overlong) {
				*len = (size_t)-1;
			} else {
				if (l > 0 && (*line)[l - 1] == '\r')
					l--;
				*len = l;
			}
			r->st.lines++;
			return 1;
		}
		if (r->eof) {
			if (r->end == r->start && !overlong)
				return 0;
			size_t l = r->end - r->start;
			*line = r->buf + r->start;
			r->start = r->end;
			if (overlong) {
				*len = (size_t)-1;
			} else {
				if (l > 0 && (*line)[l - 1] == '\r')
					l--;
				*len = l;
			}
			r->st.lines++;
			return 1;
		}
		if (r->end - r->start >= LINE_MAX_BYTES) {
			overlong = 1; /* keep only a little of it */
			r->start = r->end;
		}
		scan = r->end - r->start; /* offset after the move done by fill() */
		ssize_t n = fill(r);
		scan += r->start; /* start is 0 after fill() */
		if (n < 0)
			return ipk_err_set(err, IPK_EXIT_IOERR, "cannot read '%s': %s", r->name, strerror(errno));
		if (n == 0)
			r->eof = 1;
	}
}

void ipk_balabit_close(struct ipk_balabit_reader *r)
{
	if (!r)
		return;
	if (r->own_fd && r->fd >= 0)
		close(r->fd);
	free(r->name);
	free(r->buf);
	free(r->prev);
	free(r);
}

struct ipk_balabit_reader *ipk_balabit_from_fd(int fd, int own_fd, const char *name, const char *pre, size_t npre,
					       double max_jump, struct ipk_err *err)
{
	struct ipk_balabit_reader *r = calloc(1, sizeof(*r));
	if (!r) {
		if (own_fd)
			close(fd);
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		return NULL;
	}
	r->fd = fd;
	r->own_fd = own_fd;
	r->max_jump = max_jump > 0 ? max_jump : 3600;
	r->cap = npre > BUF_INIT ? npre * 2 : BUF_INIT;
	r->name = strdup(name);
	r->buf = malloc(r->cap);
	if (!r->name || !r->buf) {
		ipk_balabit_close(r);
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		return NULL;
	}
	if (npre)
		memcpy(r->buf, pre, npre);
	r->end = npre;
	const char *line;
	size_t len;
	int n = next_line(r, &line, &len, err);
	if (n < 0) {
		ipk_balabit_close(r);
		return NULL;
	}
	if (n == 0) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "replay '%s': empty file (want a Balabit CSV header)", name);
		ipk_balabit_close(r);
		return NULL;
	}
	if (len == (size_t)-1 || !ipk_balabit_is_header(line, len)) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "replay '%s': not a Balabit CSV file (the first line is not '%s')", name,
			    IPK_BALABIT_HEADER);
		ipk_balabit_close(r);
		return NULL;
	}
	return r;
}

struct ipk_balabit_reader *ipk_balabit_open(const char *path, const char *name, double max_jump, struct ipk_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ipk_err_set(err, IPK_EXIT_NOINPUT, "cannot open replay input '%s': %s", path, strerror(errno));
		return NULL;
	}
	struct stat sb;
	if (fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		close(fd);
		ipk_err_set(err, IPK_EXIT_NOINPUT, "cannot open replay input '%s': %s", path, strerror(EISDIR));
		return NULL;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	return ipk_balabit_from_fd(fd, 1, name ? name : path, NULL, 0, max_jump, err);
}

static int remember(struct ipk_balabit_reader *r, const char *line, size_t len)
{
	if (len > r->prev_cap) {
		size_t cap = len < 128 ? 128 : len * 2;
		char *p = realloc(r->prev, cap);
		if (!p)
			return -1;
		r->prev = p;
		r->prev_cap = cap;
	}
	memcpy(r->prev, line, len);
	r->prev_len = len;
	r->have_prev = 1;
	return 0;
}

int ipk_balabit_next(struct ipk_balabit_reader *r, struct ipk_balabit_event *ev, struct ipk_err *err)
{
	const char *line;
	size_t len;
	int n;
	while ((n = next_line(r, &line, &len, err)) > 0) {
		long lineno = r->st.lines;
		if (len != (size_t)-1) {
			size_t i = 0;
			while (i < len && (line[i] == ' ' || line[i] == '\t'))
				i++;
			if (i == len)
				continue; /* blank line */
		}
		if (len == (size_t)-1 || ipk_balabit_parse_row(line, len, &ev->row) < 0) {
			if (!r->st.unparseable++)
				r->st.first_bad_line = lineno;
			if (r->strict)
				return ipk_err_set(err, IPK_EXIT_DATAERR,
						   "input '%s' line %ld: unparseable row (want six comma-separated fields: "
						   "record timestamp,client timestamp,button,state,x,y)",
						   r->name, lineno);
			continue;
		}
		if (r->have_prev && len == r->prev_len && memcmp(line, r->prev, len) == 0) {
			r->st.repeated++;
			continue;
		}
		if (remember(r, line, len) < 0)
			return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		double t = ev->row.client_ts + r->shift;
		if (r->have_last) {
			double gap = t - r->last_t;
			if (gap > r->max_jump) {
				r->st.jumps++;
				r->st.removed_s += gap - r->max_jump;
				r->shift -= gap - r->max_jump;
				t = r->last_t + r->max_jump;
			} else if (gap < -r->max_jump) {
				r->st.jumps++;
				r->shift -= gap;
				t = r->last_t;
			} else if (gap < 0) {
				r->st.nonmonotone++;
				t = r->last_t;
			}
		}
		r->last_t = t;
		r->have_last = 1;
		r->st.events++;
		ev->t = t;
		ev->lineno = lineno;
		return 1;
	}
	return n;
}

const struct ipk_balabit_stats *ipk_balabit_stats(const struct ipk_balabit_reader *r)
{
	return &r->st;
}

static void appendf(char *buf, size_t n, size_t *at, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void appendf(char *buf, size_t n, size_t *at, const char *fmt, ...)
{
	if (*at >= n)
		return;
	va_list ap;
	va_start(ap, fmt);
	int w = vsnprintf(buf + *at, n - *at, fmt, ap);
	va_end(ap);
	if (w > 0)
		*at += (size_t)w;
}

long ipk_balabit_describe(const struct ipk_balabit_stats *st, char *buf, size_t n)
{
	size_t at = 0;
	if (n)
		buf[0] = '\0';
	const char *sep = "";
	if (st->repeated) {
		appendf(buf, n, &at, "%sdropped %ld repeated row%s", sep, st->repeated, st->repeated == 1 ? "" : "s");
		sep = ", ";
	}
	if (st->nonmonotone) {
		appendf(buf, n, &at, "%sclamped %ld non-monotone timestamp%s", sep, st->nonmonotone,
			st->nonmonotone == 1 ? "" : "s");
		sep = ", ";
	}
	if (st->jumps) {
		appendf(buf, n, &at, "%scapped %ld absurd jump%s", sep, st->jumps, st->jumps == 1 ? "" : "s");
		sep = ", ";
	}
	if (st->unparseable)
		appendf(buf, n, &at, "%sskipped %ld unparseable row%s (first at line %ld)", sep, st->unparseable,
			st->unparseable == 1 ? "" : "s", st->first_bad_line);
	return st->repeated + st->nonmonotone + st->jumps + st->unparseable;
}
