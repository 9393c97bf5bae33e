/* ip-predict - probability that each session's client stays idle, per
 * sample, from an LSTM model. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "dataset.h"
#include "lstmbench.h"
#include "predict.h"
#include "recal.h"
#include "record.h"
#include "train.h"
#include "userhist.h"

enum {
	OPT_WINDOW = 256, OPT_THRESHOLD, OPT_EXPIRE, OPT_EVAL, OPT_TABLE, OPT_STATE, OPT_BASELINE_TRAIN, OPT_PLOT,
	OPT_PLOT_SESSION, OPT_DEVICE, OPT_BENCH, OPT_RECALIBRATE,
};

/* Seconds of wall time between two merges of the per-user history into the
 * state directory while streaming (and once at the end). */
#define STATE_SYNC_S 60

static const struct ipk_opt opts[] = {
	{ "model", required_argument, 'm', "FILE", "the model to use (default: the default model, see ip-predict(1))" },
	{ "state", required_argument, OPT_STATE, "DIR", "keep per-user activity history in DIR across runs" },
	{ "device", required_argument, OPT_DEVICE, "DEV", "cpu, or cuda for a GPU (default cpu)" },
	{ "window", required_argument, OPT_WINDOW, "SECONDS", "window the decision is taken on (default: the model's first)" },
	{ "threshold", required_argument, OPT_THRESHOLD, "P", "decide \"above\" when p >= P (default: the model's threshold)" },
	{ "expire", required_argument, OPT_EXPIRE, "SECONDS", "forget a session silent for SECONDS of stream time (default 300)" },
	{ "recalibrate", required_argument, OPT_RECALIBRATE, "RATE", "learning rate of each user's recalibration of the model (default 0.001, 0: off)" },
	{ "eval", no_argument, OPT_EVAL, NULL, "score the model and the three baselines on the input instead: eval and lead records" },
	{ "table", no_argument, OPT_TABLE, NULL, "with --eval: a readable table instead of records" },
	{ "baseline-train", required_argument, OPT_BASELINE_TRAIN, "FILE", "with --eval: fit the baselines on the samples in FILE" },
	{ "plot", required_argument, OPT_PLOT, "FILE", "draw a session's probability and activity with gnuplot (.svg or .png)" },
	{ "plot-session", required_argument, OPT_PLOT_SESSION, "NAME", "the session --plot draws (default: the first)" },
	{ "bench", required_argument, OPT_BENCH, "LIST", "time the LSTM step (input 16, hidden 32; with --model, that model's) for each number of sessions in LIST" },
	{ NULL, 0, 0, NULL, NULL },
};

static const struct ipk_prog prog = {
	.name = "ip-predict",
	.synopsis = "[OPTION]... [FILE]...",
	.summary = "Predict, for every sample record, the probability that the session's client sends no input over the "
		   "model's windows.",
	.opts = opts,
};

