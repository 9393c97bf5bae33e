/* source_replay.c - the replay source of ip-collect: Balabit mouse-dynamics
 * CSV files (one or a folder of them, replayed concurrently) or a stream of
 * ipkit sample records, reported one trace interval per collector interval.
 * The semantics are documented in ip-collect(1), REPLAY. */
#define _GNU_SOURCE
#include "sources.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "balabit.h"

/* One Balabit file being replayed. */
struct bb_session {
	struct ipk_balabit_reader *rd;
	char *session, *user, *label;
	struct ipk_balabit_event next; /* the first event not yet reported */
	int started, have_next, ended;
	double origin, last_t;         /* trace time origin, last reported event */
	double px, py;                 /* last pointer position */
	int have_pos;
	long intervals;
};

/* A non-sample record waiting to be passed through. */
struct pass_line {
	char *line;
	size_t len;
};

struct replay {
	int samples_mode;
	long k; /* the interval the next collect() reports */
	/* Balabit */
	struct bb_session *s;
	int ns, nlive;
	/* sample records */
	char *name;
	char *session;
	FILE *f;
	struct ipk_reader *rd;
	struct ipk_writer *pass;
	int strict, started, eof, have_pending, have_first;
	struct ipk_sample pending;
	double pending_ts, first_ts, last_ts, shift, max_jump;
	struct pass_line *q;
	int nq, capq;
	long nsamples, bad, late, jumps, passed;
};

static void copy_str(char *dst, size_t n, const char *src)
{
	size_t l = strlen(src);
	if (l >= n)
		l = n - 1;
	memcpy(dst, src, l);
	dst[l] = '\0';
}

/* ---- Balabit files ---- */

static int is_user_dir(const char *name)
{
	if (strncmp(name, "user", 4) != 0 || !name[4])
		return 0;
	for (const char *p = name + 4; *p; p++)
		if (*p < '0' || *p > '9')
			return 0;
	return 1;
}

/* Session and user names of a file: "userN/FILE" and "userN" when the
 * folder holding it is named userN, else "FILE" and no user. */
static int name_file(const char *path, char **session, char **user)
{
	*session = *user = NULL;
	char *a = strdup(path), *b = strdup(path);
	if (!a || !b)
		goto oom;
	const char *file = basename(a);
	char real[PATH_MAX];
	const char *parent = NULL;
	if (realpath(dirname(b), real))
		parent = strrchr(real, '/') ? strrchr(real, '/') + 1 : real;
	if (parent && is_user_dir(parent)) {
		if (asprintf(session, "%s/%s", parent, file) < 0) {
			*session = NULL;
			goto oom;
		}
		if (!(*user = strdup(parent)))
			goto oom;
	} else if (!(*session = strdup(file))) {
		goto oom;
	}
	free(a);
	free(b);
	return 0;
oom:
	free(a);
	free(b);
	free(*session);
	free(*user);
	*session = *user = NULL;
	return -1;
}

static void bb_session_free(struct bb_session *s)
{
	ipk_balabit_close(s->rd);
	free(s->session);
	free(s->user);
	free(s->label);
}

/* Add a session reading from rd (taken over, also on failure). */
static int add_session(struct replay *r, struct ipk_balabit_reader *rd, const char *path, const char *override,
		       struct ipk_err *err)
{
	struct bb_session *v = realloc(r->s, (size_t)(r->ns + 1) * sizeof(*v));
	if (!v) {
		ipk_balabit_close(rd);
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	}
	r->s = v;
	struct bb_session *s = &r->s[r->ns];
	memset(s, 0, sizeof(*s));
	s->rd = rd;
	ipk_balabit_set_strict(rd, r->strict);
	if (path) {
		if (name_file(path, &s->label, &s->user) < 0)
			goto oom;
	} else if (!(s->label = strdup("stdin"))) {
		goto oom;
	}
	if (!(s->session = strdup(override ? override : s->label)))
		goto oom;
	r->ns++;
	r->nlive++;
	return 0;
oom:
	bb_session_free(s);
	return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
}

static int add_file(struct replay *r, const char *path, const char *override, double max_jump, struct ipk_err *err)
{
	struct ipk_balabit_reader *rd = ipk_balabit_open(path, path, max_jump, err);
	if (!rd)
		return -1;
	return add_session(r, rd, path, override, err);
}

struct pathlist {
	char **v;
	int n, cap;
};

