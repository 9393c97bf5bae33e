/* userhist.c - per-user idle-gap histories and their state directory. See
 * userhist.h. */
#define _GNU_SOURCE
#include "userhist.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int ipk_hist_bin(double g)
{
	if (!(g > 0))
		return 0;
	if (g < 127.5)
		return (int)floor(g + 0.5);
	int b = 128 + (int)floor(16.0 * log2(g / 128.0));
	return b < 128 ? 128 : b >= IPK_HIST_BINS ? IPK_HIST_BINS - 1 : b;
}

double ipk_hist_bin_value(int b)
{
	if (b < 128)
		return b;
	return 128.0 * exp2((b - 128 + 0.5) / 16.0);
}

void ipk_hist_add_gap(struct ipk_hist *h, double g)
{
	h->bin[ipk_hist_bin(g)] += 1;
	h->gaps += 1;
}

void ipk_hist_add_interval(struct ipk_hist *h, int active)
{
	h->intervals += 1;
	h->active += active != 0;
}

double ipk_hist_survival(const struct ipk_hist *h, double x)
{
	if (!(h->gaps > 0))
		return NAN;
	double above = 0;
	for (int b = IPK_HIST_BINS - 1; b >= 0 && ipk_hist_bin_value(b) > x + 1e-9; b--)
		above += h->bin[b];
	return above / h->gaps;
}

double ipk_hist_score(const struct ipk_hist *h, double e, double w)
{
	double se = ipk_hist_survival(h, e);
	if (isnan(se))
		return NAN;
	if (se <= 0)
		return 1;
	return ipk_hist_survival(h, e + w) / se;
}

struct ipk_histdb {
	struct ipk_hist **v;
	int n, cap;
};

struct ipk_histdb *ipk_histdb_new(void)
{
	return calloc(1, sizeof(struct ipk_histdb));
}

void ipk_histdb_free(struct ipk_histdb *db)
{
	if (!db)
		return;
	for (int i = 0; i < db->n; i++)
		free(db->v[i]);
	free(db->v);
	free(db);
}

int ipk_histdb_users(const struct ipk_histdb *db)
{
	return db->n;
}

static struct ipk_hist *find(const struct ipk_histdb *db, const char *user)
{
	for (int i = db->n - 1; i >= 0; i--)
		if (!strcmp(db->v[i]->user, user))
			return db->v[i];
	return NULL;
}

struct ipk_hist *ipk_histdb_get(struct ipk_histdb *db, const char *user)
{
	if (!user || !user[0])
		return NULL;
	struct ipk_hist *h = find(db, user);
	if (h)
		return h;
	if (db->n == db->cap) {
		int cap = db->cap ? db->cap * 2 : 16;
		struct ipk_hist **v = realloc(db->v, sizeof(*v) * cap);
		if (!v)
			return NULL;
		db->v = v;
		db->cap = cap;
	}
	if (!(h = calloc(1, sizeof(*h))))
		return NULL;
	snprintf(h->user, sizeof(h->user), "%s", user);
	db->v[db->n++] = h;
	return h;
}

/* Take the lock file DIR/history.lock (op LOCK_SH or LOCK_EX); returns the
 * descriptor or -1 with err set. */