static cJSON *prediction_json(const struct ipk_sample *s, const struct ipk_prediction *p, const char *model)
{
	cJSON *o = ipk_record_new("prediction", p->ts);
	if (!o)
		return NULL;
	cJSON *pp = NULL;
	int ok = cJSON_AddStringToObject(o, "session", s->session) && (pp = cJSON_AddObjectToObject(o, "p"));
	for (int j = 0; ok && j < p->nwin; j++) {
		char key[32];
		snprintf(key, sizeof(key), "%g", p->window[j]);
		ok = cJSON_AddNumberToObject(pp, key, round(p->p[j] * 1e6) / 1e6) != NULL;
	}
	ok = ok && cJSON_AddNumberToObject(o, "idle_s", p->idle_s) &&
	     cJSON_AddNumberToObject(o, "window", p->window[p->decide]) &&
	     cJSON_AddNumberToObject(o, "threshold", round(p->threshold * 1e6) / 1e6) &&
	     cJSON_AddStringToObject(o, "decision", p->above ? "above" : "below") &&
	     cJSON_AddStringToObject(o, "model", model);
	if (ok && s->user[0])
		ok = cJSON_AddStringToObject(o, "user", s->user) != NULL;
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* --plot: one session's probability (decision window), threshold and
 * activity, drawn by gnuplot. */
struct plot {
	const char *file, *session; /* session NULL: the first one seen */
	char dir[4096];             /* file's directory, set by plot_check() */
	char name[128];
	double *ts;
	float *p, *ev;
	long n, cap;
	double window, threshold;
};

static int plot_add(struct plot *pl, const char *session, double ts, double p, double ev)
{
	if (!pl->file)
		return 0;
	if (!pl->name[0]) {
		if (pl->session && strcmp(pl->session, session))
			return 0;
		snprintf(pl->name, sizeof(pl->name), "%s", session);
	}
	if (strcmp(pl->name, session))
		return 0;
	if (pl->n == pl->cap) {
		long cap = pl->cap ? pl->cap * 2 : 1024;
		double *t = realloc(pl->ts, sizeof(double) * cap);
		if (t)
			pl->ts = t;
		float *q = realloc(pl->p, sizeof(float) * cap);
		if (q)
			pl->p = q;
		float *e = realloc(pl->ev, sizeof(float) * cap);
		if (e)
			pl->ev = e;
		if (!t || !q || !e)
			return -1;
		pl->cap = cap;
	}
	pl->ts[pl->n] = ts;
	pl->p[pl->n] = (float)p;
	pl->ev[pl->n++] = (float)ev;
	return 0;
}

static void plot_free(struct plot *pl)
{
	free(pl->ts);
	free(pl->p);
	free(pl->ev);
}

/* The gnuplot terminal for the file's extension, or NULL. */
static const char *plot_terminal(const char *file)
{
	const char *dot = strrchr(file, '.');
	if (dot && !strcasecmp(dot, ".svg"))
		return "svg size 1200,420 dynamic background rgb 'white'";
	if (dot && !strcasecmp(dot, ".png"))
		return "png size 1200,420";
	return NULL;
}

static int have_gnuplot(void)
{
	return system("command -v gnuplot >/dev/null 2>&1") == 0;
}

/* Finds the plot's directory ("." when the file names none) and checks,
 * before the input is read, that it can be written: a plot that cannot be
 * written is known before the work is done. */
static int plot_check(struct plot *pl, struct ipk_err *err)
{
	const char *slash = strrchr(pl->file, '/');
	if (!slash)
		snprintf(pl->dir, sizeof(pl->dir), ".");
	else if (slash == pl->file)
		snprintf(pl->dir, sizeof(pl->dir), "/");
	else
		snprintf(pl->dir, sizeof(pl->dir), "%.*s", (int)(slash - pl->file), pl->file);
	if (access(pl->dir, W_OK | X_OK) != 0)
		return ipk_err_set(err, IPK_EXIT_CANTCREAT, "plot '%s': cannot write in '%s': %s", pl->file, pl->dir,
				   strerror(errno));
	return 0;
}

/* s as a gnuplot single-quoted string's contents (a quote doubled), into
 * out; -1 when it does not fit. */
static int gp_quote(const char *s, char *out, size_t cap)
{
	size_t k = 0;
	for (; *s; s++) {
		if (k + 3 > cap)
			return -1;
		if (*s == '\'')
			out[k++] = '\'';
		out[k++] = *s;
	}
	out[k] = 0;
	return 0;
}

static int plot_draw(struct plot *pl, struct ipk_err *err)
{
	if (!pl->n)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "plot '%s': no sample of session '%s' in the input", pl->file,
				   pl->session ? pl->session : "(any)");
	char data[] = "/tmp/ip-predict-plot-XXXXXX";
	int fd = mkstemp(data);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f) {
		if (fd >= 0) {
			close(fd);
			unlink(data);
		}
		return ipk_err_set(err, IPK_EXIT_CANTCREAT, "plot '%s': cannot create a data file: %s", pl->file,
				   strerror(errno));
	}
	for (long i = 0; i < pl->n; i++)
		fprintf(f, "%.3f %.6f %d\n", pl->ts[i] - pl->ts[0], pl->p[i], pl->ev[i] > 0);
	if (fclose(f) != 0) {
		unlink(data);
		return ipk_err_set(err, IPK_EXIT_IOERR, "plot '%s': writing %s: %s", pl->file, data, strerror(errno));
	}
	/* gnuplot draws into a file beside the target, renamed onto it when
	 * done: no half-drawn plot, and nothing of gnuplot's on our stdout */
	char out[4200], qout[8600];
	snprintf(out, sizeof(out), "%s/.ip-predict-plot-XXXXXX", pl->dir);
	int ofd = mkstemp(out);
	if (ofd < 0) {
		int e = errno;
		unlink(data);
		return ipk_err_set(err, IPK_EXIT_CANTCREAT, "plot '%s': cannot create a file in '%s': %s", pl->file,
				   pl->dir, strerror(e));
	}
	close(ofd);
	FILE *g = gp_quote(out, qout, sizeof(qout)) == 0 ? popen("exec gnuplot >&2", "w") : NULL;
	if (!g) {
		int e = errno;
		unlink(data);
		unlink(out);
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "plot '%s': cannot run gnuplot: %s", pl->file, strerror(e));
	}
	char esc[256];
	size_t k = 0;
	for (const char *c = pl->name; *c && k + 3 < sizeof(esc); c++) {
		if (*c == '_' || *c == '\\' || *c == '"' || *c == '@' || *c == '^' || *c == '{' || *c == '}')
			esc[k++] = '\\', esc[k++] = '\\';
		esc[k++] = *c;
	}
	esc[k] = 0;
	fprintf(g,
		"set terminal %s\nset output '%s'\n"
		"set title \"%s: p(no input in the next %g s) against input\"\n"
		"set xlabel 'seconds since the session started'\nset ylabel 'probability'\n"
		"set xrange [0:*]\nset yrange [-0.02:1.05]\nset key outside right top\nset style fill solid 0.35 noborder\n"
		"plot '%s' using 1:($3 > 0 ? 1 : 1/0):(1.0) with boxes lc rgb '#bbbbbb' title 'input in the interval', "
		"'' using 1:2 with lines lw 1.5 lc rgb '#1f5fbf' title 'p', "
		"%g with lines dt 2 lc rgb '#c03030' title 'threshold %.3g'\n",
		plot_terminal(pl->file), qout, esc, pl->window, data, pl->threshold, pl->threshold);
	int st = pclose(g);
	unlink(data);
	if (st != 0) {
		unlink(out);
		return ipk_err_set(err, WIFEXITED(st) && WEXITSTATUS(st) == 127 ? IPK_EXIT_UNAVAILABLE : IPK_EXIT_CANTCREAT,
				   "plot '%s': gnuplot failed (status %d)", pl->file, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	}
	/* mkstemp made it 0600; a plot is for reading */
	mode_t um = umask(0);
	umask(um);
	if (chmod(out, 0666 & ~um) != 0 || rename(out, pl->file) != 0) {
		int e = errno;
		unlink(out);
		return ipk_err_set(err, IPK_EXIT_CANTCREAT, "plot '%s': %s", pl->file, strerror(e));
	}
	return 0;
}

