/* collect.h - sources of activity samples and the loop that merges them.
 *
 * A source produces, for each interval, zero or more samples (one per
 * session it knows). The collector calls every source once per interval,
 * merges their samples by session (see sample.h) and writes one "sample"
 * record per session per interval.
 *
 * Time: the collector owns the clock. Live sources (libvirt, Prometheus,
 * evdev, NVML) measure the interval that just ended on the wall clock.
 * Replay sources report trace interval k when asked for interval k, so a
 * replay at --speed 1 lines up with live sources and at --speed 0 runs as fast
 * as the input can be read (then only replay sources may be used).
 *
 * Ownership: ipk_collect_run() borrows the sources; the caller frees each
 * with ipk_source_free(). Sources own everything they allocate.
 */
#ifndef IPK_COLLECT_H
#define IPK_COLLECT_H

#include "ipk.h"
#include "record.h"
#include "sample.h"

/* Diagnostics from a source that do not stop collection (a vanished domain,
 * dropped rows): the program decides how to show them. level: 0 warning,
 * 1 info, 2 debug. */
struct ipk_diag {
	void (*fn)(void *arg, int level, const char *msg);
	void *arg;
};
void ipk_diagf(const struct ipk_diag *d, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

struct ipk_source;

struct ipk_source_ops {
	const char *name; /* "libvirt", "replay", "prometheus", "evdev", "nvml" */
	int finite;       /* ends by itself (replay) */
	int live;         /* measures the wall clock: needs real-time pacing */
	/* Add the samples of the interval ending at ts (length interval) to set.
	 * Returns 0; IPK_SOURCE_DONE when a finite source has nothing more;
	 * -1 with err set when this interval failed (the collector reports
	 * err's message as a warning, unless the source left it empty because
	 * it already reported the same failure, and asks again next interval);
	 * IPK_SOURCE_FATAL with err set when
	 * the source cannot go on and collection must stop (bad data under
	 * --strict): ipk_collect_run() then returns -1 with that err. */
	int (*collect)(struct ipk_source *src, double ts, double interval, struct ipk_sample_set *set,
		       const struct ipk_diag *diag, struct ipk_err *err);
	/* Called once before the first interval, with the collector's start
	 * time, so live sources can take a baseline. May be NULL. */
	int (*start)(struct ipk_source *src, double ts, const struct ipk_diag *diag, struct ipk_err *err);
	void (*free)(struct ipk_source *src);
};

enum { IPK_SOURCE_DONE = 1, IPK_SOURCE_FATAL = -2 };

struct ipk_source {
	const struct ipk_source_ops *ops;
	char *label; /* for messages: "libvirt qemu+tcp://10.77.0.11/system" */
	void *priv;
};

/* Free a source (NULL is fine). */
void ipk_source_free(struct ipk_source *src);

struct ipk_collect_opts {
	double interval;  /* seconds, > 0 */
	double speed;     /* replay pace: 1 real time, N faster, 0 as fast as possible */
	double start_ts;  /* ts of the first interval's start; 0 = now */
	long count;       /* stop after this many intervals; 0 = until sources end */
	double duration;  /* stop after this many seconds of stream time; 0 = no limit */
	int emit_empty;   /* also emit sessions with no activity fields (default 1) */
};

/* Run the collection loop, writing sample records to out until every finite
 * source is done (and there is no live source), count or duration is
 * reached, or *stop becomes non-zero (a signal handler's flag). Source
 * failures go to diag and the stream goes on. Returns 0, or -1 with err set
 * when the output fails (a closed pipe: ipk_writer_closed(out)) or a source
 * returned IPK_SOURCE_FATAL (its err), or -1 with IPK_EXIT_UNAVAILABLE
 * when the run ended by count or duration and in every interval every
 * source failed (err names the last failure). */
int ipk_collect_run(struct ipk_source **src, int nsrc, const struct ipk_collect_opts *opts, struct ipk_writer *out,
		    const struct ipk_diag *diag, volatile int *stop, struct ipk_err *err);

#endif