static int lock_dir(const char *dir, int op, struct ipk_err *err)
{
	if (mkdir(dir, 0777) < 0 && errno != EEXIST)
		return ipk_err_set(err, IPK_EXIT_CANTCREAT, "create state directory '%s': %s", dir, strerror(errno));
	char path[4096];
	snprintf(path, sizeof(path), "%s/history.lock", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (fd < 0)
		return ipk_err_set(err, IPK_EXIT_CANTCREAT, "open lock '%s': %s", path, strerror(errno));
	while (flock(fd, op) < 0) {
		if (errno == EINTR)
			continue;
		ipk_err_set(err, IPK_EXIT_IOERR, "lock '%s': %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* An array of n finite numbers into v; -1 when it is not one. */
static int parse_numbers(const cJSON *arr, int n, double *v)
{
	if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != n)
		return -1;
	for (int k = 0; k < n; k++) {
		const cJSON *x = cJSON_GetArrayItem(arr, k);
		if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble))
			return -1;
		v[k] = x->valuedouble;
	}
	return 0;
}

static int parse_calib(const cJSON *o, struct ipk_calib *c)
{
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(o, "model");
	const cJSON *win = cJSON_GetObjectItemCaseSensitive(o, "windows");
	if (!cJSON_IsObject(o) || !cJSON_IsString(model) || !model->valuestring[0] ||
	    strlen(model->valuestring) >= sizeof(c->model) || !cJSON_IsArray(win))
		return -1;
	int n = cJSON_GetArraySize(win);
	if (n < 1 || n > IPK_CALIB_MAX_WIN || parse_numbers(win, n, c->window) < 0 ||
	    parse_numbers(cJSON_GetObjectItemCaseSensitive(o, "a"), n, c->a) < 0 ||
	    parse_numbers(cJSON_GetObjectItemCaseSensitive(o, "b"), n, c->b) < 0 ||
	    parse_numbers(cJSON_GetObjectItemCaseSensitive(o, "labels"), n, c->labels) < 0)
		return -1;
	for (int k = 0; k < n; k++)
		if (!(c->window[k] > 0) || c->labels[k] < 0)
			return -1;
	snprintf(c->model, sizeof(c->model), "%s", model->valuestring);
	c->nwin = n;
	return 0;
}

/* Parse one history line into a fresh struct (bins, totals, calibration). */
static int parse_line(const char *line, const char *path, long lineno, struct ipk_hist *out, struct ipk_err *err)
{
	memset(out, 0, sizeof(*out));
	cJSON *o = cJSON_Parse(line);
	const cJSON *t = o ? cJSON_GetObjectItemCaseSensitive(o, "type") : NULL;
	const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, "v") : NULL;
	const cJSON *u = o ? cJSON_GetObjectItemCaseSensitive(o, "user") : NULL;
	const cJSON *bins = o ? cJSON_GetObjectItemCaseSensitive(o, "bins") : NULL;
	const char *why = NULL;
	if (!o || !cJSON_IsObject(o))
		why = "not a JSON object";
	else if (!cJSON_IsString(t) || strcmp(t->valuestring, "history"))
		why = "not a history record";
	else if (!cJSON_IsNumber(v) || v->valuedouble != 1)
		why = "history version is not 1";
	else if (!cJSON_IsString(u) || !u->valuestring[0] || strlen(u->valuestring) >= sizeof(out->user))
		why = "bad user";
	else if (!cJSON_IsArray(bins))
		why = "no bins";
	if (!why) {
		snprintf(out->user, sizeof(out->user), "%s", u->valuestring);
		const char *keys[3] = { "gaps", "intervals", "active" };
		double *dst[3] = { &out->gaps, &out->intervals, &out->active };
		for (int k = 0; k < 3 && !why; k++) {
			const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, keys[k]);
			if (!cJSON_IsNumber(x) || !(x->valuedouble >= 0) || !isfinite(x->valuedouble))
				why = "bad totals";
			else
				*dst[k] = x->valuedouble;
		}
		const cJSON *cal = cJSON_GetObjectItemCaseSensitive(o, "calibration");
		if (!why && cal && parse_calib(cal, &out->cal) < 0)
			why = "bad calibration";
		const cJSON *b;
		cJSON_ArrayForEach(b, bins)
		{
			const cJSON *i = cJSON_GetArrayItem(b, 0), *c = cJSON_GetArrayItem(b, 1);
			if (why || cJSON_GetArraySize(b) != 2 || !cJSON_IsNumber(i) || !cJSON_IsNumber(c) ||
			    i->valuedouble < 0 || i->valuedouble >= IPK_HIST_BINS || i->valuedouble != (int)i->valuedouble ||
			    !(c->valuedouble >= 0) || !isfinite(c->valuedouble)) {
				why = "bad bin";
				break;
			}
			out->bin[(int)i->valuedouble] += c->valuedouble;
		}
	}
	cJSON_Delete(o);
	if (why)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "read history '%s' line %ld: %s", path, lineno, why);
	return 0;
}