/* Stream one input: predictions for samples, everything else passed on. */
struct stream {
	struct ipk_predictor *pr;
	const char *model;
	struct plot *plot;
	struct ipk_histdb *hist;
	const char *state;
	double last_sync;
	int batched;                /* --device cuda: the samples of an interval in one step */
	struct ipk_sample *bs;      /* the pending interval's samples */
	long *bline;
	struct ipk_prediction *bp;
	int *bgot;
	int nb, cap;
};

static void stream_free(struct stream *sm)
{
	free(sm->bs);
	free(sm->bline);
	free(sm->bp);
	free(sm->bgot);
}

/* Write one prediction (and feed the plot and the state directory). */
static int emit(struct stream *sm, const struct ipk_sample *s, const struct ipk_prediction *p, struct ipk_writer *w,
		struct ipk_err *err)
{
	if (plot_add(sm->plot, s->session, p->ts, p->p[p->decide],
		     ipk_sample_has(s, IPK_F_EVENTS) ? s->val[IPK_F_EVENTS] : 0) < 0)
		return ipk_err_set(err, IPK_EXIT_OSERR, "plot: out of memory");
	if (sm->state && ipk_mono() - sm->last_sync >= STATE_SYNC_S) {
		if (ipk_histdb_sync(sm->hist, sm->state, err) < 0)
			return -1;
		sm->last_sync = ipk_mono();
	}
	cJSON *o = prediction_json(s, p, sm->model);
	if (!o)
		return ipk_err_set(err, IPK_EXIT_OSERR, "write prediction: out of memory");
	int wr = ipk_write(w, o, err);
	cJSON_Delete(o);
	return wr;
}