static int pathlist_add(struct pathlist *l, char *p)
{
	if (l->n == l->cap) {
		int cap = l->cap ? l->cap * 2 : 64;
		char **v = realloc(l->v, (size_t)cap * sizeof(*v));
		if (!v)
			return -1;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = p;
	return 0;
}

static void pathlist_free(struct pathlist *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

/* Regular files under dir, recursively (symbolic links to folders are not
 * followed, so there are no loops). */
static int scan_dir(const char *dir, struct pathlist *out, struct ipk_err *err)
{
	DIR *d = opendir(dir);
	if (!d)
		return ipk_err_set(err, IPK_EXIT_NOINPUT, "cannot open replay folder '%s': %s", dir, strerror(errno));
	struct dirent *e;
	int rc = 0;
	while (rc == 0 && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char *p;
		if (asprintf(&p, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", e->d_name) < 0) {
			rc = ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
			break;
		}
		struct stat sb;
		if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			rc = scan_dir(p, out, err);
			free(p);
		} else if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
			if (pathlist_add(out, p) < 0) {
				free(p);
				rc = ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
			}
		} else {
			free(p);
		}
	}
	closedir(d);
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_dir(struct replay *r, const char *dir, const char *override, double max_jump, struct ipk_err *err)
{
	struct pathlist l = { 0 };
	if (scan_dir(dir, &l, err) < 0) {
		pathlist_free(&l);
		return -1;
	}
	qsort(l.v, (size_t)l.n, sizeof(*l.v), cmp_str);
	for (int i = 0; i < l.n; i++) {
		struct ipk_err ferr = { 0 };
		struct ipk_balabit_reader *rd = ipk_balabit_open(l.v[i], l.v[i], max_jump, &ferr);
		if (!rd) {
			if (ferr.code == IPK_EXIT_DATAERR)
				continue; /* not a Balabit file: not ours */
			*err = ferr;
			pathlist_free(&l);
			return -1;
		}
		if (add_session(r, rd, l.v[i], override, err) < 0) {
			pathlist_free(&l);
			return -1;
		}
	}
	pathlist_free(&l);
	if (r->ns == 0)
		return ipk_err_set(err, IPK_EXIT_NOINPUT, "replay folder '%s': no Balabit CSV file in it", dir);
	return 0;
}

/* The session's trace has ended: say what was repaired. */
static void bb_end(struct bb_session *s, struct replay *r, const struct ipk_diag *diag)
{
	s->ended = 1;
	s->have_next = 0;
	r->nlive--;
	char what[512];
	const struct ipk_balabit_stats *st = ipk_balabit_stats(s->rd);
	if (ipk_balabit_describe(st, what, sizeof(what)) > 0)
		ipk_diagf(diag, 0, "replay '%s': %s", s->label, what);
	else
		ipk_diagf(diag, 1, "replay '%s': %ld events in %ld intervals, no defects", s->label, st->events,
			  s->intervals);
	ipk_balabit_close(s->rd);
	s->rd = NULL; /* the file is not needed any more */
}

/* Read the session's next event into s->next; at the end (or on a read
 * error, reported) the session ends. Returns 0, or -1 with err under
 * --strict at an unparseable row. */
static int bb_advance(struct bb_session *s, struct replay *r, const struct ipk_diag *diag, struct ipk_err *err)
{
	struct ipk_err rerr = { 0 };
	int n = ipk_balabit_next(s->rd, &s->next, &rerr);
	s->have_next = n > 0;
	if (n < 0 && r->strict && rerr.code == IPK_EXIT_DATAERR) {
		*err = rerr;
		return -1;
	}
	if (n < 0)
		ipk_diagf(diag, 0, "replay '%s': %s (the trace ends here)", s->label, rerr.msg);
	return 0;
}

static int bb_collect(struct replay *r, long k, double ts, double interval, struct ipk_sample_set *set,
		      const struct ipk_diag *diag, struct ipk_err *err)
{
	for (int i = 0; i < r->ns; i++) {
		struct bb_session *s = &r->s[i];
		if (s->ended)
			continue;
		if (!s->started) {
			s->started = 1;
			if (bb_advance(s, r, diag, err) < 0)
				return IPK_SOURCE_FATAL;
			if (!s->have_next) {
				bb_end(s, r, diag);
				continue;
			}
			s->origin = s->next.t;
		}
		double events = 0, clicks = 0, scrolls = 0, px = 0;
		while (s->have_next && floor((s->next.t - s->origin) / interval) <= (double)k) {
			const struct ipk_balabit_row *row = &s->next.row;
			events++;
			clicks += row->state == IPK_BB_PRESSED;
			scrolls += row->button == IPK_BB_SCROLL;
			if (ipk_balabit_has_position(row)) {
				if (s->have_pos) {
					double dx = row->x - s->px, dy = row->y - s->py;
					px += sqrt(dx * dx + dy * dy);
				}
				s->px = row->x;
				s->py = row->y;
				s->have_pos = 1;
			}
			s->last_t = s->next.t;
			if (bb_advance(s, r, diag, err) < 0)
				return IPK_SOURCE_FATAL;
		}
		struct ipk_sample smp;
		ipk_sample_init(&smp, s->session, "replay", ts, interval);
		if (s->user)
			copy_str(smp.user, sizeof(smp.user), s->user);
		ipk_sample_set_field(&smp, IPK_F_EVENTS, events);
		ipk_sample_set_field(&smp, IPK_F_MOUSE_PX, px);
		ipk_sample_set_field(&smp, IPK_F_CLICKS, clicks);
		ipk_sample_set_field(&smp, IPK_F_SCROLLS, scrolls);
		ipk_sample_set_field(&smp, IPK_F_INPUT_AGE, (double)(k + 1) * interval - (s->last_t - s->origin));
		if (ipk_sample_set_add(set, &smp) < 0)
			return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		s->intervals++;
		if (!s->have_next)
			bb_end(s, r, diag);
	}
	return r->nlive == 0 ? IPK_SOURCE_DONE : 0;
}

/* ---- sample records ---- */

/* A stdio stream that first returns bytes already read while sniffing the
 * format, then the rest of the descriptor. */
struct prefixed {
	int fd, own_fd;
	char *pre;
	size_t npre, pos;
};

static ssize_t prefixed_read(void *c, char *buf, size_t n)
{
	struct prefixed *p = c;
	if (p->pos < p->npre) {
		size_t m = p->npre - p->pos < n ? p->npre - p->pos : n;
		memcpy(buf, p->pre + p->pos, m);
		p->pos += m;
		return (ssize_t)m;
	}
	for (;;) {
		ssize_t r = read(p->fd, buf, n);
		if (r < 0 && errno == EINTR)
			continue;
		return r;
	}
}

static int prefixed_close(void *c)
{
	struct prefixed *p = c;
	if (p->own_fd)
		close(p->fd);
	free(p->pre);
	free(p);
	return 0;
}

/* Queue a pass-through line; written at the start of the next interval so
 * it follows the samples that preceded it in the input. */
static int queue_line(struct replay *r, const char *line, size_t len)
{
	if (r->nq == r->capq) {
		int cap = r->capq ? r->capq * 2 : 16;
		struct pass_line *q = realloc(r->q, (size_t)cap * sizeof(*q));
		if (!q)
			return -1;
		r->q = q;
		r->capq = cap;
	}
	char *c = malloc(len + 1);
	if (!c)
		return -1;
	memcpy(c, line, len);
	c[len] = '\0';
	r->q[r->nq].line = c;
	r->q[r->nq++].len = len;
	return 0;
}

static int flush_queue(struct replay *r, struct ipk_err *err)
{
	int rc = 0;
	for (int i = 0; i < r->nq; i++) {
		if (rc == 0 && r->pass && ipk_write_raw(r->pass, r->q[i].line, r->q[i].len, err) < 0)
			rc = IPK_SOURCE_FATAL;
		free(r->q[i].line);
	}
	r->nq = 0;
	return rc;
}

/* Read up to the next sample record (into r->pending), queueing the other
 * records. Returns 0, or IPK_SOURCE_FATAL with err set (a bad line under
 * --strict, a read error, out of memory). */
static int read_ahead(struct replay *r, const struct ipk_diag *diag, struct ipk_err *err)
{
	r->have_pending = 0;
	while (!r->eof) {
		struct ipk_record rec;
		struct ipk_err rerr = { 0 };
		enum ipk_read_result res = ipk_reader_next(r->rd, &rec, &rerr);
		if (res == IPK_READ_EOF) {
			r->eof = 1;
			break;
		}
		if (res == IPK_READ_ERROR) {
			*err = rerr;
			return IPK_SOURCE_FATAL;
		}
		if (res == IPK_READ_RECORD && strcmp(rec.type, "sample") != 0) {
			if (queue_line(r, rec.line, rec.len) < 0)
				return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory"), IPK_SOURCE_FATAL;
			r->passed++;
			continue;
		}
		if (res == IPK_READ_RECORD) {
			struct ipk_err serr = { 0 };
			if (ipk_sample_from_json(rec.json, &r->pending, &serr) == 0) {
				r->have_pending = 1;
				r->pending_ts = rec.ts;
				return 0;
			}
			ipk_err_set(&rerr, IPK_EXIT_DATAERR, "input '%s' line %ld: %s", r->name, rec.lineno, serr.msg);
		}
		/* a bad line */
		r->bad++;
		if (r->strict) {
			*err = rerr;
			err->code = IPK_EXIT_DATAERR;
			return IPK_SOURCE_FATAL;
		}
		ipk_diagf(diag, 0, "%s", rerr.msg);
	}
	return 0;
}

/* Place the pending sample on the replay's time line. */
static void place_pending(struct replay *r)
{
	double t = r->pending_ts + r->shift;
	if (!r->have_first) {
		r->have_first = 1;
		r->first_ts = r->last_ts = t;
	}
	double gap = t - r->last_ts;
	if (gap > r->max_jump) {
		r->jumps++;
		r->shift -= gap - r->max_jump;
		t = r->last_ts + r->max_jump;
	} else if (gap < -r->max_jump) {
		r->jumps++;
		r->shift -= gap;
		t = r->last_ts;
	} else if (gap < 0) {
		r->late++;
	}
	if (t > r->last_ts)
		r->last_ts = t;
	r->pending_ts = t;
}

static int samples_collect(struct replay *r, long k, double interval, struct ipk_sample_set *set,
			   const struct ipk_diag *diag, struct ipk_err *err)
{
	if (flush_queue(r, err) < 0)
		return IPK_SOURCE_FATAL;
	if (!r->started) {
		r->started = 1;
		if (read_ahead(r, diag, err) < 0)
			return IPK_SOURCE_FATAL;
		if (flush_queue(r, err) < 0) /* records before the first sample */
			return IPK_SOURCE_FATAL;
		if (r->have_pending)
			place_pending(r);
	}
	if (!r->have_pending && r->eof) {
		if (r->bad || r->jumps || r->late) {
			/* only the defects there were */
			char what[200];
			int at = 0;
			const char *sep = "";
			if (r->bad) {
				at += snprintf(what + at, sizeof(what) - at, "skipped %ld bad line%s", r->bad,
					       r->bad == 1 ? "" : "s");
				sep = ", ";
			}
			if (r->jumps) {
				at += snprintf(what + at, sizeof(what) - at, "%scapped %ld absurd jump%s", sep, r->jumps,
					       r->jumps == 1 ? "" : "s");
				sep = ", ";
			}
			if (r->late)
				snprintf(what + at, sizeof(what) - at, "%s%ld sample%s out of order", sep, r->late,
					 r->late == 1 ? "" : "s");
			ipk_diagf(diag, 0, "replay '%s': %s", r->name, what);
		} else
			ipk_diagf(diag, 1, "replay '%s': %ld samples, %ld other records passed through", r->name,
				  r->nsamples, r->passed);
		return IPK_SOURCE_DONE;
	}
	while (r->have_pending && floor((r->pending_ts - r->first_ts) / interval) <= (double)k) {
		struct ipk_sample *s = &r->pending;
		if (r->session)
			copy_str(s->session, sizeof(s->session), r->session);
		if (s->nsources == 0)
			copy_str(s->sources[s->nsources++], sizeof(s->sources[0]), "replay");
		if (ipk_sample_set_add(set, s) < 0)
			return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory"), IPK_SOURCE_FATAL;
		r->nsamples++;
		if (read_ahead(r, diag, err) < 0)
			return IPK_SOURCE_FATAL;
		if (r->have_pending)
			place_pending(r);
	}
	return 0;
}

/* ---- the source ---- */

static int replay_collect(struct ipk_source *src, double ts, double interval, struct ipk_sample_set *set,
			  const struct ipk_diag *diag, struct ipk_err *err)
{
	struct replay *r = src->priv;
	long k = r->k++;
	if (r->samples_mode)
		return samples_collect(r, k, interval, set, diag, err);
	return bb_collect(r, k, ts, interval, set, diag, err);
}

static void replay_free(struct ipk_source *src)
{
	struct replay *r = src->priv;
	if (!r)
		return;
	for (int i = 0; i < r->ns; i++)
		bb_session_free(&r->s[i]);
	free(r->s);
	for (int i = 0; i < r->nq; i++)
		free(r->q[i].line);
	free(r->q);
	ipk_reader_close(r->rd);
	if (r->f)
		fclose(r->f);
	free(r->name);
	free(r->session);
	free(r);
}

static const struct ipk_source_ops replay_ops = {
	.name = "replay",
	.finite = 1,
	.live = 0,
	.collect = replay_collect,
	.start = NULL,
	.free = replay_free,
};

/* Read from fd until the first byte that is not white space (or the end);
 * *pre holds what was read. Returns that byte, -1 at the end of input, -2
 * on error (errno set). */
static int sniff(int fd, char **pre, size_t *npre)
{
	size_t cap = 0, n = 0;
	char *b = NULL;
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 4096;
			char *nb = realloc(b, cap);
			if (!nb) {
				free(b);
				errno = ENOMEM;
				return -2;
			}
			b = nb;
		}
		ssize_t m = read(fd, b + n, cap - n);
		if (m < 0 && errno == EINTR)
			continue;
		if (m < 0) {
			free(b);
			return -2;
		}
		if (m == 0) {
			*pre = b;
			*npre = n;
			return -1;
		}
		for (size_t i = n; i < n + (size_t)m; i++) {
			unsigned char c = (unsigned char)b[i];
			if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
				*pre = b;
				*npre = n + (size_t)m;
				return c;
			}
		}
		n += (size_t)m;
	}
}