/* Read the whole file into a fresh table (empty when the file is absent). */
static struct ipk_histdb *read_file(const char *dir, struct ipk_err *err)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/history.jsonl", dir);
	struct ipk_histdb *db = ipk_histdb_new();
	if (!db) {
		ipk_err_set(err, IPK_EXIT_OSERR, "read history '%s': out of memory", path);
		return NULL;
	}
	FILE *f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT)
			return db;
		ipk_err_set(err, IPK_EXIT_IOERR, "read history '%s': %s", path, strerror(errno));
		ipk_histdb_free(db);
		return NULL;
	}
	char *line = NULL;
	size_t cap = 0;
	long lineno = 0;
	struct ipk_hist tmp;
	int rc = 0;
	while (getline(&line, &cap, f) >= 0) {
		lineno++;
		if (line[strspn(line, " \t\r\n")] == 0)
			continue;
		if (parse_line(line, path, lineno, &tmp, err) < 0) {
			rc = -1;
			break;
		}
		struct ipk_hist *h = ipk_histdb_get(db, tmp.user);
		if (!h) {
			rc = ipk_err_set(err, IPK_EXIT_OSERR, "read history '%s': out of memory", path);
			break;
		}
		h->gaps += tmp.gaps;
		h->intervals += tmp.intervals;
		h->active += tmp.active;
		for (int b = 0; b < IPK_HIST_BINS; b++)
			h->bin[b] += tmp.bin[b];
		if (tmp.cal.model[0])
			h->cal = tmp.cal;
	}
	if (!rc && ferror(f))
		rc = ipk_err_set(err, IPK_EXIT_IOERR, "read history '%s': %s", path, strerror(errno));
	free(line);
	fclose(f);
	if (rc < 0) {
		ipk_histdb_free(db);
		return NULL;
	}
	return db;
}

static void set_base(struct ipk_hist *h)
{
	h->base_gaps = h->gaps;
	h->base_intervals = h->intervals;
	h->base_active = h->active;
	memcpy(h->base_bin, h->bin, sizeof(h->bin));
	h->base_cal = h->cal;
}

/* Copy a file's history (counts and calibration) into h, as on disk. */
static void take(struct ipk_hist *h, const struct ipk_hist *f)
{
	h->gaps = f->gaps;
	h->intervals = f->intervals;
	h->active = f->active;
	memcpy(h->bin, f->bin, sizeof(h->bin));
	h->cal = f->cal;
	set_base(h);
}

/* Whether c belongs to model and these windows. */
static int calib_is(const struct ipk_calib *c, const char *model, int nwin, const double *window)
{
	if (strcmp(c->model, model) || c->nwin != nwin)
		return 0;
	for (int k = 0; k < nwin; k++)
		if (c->window[k] != window[k])
			return 0;
	return 1;
}

static int same_calib(const struct ipk_calib *x, const struct ipk_calib *y)
{
	return calib_is(x, y->model, y->nwin, y->window);
}

void ipk_calib_reset(struct ipk_calib *c, const char *model, int nwin, const double *window)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->model, sizeof(c->model), "%s", model);
	c->nwin = nwin;
	for (int k = 0; k < nwin; k++) {
		c->window[k] = window[k];
		c->a[k] = 1;
	}
}

struct ipk_calib *ipk_calib_for(struct ipk_calib *c, const char *model, int nwin, const double *window)
{
	if (!calib_is(c, model, nwin, window))
		ipk_calib_reset(c, model, nwin, window);
	return c;
}

/* Merge h's calibration into the file's m: when both are of the same model
 * and windows, add what h learned since its base (the identity when its
 * base is of another model); else replace m's by h's (a process running
 * another model). Nothing when h learned nothing. */
static void merge_calib(struct ipk_calib *m, const struct ipk_hist *h)
{
	const struct ipk_calib *c = &h->cal, *from = &h->base_cal;
	if (!c->model[0])
		return;
	struct ipk_calib identity;
	if (!same_calib(from, c)) {
		ipk_calib_reset(&identity, c->model, c->nwin, c->window);
		from = &identity;
	}
	int learned = 0;
	for (int k = 0; k < c->nwin; k++)
		learned |= c->labels[k] != from->labels[k];
	if (!learned)
		return;
	if (!same_calib(m, c)) {
		*m = *c;
		return;
	}
	for (int k = 0; k < c->nwin; k++) {
		m->a[k] += c->a[k] - from->a[k];
		m->b[k] += c->b[k] - from->b[k];
		m->labels[k] += c->labels[k] - from->labels[k];
	}
}

int ipk_histdb_load(struct ipk_histdb *db, const char *dir, struct ipk_err *err)
{
	int fd = lock_dir(dir, LOCK_SH, err);
	if (fd < 0)
		return -1;
	struct ipk_histdb *f = read_file(dir, err);
	close(fd);
	if (!f)
		return -1;
	int rc = 0;
	for (int i = 0; i < f->n && !rc; i++) {
		struct ipk_hist *h = ipk_histdb_get(db, f->v[i]->user);
		if (!h) {
			rc = ipk_err_set(err, IPK_EXIT_OSERR, "load history '%s': out of memory", dir);
			break;
		}
		take(h, f->v[i]);
	}
	ipk_histdb_free(f);
	return rc;
}