/* --device cuda: step the pending interval's samples in one batch. */
static int flush_batch(struct ipk_cli *cli, const char *name, struct stream *sm, struct ipk_writer *w,
		       struct ipk_err *err)
{
	int n = sm->nb;
	sm->nb = 0;
	if (!n)
		return 0;
	if (ipk_predictor_step_batch(sm->pr, sm->bs, n, sm->bp, sm->bgot, err) < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		if (!sm->bgot[i]) {
			ipk_warn(cli, "input '%s' line %ld: sample of '%s' not after its previous one, skipped", name,
				 sm->bline[i], sm->bs[i].session);
			continue;
		}
		if (emit(sm, &sm->bs[i], &sm->bp[i], w, err) < 0)
			return -1;
	}
	return 0;
}

static int batch_add(struct stream *sm, const struct ipk_sample *s, long line)
{
	if (sm->nb == sm->cap) {
		int cap = sm->cap ? sm->cap * 2 : 256;
		struct ipk_sample *bs = realloc(sm->bs, sizeof(*bs) * cap);
		if (bs)
			sm->bs = bs;
		long *bl = realloc(sm->bline, sizeof(*bl) * cap);
		if (bl)
			sm->bline = bl;
		struct ipk_prediction *bp = realloc(sm->bp, sizeof(*bp) * cap);
		if (bp)
			sm->bp = bp;
		int *bg = realloc(sm->bgot, sizeof(*bg) * cap);
		if (bg)
			sm->bgot = bg;
		if (!bs || !bl || !bp || !bg)
			return -1;
		sm->cap = cap;
	}
	sm->bs[sm->nb] = *s;
	sm->bline[sm->nb++] = line;
	return 0;
}

/* Stream one input: predictions for samples, everything else passed on. */
static int predict_file(struct ipk_cli *cli, const char *path, struct stream *sm, struct ipk_writer *w,
			struct ipk_err *err)
{
	struct ipk_reader *r = ipk_reader_open(path, err);
	if (!r)
		return -1;
	const char *name = ipk_reader_name(r);
	struct ipk_record rec;
	struct ipk_sample s;
	struct ipk_prediction p;
	int rc = 0;
	for (;;) {
		struct ipk_err e2 = { 0 };
		enum ipk_read_result res = ipk_cli_next_record(cli, r, &rec, &e2);
		if (res == IPK_READ_EOF)
			break;
		if (res == IPK_READ_ERROR) {
			rc = ipk_err_set(err, e2.code, "%s", e2.msg);
			break;
		}
		if (strcmp(rec.type, "sample") != 0) {
			if (flush_batch(cli, name, sm, w, err) < 0 || ipk_write_raw(w, rec.line, rec.len, err) < 0) {
				rc = -1;
				break;
			}
			continue;
		}
		if (ipk_sample_from_json(rec.json, &s, &e2) < 0) {
			if (cli->strict) {
				rc = ipk_err_set(err, IPK_EXIT_DATAERR, "input '%s' line %ld: %.900s", name, rec.lineno,
						 e2.msg);
				break;
			}
			ipk_warn(cli, "input '%s' line %ld: %s (skipped)", name, rec.lineno, e2.msg);
			continue;
		}
		if (sm->batched) {
			if (sm->nb && (s.ts != sm->bs[0].ts || sm->nb >= 1 << 20) && flush_batch(cli, name, sm, w, err) < 0) {
				rc = -1;
				break;
			}
			if (batch_add(sm, &s, rec.lineno) < 0) {
				rc = ipk_err_set(err, IPK_EXIT_OSERR, "predict: out of memory");
				break;
			}
			continue;
		}
		int got = ipk_predictor_step(sm->pr, &s, &p, err);
		if (got < 0) {
			rc = -1;
			break;
		}
		if (!got) {
			ipk_warn(cli, "input '%s' line %ld: sample of '%s' not after its previous one, skipped", name,
				 rec.lineno, s.session);
			continue;
		}
		if (emit(sm, &s, &p, w, err) < 0) {
			rc = -1;
			break;
		}
	}
	if (!rc && flush_batch(cli, name, sm, w, err) < 0)
		rc = -1;
	sm->nb = 0;
	ipk_reader_close(r);
	return rc;
}

