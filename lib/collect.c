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
	char last_fail[sizeof(err->msg)] = ""; /* the last source failure reported */
	for (int i = 0; i < nsrc; i++) {
		struct ipk_err serr = { 0 };
		if (src[i]->ops->start && src[i]->ops->start(src[i], start, diag, &serr) < 0 && serr.msg[0]) {
			ipk_diagf(diag, 0, "%s", serr.msg);
			snprintf(last_fail, sizeof(last_fail), "%s", serr.msg);
		}
	}

	struct ipk_sample_set set = { 0 };
	char line[IPK_SAMPLE_TEXT_MAX];
	int rc = 0, finite_left = finite;
	long k, all_failed = 0; /* intervals in which every source asked failed */
	for (k = 0; !(stop && *stop); k++) {
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
		int asked = 0, failed = 0;
		for (int i = 0; i < nsrc; i++) {
			if (done[i])
				continue;
			struct ipk_err serr = { 0 };
			asked++;
			int r = src[i]->ops->collect(src[i], ts, opts->interval, &set, diag, &serr);
			if (r == IPK_SOURCE_DONE) {
				done[i] = 1;
				finite_left--;
			} else if (r == IPK_SOURCE_FATAL) {
				if (err)
					*err = serr;
				rc = -1;
				goto out;
			} else if (r < 0) {
				failed++;
				if (serr.msg[0]) {
					ipk_diagf(diag, 0, "%s", serr.msg);
					snprintf(last_fail, sizeof(last_fail), "%s", serr.msg);
				}
			}
		}
		if (asked > 0 && failed == asked)
			all_failed++;
		/* One interval's samples are one moment: flush them together, not
		 * line by line (at --speed 0 a write per line would dominate). */
		int flush_each = out->flush_each;
		out->flush_each = 0;
		for (int j = 0; j < set.n && rc == 0; j++) {
			struct ipk_sample *s = &set.v[j];
			s->ts = ts;
			s->interval = opts->interval;
			if (!opts->emit_empty && s->mask == 0)
				continue;
			size_t len = ipk_sample_format(s, line, sizeof(line));
			rc = ipk_write_raw(out, line, len, err);
		}
		out->flush_each = flush_each;
		if (rc == 0 && flush_each)
			rc = ipk_writer_flush(out, err);
		if (rc < 0)
			goto out;
	}
	if (k > 0 && all_failed == k && !(stop && *stop))
		rc = ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "no data from any source in %ld interval%s: %s", k,
				 k == 1 ? "" : "s", last_fail[0] ? last_fail : "every source failed");
out:
	ipk_sample_set_free(&set);
	free(done);
	return rc;
}