static int write_hist(FILE *f, const struct ipk_hist *h)
{
	cJSON *s = cJSON_CreateString(h->user);
	char *user = s ? cJSON_PrintUnformatted(s) : NULL;
	cJSON_Delete(s);
	if (!user)
		return -1;
	fprintf(f, "{\"type\":\"history\",\"v\":1,\"user\":%s,\"gaps\":%.17g,\"intervals\":%.17g,\"active\":%.17g,\"bins\":[",
		user, h->gaps, h->intervals, h->active);
	free(user);
	int first = 1;
	for (int b = 0; b < IPK_HIST_BINS; b++)
		if (h->bin[b] > 0) {
			fprintf(f, "%s[%d,%.17g]", first ? "" : ",", b, h->bin[b]);
			first = 0;
		}
	fputs("]", f);
	const struct ipk_calib *c = &h->cal;
	if (c->model[0]) {
		cJSON *m = cJSON_CreateString(c->model);
		char *model = m ? cJSON_PrintUnformatted(m) : NULL;
		cJSON_Delete(m);
		if (!model)
			return -1;
		fprintf(f, ",\"calibration\":{\"model\":%s", model);
		free(model);
		const char *keys[4] = { "windows", "a", "b", "labels" };
		const double *vals[4] = { c->window, c->a, c->b, c->labels };
		for (int j = 0; j < 4; j++) {
			fprintf(f, ",\"%s\":[", keys[j]);
			for (int k = 0; k < c->nwin; k++)
				fprintf(f, "%s%.17g", k ? "," : "", vals[j][k]);
			fputs("]", f);
		}
		fputs("}", f);
	}
	fputs("}\n", f);
	return 0;
}

int ipk_histdb_sync(struct ipk_histdb *db, const char *dir, struct ipk_err *err)
{
	int fd = lock_dir(dir, LOCK_EX, err);
	if (fd < 0)
		return -1;
	int rc = -1;
	FILE *out = NULL;
	char path[4096], tmp[4200];
	snprintf(path, sizeof(path), "%s/history.jsonl", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	struct ipk_histdb *f = read_file(dir, err);
	if (!f)
		goto out;
	/* file + (ours - what ours had already taken from the file) */
	for (int i = 0; i < db->n; i++) {
		struct ipk_hist *h = db->v[i], *m = ipk_histdb_get(f, h->user);
		if (!m) {
			ipk_err_set(err, IPK_EXIT_OSERR, "sync history '%s': out of memory", path);
			goto out;
		}
		m->gaps += h->gaps - h->base_gaps;
		m->intervals += h->intervals - h->base_intervals;
		m->active += h->active - h->base_active;
		for (int b = 0; b < IPK_HIST_BINS; b++)
			m->bin[b] += h->bin[b] - h->base_bin[b];
		merge_calib(&m->cal, h);
	}
	if (!(out = fopen(tmp, "we"))) {
		ipk_err_set(err, IPK_EXIT_CANTCREAT, "write history '%s': %s", tmp, strerror(errno));
		goto out;
	}
	for (int i = 0; i < f->n; i++)
		if (write_hist(out, f->v[i]) < 0) {
			ipk_err_set(err, IPK_EXIT_OSERR, "write history '%s': out of memory", tmp);
			goto out;
		}
	if (fflush(out) != 0 || fsync(fileno(out)) < 0 || ferror(out)) {
		ipk_err_set(err, IPK_EXIT_IOERR, "write history '%s': %s", tmp, strerror(errno));
		goto out;
	}
	int cr = fclose(out);
	out = NULL;
	if (cr != 0 || rename(tmp, path) < 0) {
		ipk_err_set(err, IPK_EXIT_IOERR, "write history '%s': %s", path, strerror(errno));
		goto out;
	}
	/* db now holds the merged counts, all of them on disk */
	for (int i = 0; i < f->n; i++) {
		struct ipk_hist *h = ipk_histdb_get(db, f->v[i]->user);
		if (!h) {
			ipk_err_set(err, IPK_EXIT_OSERR, "sync history '%s': out of memory", path);
			goto out;
		}
		take(h, f->v[i]);
	}
	rc = 0;
out:
	if (out) {
		fclose(out);
		unlink(tmp);
	} else if (rc < 0) {
		unlink(tmp);
	}
	ipk_histdb_free(f);
	close(fd);
	return rc;
}