/* --bench LIST: one "bench" record per number of sessions, timing net
 * (model: its id, or NULL for the random network of input 16, hidden 32). */
static int run_bench(struct ipk_cli *cli, const char *list, const struct ipk_lstm *net, const char *model, int cuda,
		     struct ipk_writer *w, struct ipk_err *err)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", list);
	const struct ipk_lstm_shape *sh = ipk_lstm_shape(net);
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		struct ipk_lstm_bench_result r;
		if ((cuda ? ipk_lstm_bench_cuda(net, atoi(t), 1.0, &r, err) : ipk_lstm_bench(net, atoi(t), 1.0, &r, err)) < 0)
			return -1;
		ipk_info(cli, "lstm step, %d sessions: %.0f session-steps/s (%s)", r.sessions, r.steps_per_s, r.kernel);
		cJSON *o = ipk_record_new("bench", ipk_now());
		int ok = o && cJSON_AddStringToObject(o, "bench", "lstm-step") &&
			 (!model || cJSON_AddStringToObject(o, "model", model)) &&
			 cJSON_AddNumberToObject(o, "sessions", r.sessions) && cJSON_AddNumberToObject(o, "n_in", sh->n_in) &&
			 cJSON_AddNumberToObject(o, "hidden", sh->hidden) && cJSON_AddNumberToObject(o, "threads", 1) &&
			 cJSON_AddStringToObject(o, "device", cuda ? "cuda" : "cpu") &&
			 cJSON_AddNumberToObject(o, "steps", (double)r.steps) &&
			 cJSON_AddNumberToObject(o, "seconds", r.seconds) &&
			 cJSON_AddNumberToObject(o, "steps_per_s", round(r.steps_per_s)) &&
			 cJSON_AddNumberToObject(o, "state_bytes", (double)r.state_bytes) &&
			 cJSON_AddNumberToObject(o, "session_bytes", (double)r.session_bytes) &&
			 cJSON_AddStringToObject(o, "kernel", r.kernel);
		if (!ok) {
			cJSON_Delete(o);
			return ipk_err_set(err, IPK_EXIT_OSERR, "write bench record: out of memory");
		}
		int rc = ipk_write(w, o, err);
		cJSON_Delete(o);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* Read sample files (none: standard input) into a dataset. */
static struct ipk_dataset *read_samples(struct ipk_cli *cli, int nfile, char **files, struct ipk_err *err)
{
	struct ipk_dataset *d = ipk_dataset_new();
	if (!d) {
		ipk_err_set(err, IPK_EXIT_OSERR, "gather samples: out of memory");
		return NULL;
	}
	if (!nfile && ipk_dataset_read(d, "-", ipk_cli_bad_line, cli, err) < 0)
		goto fail;
	for (int i = 0; i < nfile; i++)
		if (ipk_dataset_read(d, files[i], ipk_cli_bad_line, cli, err) < 0)
			goto fail;
	return d;
fail:
	ipk_dataset_free(d);
	return NULL;
}

/* --plot with --eval: the model's probabilities for the chosen session, as
 * the evaluation scored them (recalibrated in stream order). Only the
 * session and its user's other sessions, which share its calibration, are
 * predicted. */