struct ipk_source *ipk_source_replay_new(const struct ipk_replay_opts *o, struct ipk_err *err)
{
	if (!o || !o->path || !*o->path) {
		ipk_err_set(err, IPK_EXIT_USAGE, "replay: no input given");
		return NULL;
	}
	struct ipk_source *src = calloc(1, sizeof(*src));
	struct replay *r = calloc(1, sizeof(*r));
	char *pre = NULL;
	size_t npre = 0;
	int fd = -1, own_fd = 0;
	if (!src || !r) {
		free(src);
		free(r);
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		return NULL;
	}
	src->ops = &replay_ops;
	src->priv = r;
	r->max_jump = o->max_jump > 0 ? o->max_jump : 3600;
	r->strict = o->strict;
	r->pass = o->passthrough;
	if (asprintf(&src->label, "replay %s", o->path) < 0) {
		src->label = NULL;
		goto oom;
	}
	int is_stdin = strcmp(o->path, "-") == 0;
	if (!(r->name = strdup(is_stdin ? "<stdin>" : o->path)))
		goto oom;
	if (o->session && !(r->session = strdup(o->session)))
		goto oom;

	if (is_stdin) {
		fd = 0;
	} else {
		struct stat sb;
		if (stat(o->path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			if (o->format == IPK_REPLAY_SAMPLES) {
				ipk_err_set(err, IPK_EXIT_NOINPUT, "cannot read sample records from '%s': %s", o->path,
					    strerror(EISDIR));
				goto fail;
			}
			if (add_dir(r, o->path, o->session, r->max_jump, err) < 0)
				goto fail;
			return src;
		}
		if (o->format == IPK_REPLAY_BALABIT) {
			if (add_file(r, o->path, o->session, r->max_jump, err) < 0)
				goto fail;
			return src;
		}
		fd = open(o->path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			ipk_err_set(err, IPK_EXIT_NOINPUT, "cannot open replay input '%s': %s", o->path, strerror(errno));
			goto fail;
		}
		own_fd = 1;
	}

	int first = 0;
	if (o->format != IPK_REPLAY_SAMPLES || is_stdin) {
		first = sniff(fd, &pre, &npre);
		if (first == -2) {
			ipk_err_set(err, IPK_EXIT_IOERR, "cannot read replay input '%s': %s", r->name, strerror(errno));
			goto fail;
		}
	}
	int samples = o->format == IPK_REPLAY_SAMPLES || (o->format == IPK_REPLAY_AUTO && first == '{');
	if (!samples) {
		if (o->format == IPK_REPLAY_AUTO && first == -1) {
			ipk_err_set(err, IPK_EXIT_DATAERR,
				    "replay '%s': empty input (neither sample records nor a Balabit CSV file)", r->name);
			goto fail;
		}
		struct ipk_balabit_reader *rd =
			ipk_balabit_from_fd(fd, own_fd, r->name, pre, npre, r->max_jump, err);
		fd = -1; /* taken over (closed on failure when owned) */
		free(pre);
		pre = NULL;
		if (!rd || add_session(r, rd, is_stdin ? NULL : o->path, o->session, err) < 0)
			goto fail;
		return src;
	}

	r->samples_mode = 1;
	struct prefixed *p = calloc(1, sizeof(*p));
	if (!p)
		goto oom;
	p->fd = fd;
	p->own_fd = own_fd;
	p->pre = pre;
	p->npre = npre;
	cookie_io_functions_t io = { .read = prefixed_read, .close = prefixed_close };
	r->f = fopencookie(p, "r", io);
	if (!r->f) {
		free(p);
		goto oom;
	}
	fd = -1;
	pre = NULL;
	if (!(r->rd = ipk_reader_from(r->f, r->name)))
		goto oom;
	return src;
oom:
	ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
fail:
	if (fd >= 0 && own_fd)
		close(fd);
	free(pre);
	ipk_source_free(src);
	return NULL;
}
