#define _GNU_SOURCE
#include "collect.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void ipk_diagf(const struct ipk_diag *d, int level, const char *fmt, ...)
{
	if (!d || !d->fn)
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	d->fn(d->arg, level, msg);
}

void ipk_source_free(struct ipk_source *src)
{
	if (!src)
		return;
	if (src->ops && src->ops->free)
		src->ops->free(src);
	free(src->label);
	free(src);
}

/* Sleep until the monotonic clock reaches t (seconds); returns early on a
 * signal so the caller can check its stop flag. */
static void sleep_until(double t)
{
	struct timespec ts;
	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

int ipk_collect_run(struct ipk_source **src, int nsrc, const struct ipk_collect_opts *opts, struct ipk_writer *out,
		    const struct ipk_diag *diag, volatile int *stop, struct ipk_err *err)
{
	int live = 0, finite = 0;
	for (int i = 0; i < nsrc; i++) {
		live |= src[i]->ops->live;
		finite += src[i]->ops->finite;
	}
	if (live && opts->speed != 1.0)
		return ipk_err_set(err, IPK_EXIT_USAGE, "--speed other than 1 needs replay sources only");
	char *done = calloc(nsrc ? nsrc : 1, 1);
	if (!done)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");

	double start = opts->start_ts > 0 ? opts->start_ts : ipk_now();
	double mono0 = ipk_mono();
	for (int i = 0; i < nsrc; i++) {
		struct ipk_err serr = { 0 };
		if (src[i]->ops->start && src[i]->ops->start(src[i], start, diag, &serr) < 0)
			ipk_diagf(diag, 0, "%s", serr.msg);
	}

	struct ipk_sample_set set = { 0 };
	int rc = 0, finite_left = finite;
	for (long k = 0; !(stop && *stop); k++) {
		if (opts->count > 0 && k >= opts->count)
			break;
		if (opts->duration > 0 && k * opts->interval >= opts->duration - 1e-9)
			break;
		if (!live && finite > 0 && finite_left == 0)
			break;
		double ts = start + (double)(k + 1) * opts->interval;
		if (opts->speed > 0)
			sleep_until(mono0 + (double)(k + 1) * opts->interval / opts->speed);
		if (stop && *stop)
			break;
		ipk_sample_set_clear(&set);
		for (int i = 0; i < nsrc; i++) {
			if (done[i])
				continue;
			struct ipk_err serr = { 0 };
			int r = src[i]->ops->collect(src[i], ts, opts->interval, &set, diag, &serr);
			if (r == IPK_SOURCE_DONE) {
				done[i] = 1;
				finite_left--;
			} else if (r < 0) {
				ipk_diagf(diag, 0, "%s", serr.msg);
			}
		}
		for (int j = 0; j < set.n; j++) {
			struct ipk_sample *s = &set.v[j];
			s->ts = ts;
			s->interval = opts->interval;
			if (!opts->emit_empty && s->mask == 0)
				continue;
			cJSON *o = ipk_sample_to_json(s);
			if (!o) {
				rc = ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
				goto out;
			}
			int w = ipk_write(out, o, err);
			cJSON_Delete(o);
			if (w < 0) {
				rc = -1;
				goto out;
			}
		}
	}
out:
	ipk_sample_set_free(&set);
	free(done);
	return rc;
}