static int plot_series(struct plot *pl, const struct ipk_model *m, const struct ipk_dataset *d, int decide,
		       double recal, struct ipk_err *err)
{
	const int nwin = ipk_model_info(m)->nwin;
	int chosen = -1;
	for (int i = 0; i < d->n && chosen < 0; i++)
		if (pl->session ? !strcmp(d->s[i].session, pl->session) : i == 0)
			chosen = i;
	if (chosen < 0)
		return 0;
	const char *user = d->s[chosen].user;
	long *off = malloc(sizeof(long) * d->n), total = 0;
	char *skip = malloc(d->n);
	for (int i = 0; off && skip && i < d->n; i++) {
		skip[i] = i != chosen && (!user[0] || strcmp(d->s[i].user, user));
		off[i] = total;
		total += skip[i] ? 0 : d->s[i].n;
	}
	double *pred = off && skip ? malloc(sizeof(double) * (total ? total : 1) * nwin) : NULL;
	int rc = -1;
	if (!pred)
		ipk_err_set(err, IPK_EXIT_OSERR, "plot: out of memory");
	else if (ipk_predict_dataset(m, d, skip, off, recal, pred, err) == 0)
		rc = 0;
	const struct ipk_series *s = &d->s[chosen];
	for (long t = 0; !rc && t < s->n; t++)
		if (plot_add(pl, s->session, s->ts[t], pred[(off[chosen] + t) * nwin + decide], s->events[t] > 0) < 0)
			rc = ipk_err_set(err, IPK_EXIT_OSERR, "plot: out of memory");
	free(pred);
	free(skip);
	free(off);
	return rc;
}

