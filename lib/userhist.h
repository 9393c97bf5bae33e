/* userhist.h - per-user activity history: the distribution of a user's past
 * idle gaps and how much of the time the user was active, kept in memory
 * while samples stream and, optionally, in a state directory shared across
 * runs and processes (ip-predict --state DIR).
 *
 * A gap is the time between two consecutive intervals with input of one
 * session (1 s for continuous activity), as in eval.h's hybrid histogram.
 * Gaps are counted in IPK_HIST_BINS bins: bin b < 128 holds gaps that round
 * to b seconds; bin b >= 128 holds gaps in [128 * 2^((b-128)/16),
 * 128 * 2^((b-127)/16)) seconds (16 bins per octave, the last bin open).
 * Counts are doubles so that histories from several runs merge exactly.
 *
 * State directory: one file DIR/history.jsonl, one JSON object per line
 * and user:
 *   {"type":"history","v":1,"user":"NAME","gaps":G,"intervals":N,
 *    "active":A,"bins":[[b,count],...],
 *    "calibration":{"model":"ID","windows":[W,...],"a":[..],"b":[..],
 *                   "labels":[..]}}
 * (only non-empty bins, ascending; "calibration" only once the user has
 * one), guarded by DIR/history.lock: readers
 * take a shared flock(2), writers an exclusive one, and a writer re-reads
 * the file under its lock, adds what this process observed since its last
 * load or sync (never its whole in-memory counts, so two processes never
 * count the same gap twice; a calibration of the same model and windows
 * gets this process's change to a, b and labels added, one of another model
 * is replaced by this process's), writes DIR/history.jsonl.tmp.PID, fsyncs it and
 * renames it over the file. Unknown fields are ignored; a line that is not
 * a history record of version 1 is refused (IPK_EXIT_DATAERR).
 *
 * Ownership: ipk_histdb_new() returns a table the caller frees with
 * ipk_histdb_free() (NULL is fine); it owns every struct ipk_hist it hands
 * out, whose address stays valid until the free.
 */
#ifndef IPK_USERHIST_H
#define IPK_USERHIST_H

#include "ipk.h"

#define IPK_HIST_BINS 256
#define IPK_CALIB_MAX_WIN 16

/* A user's online recalibration of one model's probabilities (recal.h):
 * p' = sigmoid(a[k] * logit(p) + b[k]) for window k. */
struct ipk_calib {
	char model[96];               /* id of the model it belongs to; "" none yet */
	int nwin;
	double window[IPK_CALIB_MAX_WIN];
	double a[IPK_CALIB_MAX_WIN], b[IPK_CALIB_MAX_WIN];
	double labels[IPK_CALIB_MAX_WIN]; /* outcomes learned from */
};

struct ipk_hist {
	char user[64];
	double gaps;                  /* gaps counted */
	double intervals, active;     /* intervals seen with a known event count, of which with input */
	double bin[IPK_HIST_BINS];
	struct ipk_calib cal;
	/* private: the counts at the last load or sync (what is already on disk) */
	double base_gaps, base_intervals, base_active;
	double base_bin[IPK_HIST_BINS];
	struct ipk_calib base_cal;
};

/* The bin of a gap of g seconds (g > 0), and the representative length of
 * bin b in seconds (its integer value or its geometric middle). */
int ipk_hist_bin(double g);
double ipk_hist_bin_value(int b);

void ipk_hist_add_gap(struct ipk_hist *h, double g);
void ipk_hist_add_interval(struct ipk_hist *h, int active);

/* P(gap > x) over the gaps counted (bins whose value exceeds x), or NaN
 * when no gap was counted. */
double ipk_hist_survival(const struct ipk_hist *h, double x);
/* The hybrid-histogram probability that a gap already e seconds long lasts
 * past e + w: S(e + w) / S(e); 1 when S(e) is 0; NaN without gaps. */
double ipk_hist_score(const struct ipk_hist *h, double e, double w);

/* c as the identity calibration (a = 1, b = 0, no labels) of model and its
 * nwin <= IPK_CALIB_MAX_WIN windows. */
void ipk_calib_reset(struct ipk_calib *c, const char *model, int nwin, const double *window);

/* The user's calibration for this model and its windows: c itself, reset
 * to the identity (no labels) when it belongs to another model or other
 * windows. nwin <= IPK_CALIB_MAX_WIN. */
struct ipk_calib *ipk_calib_for(struct ipk_calib *c, const char *model, int nwin, const double *window);

struct ipk_histdb;

/* An empty table, or NULL when out of memory. */
struct ipk_histdb *ipk_histdb_new(void);
void ipk_histdb_free(struct ipk_histdb *db);

/* The history of user (created empty on first use), or NULL when out of
 * memory or user is "" (no user, no history). */
struct ipk_hist *ipk_histdb_get(struct ipk_histdb *db, const char *user);
int ipk_histdb_users(const struct ipk_histdb *db);

/* Load DIR/history.jsonl into db (users already in db are replaced by the
 * file's counts); a missing file is an empty history. The directory is
 * created when absent. Returns 0, or -1 with err set: the directory or lock
 * cannot be made (IPK_EXIT_CANTCREAT), the file cannot be read
 * (IPK_EXIT_IOERR), or it is not a history file (IPK_EXIT_DATAERR). */
int ipk_histdb_load(struct ipk_histdb *db, const char *dir, struct ipk_err *err);

/* Merge what db observed since its last load or sync into DIR/history.jsonl
 * under the exclusive lock (see above); db then holds the merged counts.
 * Returns 0, or -1 with err set (IPK_EXIT_CANTCREAT, IPK_EXIT_IOERR,
 * IPK_EXIT_DATAERR as for load). */
int ipk_histdb_sync(struct ipk_histdb *db, const char *dir, struct ipk_err *err);

#endif