static int cmd_predict(int argc, char **argv)
{
	struct ipk_cli cli;
	const char *model_path = NULL, *state = NULL, *bt_path = NULL, *device = "cpu", *bench = NULL;
	double window = -1, threshold = -1, expire = 300, recal = IPK_RECAL_RATE;
	int do_eval = 0, table = 0, status = IPK_EXIT_OK;
	struct ipk_err err = { 0 };
	struct ipk_model *m = NULL;
	struct ipk_predictor *pr = NULL;
	struct ipk_dataset *d = NULL, *bt = NULL;
	struct ipk_histdb *hist = NULL;
	struct ipk_train_report rep = { 0 };
	struct plot plot = { 0 };
	struct stream sm = { 0 };
	struct ipk_writer w;
	char found[4096];

	if (ipk_cli_init(&cli, &prog, argc, argv) < 0) {
		status = ipk_fail(&cli, &cli.err);
		goto done;
	}
	int c;
	while ((c = ipk_cli_next(&cli)) >= 0) {
		const char *a = cli.optarg;
		int bad = 0;
		switch (c) {
		case 'm':
			model_path = a;
			break;
		case OPT_STATE:
			state = a;
			break;
		case OPT_DEVICE:
			device = a;
			break;
		case OPT_WINDOW:
			bad = ipk_parse_double(&cli, "window", a, 1e-3, 1e9, &window);
			break;
		case OPT_THRESHOLD:
			bad = ipk_parse_double(&cli, "threshold", a, 0, 1, &threshold);
			break;
		case OPT_EXPIRE:
			bad = ipk_parse_double(&cli, "expire", a, 1e-3, 1e9, &expire);
			break;
		case OPT_RECALIBRATE:
			bad = ipk_parse_double(&cli, "recalibrate", a, 0, 1, &recal);
			break;
		case OPT_EVAL:
			do_eval = 1;
			break;
		case OPT_TABLE:
			table = 1;
			break;
		case OPT_BASELINE_TRAIN:
			bt_path = a;
			break;
		case OPT_PLOT:
			plot.file = a;
			break;
		case OPT_PLOT_SESSION:
			plot.session = a;
			break;
		case OPT_BENCH:
			bench = a;
			for (const char *q = a; *q && !bad; q++)
				if (!strchr("0123456789,", *q))
					bad = (ipk_cli_usage_error(&cli, "invalid --bench '%s' (numbers of sessions, comma-separated)", a), 1);
			for (const char *q = a; !bad && q; q = strchr(q, ','), q = q ? q + 1 : q)
				if (atol(q) < 1 || atol(q) > 10000000)
					bad = (ipk_cli_usage_error(&cli, "invalid --bench '%s' (each 1..10000000)", a), 1);
			break;
		}
		if (bad) {
			status = cli.status ? cli.status : IPK_EXIT_USAGE;
			goto done;
		}
	}
	if (c == IPK_CLI_EXIT) {
		status = cli.status;
		goto done;
	}
	if (table && !do_eval) {
		status = (ipk_cli_usage_error(&cli, "--table needs --eval"), IPK_EXIT_USAGE);
		goto done;
	}
	if (bt_path && !do_eval) {
		status = (ipk_cli_usage_error(&cli, "--baseline-train needs --eval"), IPK_EXIT_USAGE);
		goto done;
	}
	if (plot.session && !plot.file) {
		status = (ipk_cli_usage_error(&cli, "--plot-session needs --plot"), IPK_EXIT_USAGE);
		goto done;
	}
	if (plot.file && strchr(plot.file, '\n')) {
		status = (ipk_cli_usage_error(&cli, "--plot: a file name with a newline is not supported"), IPK_EXIT_USAGE);
		goto done;
	}
	if (plot.file && !plot_terminal(plot.file)) {
		status = (ipk_cli_usage_error(&cli, "--plot '%s': name an .svg or .png file", plot.file), IPK_EXIT_USAGE);
		goto done;
	}
	if (strcmp(device, "cpu") && strcmp(device, "cuda")) {
		status = (ipk_cli_usage_error(&cli, "invalid --device '%s' (cpu or cuda)", device), IPK_EXIT_USAGE);
		goto done;
	}
	if (!strcmp(device, "cuda") && do_eval) {
		status = (ipk_cli_usage_error(&cli, "--device cuda is for predictions and --bench; --eval runs on the CPU"),
			  IPK_EXIT_USAGE);
		goto done;
	}
	if (plot.file && !have_gnuplot()) {
		ipk_err_set(&err, IPK_EXIT_UNAVAILABLE, "plot '%s': gnuplot is not installed", plot.file);
		goto fail;
	}
	if (plot.file && plot_check(&plot, &err) < 0)
		goto fail;
	signal(SIGPIPE, SIG_IGN);
	ipk_writer_init(&w, stdout);
	if (bench) {
		/* the reference network, or the network of the model named */
		struct ipk_lstm_shape sh = { .n_in = 16, .hidden = 32, .layers = 1, .n_out = 3 };
		struct ipk_lstm *net = NULL;
		if (model_path) {
			if (!(m = ipk_model_load(model_path, &err)))
				goto fail;
			ipk_info(&cli, "model %s from %s: %s", ipk_model_id(m), model_path, ipk_model_info(m)->meta);
		} else if ((net = ipk_lstm_new(&sh, &err))) {
			ipk_lstm_init(net, 42);
		} else {
			goto fail;
		}
		int rc = run_bench(&cli, bench, m ? ipk_model_net(m) : net, m ? ipk_model_id(m) : NULL,
				   !strcmp(device, "cuda"), &w, &err);
		ipk_lstm_free(net);
		if (rc < 0 && !ipk_writer_closed(&w))
			goto fail;
		if (!ipk_writer_closed(&w) && ipk_writer_finish(&w, &err) < 0 && !ipk_writer_closed(&w))
			goto fail;
		goto done;
	}
	if (!model_path) {
		const char *how = NULL;
		if (ipk_model_find_default(found, sizeof(found), &how, &err) < 0)
			goto fail;
		model_path = found;
		ipk_info(&cli, "default model (%s): %s", how, model_path);
	}
	if (!(m = ipk_model_load(model_path, &err)))
		goto fail;
	ipk_info(&cli, "model %s from %s: %s", ipk_model_id(m), model_path, ipk_model_info(m)->meta);
	const struct ipk_model_info *in = ipk_model_info(m);
	double dw = window >= 0 ? window : in->window[0];
	int decide = -1;
	for (int j = 0; j < in->nwin; j++)
		if (fabs(in->window[j] - dw) < 1e-9)
			decide = j;
	if (decide < 0) {
		ipk_err_set(&err, IPK_EXIT_USAGE, "decision window '%g': model '%s' predicts other windows", dw,
			    ipk_model_id(m));
		goto fail;
	}
	plot.window = dw;
	plot.threshold = threshold >= 0 ? threshold : in->threshold[decide];
	if (state) {
		if (!(hist = ipk_histdb_new())) {
			ipk_err_set(&err, IPK_EXIT_OSERR, "load history: out of memory");
			goto fail;
		}
		if (ipk_histdb_load(hist, state, &err) < 0)
			goto fail;
		ipk_info(&cli, "state %s: history of %d user(s)", state, ipk_histdb_users(hist));
	}
	if (do_eval) {
		if (state)
			ipk_warn(&cli, "--state is not used by --eval: histories start empty so that scores do not depend on past runs");
		if (!(d = read_samples(&cli, argc - cli.optind, argv + cli.optind, &err)))
			goto fail;
		if (bt_path && !(bt = read_samples(&cli, 1, (char **)&bt_path, &err)))
			goto fail;
		struct ipk_eval_opts eo;
		ipk_eval_defaults(&eo);
		eo.baseline_train = bt;
		eo.recal_rate = recal;
		if (ipk_eval_model(m, d, &eo, &rep, &err) < 0)
			goto fail;
		if (!bt && !rep.train_users[0])
			ipk_warn(&cli, "no samples of the model's training users and no --baseline-train: "
				       "hybrid histogram and logistic regression left out");
		if (table)
			ipk_train_report_table(stdout, &rep);
		else if (ipk_train_report_records(&w, &rep, ipk_model_id(m), &err) < 0 && !ipk_writer_closed(&w))
			goto fail;
		if (plot.file && (plot_series(&plot, m, d, decide, recal, &err) < 0 || plot_draw(&plot, &err) < 0))
			goto fail;
	} else {
		if (!(pr = ipk_predictor_new(m, dw, threshold, expire, hist, &err)))
			goto fail;
		ipk_predictor_set_recal(pr, recal);
		sm.pr = pr;
		sm.model = ipk_model_id(m);
		sm.plot = &plot;
		sm.hist = hist;
		sm.state = state;
		sm.last_sync = ipk_mono();
		if (!strcmp(device, "cuda")) {
			if (ipk_predictor_use_cuda(pr, &err) < 0)
				goto fail;
			sm.batched = 1;
			ipk_info(&cli, "device cuda: the samples of each interval in one batched step");
		}
		if (cli.optind == argc && predict_file(&cli, "-", &sm, &w, &err) < 0)
			goto stream_fail;
		for (int i = cli.optind; i < argc; i++)
			if (predict_file(&cli, argv[i], &sm, &w, &err) < 0)
				goto stream_fail;
		if (state && ipk_histdb_sync(hist, state, &err) < 0)
			goto fail;
		if (plot.file && plot_draw(&plot, &err) < 0)
			goto fail;
	}
	if (!ipk_writer_closed(&w) && ipk_writer_finish(&w, &err) < 0 && !ipk_writer_closed(&w))
		goto fail;
	goto done;
stream_fail:
	if (state && hist) {
		struct ipk_err e2 = { 0 };
		if (ipk_histdb_sync(hist, state, &e2) < 0)
			ipk_warn(&cli, "%s", e2.msg);
	}
	if (ipk_writer_closed(&w))
		goto done;
fail:
	status = ipk_fail(&cli, &err);
done:
	stream_free(&sm);
	plot_free(&plot);
	ipk_train_report_free(&rep);
	ipk_dataset_free(d);
	ipk_dataset_free(bt);
	ipk_predictor_free(pr);
	ipk_histdb_free(hist);
	ipk_model_free(m);
	ipk_cli_free(&cli);
	return status;
}

int main(int argc, char **argv)
{
	return cmd_predict(argc, argv);
}
