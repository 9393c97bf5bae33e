/* dataset.h - sample records gathered per session for training and
 * evaluation: each session's timestamps, event counts, raw features
 * (feature.h) and idle times, in stream order.
 *
 * The user_* features (feature.h) come from per-user histories the dataset
 * builds as it reads, starting empty: a sample only sees the gaps of its
 * user that ended before it, in the order samples were added.
 *
 * Ownership: a dataset from ipk_dataset_new() owns its series and their
 * arrays; free it with ipk_dataset_free() (NULL is fine). Pointers into a
 * series stay valid until the next ipk_dataset_add() or the free.
 */
#ifndef IPK_DATASET_H
#define IPK_DATASET_H

#include "feature.h"
#include "sample.h"
#include "userhist.h"

struct ipk_series {
	char session[128];
	char user[64];      /* "" when the records carry none */
	long n;
	double *ts;         /* [n] end of each interval */
	float *events;      /* [n] input events, NaN when the sample lacks them */
	float *raw;         /* [n][IPK_FEAT_COUNT] raw features */
	double *idle;       /* [n] seconds since the last input (ipk_feat_idle) */
	long *seq;          /* [n] the sample's place among all the dataset's samples (stream order) */
	/* private */
	long cap;
	struct ipk_feat_state *fs;
	struct ipk_hist *uh;   /* the user's history in the dataset's table, or NULL */
};

struct ipk_dataset {
	struct ipk_series *s;
	int n;
	long samples;       /* samples added */
	long out_of_order;  /* samples refused: not after their session's previous */
	/* private */
	struct ipk_histdb *hist; /* per-user histories, built from the samples in stream order */
	int cap;
	int *hash;
	int hcap;
};

/* An empty dataset, or NULL when out of memory. */
struct ipk_dataset *ipk_dataset_new(void);
void ipk_dataset_free(struct ipk_dataset *d);

/* Add one sample to its session's series (created on first sight).
 * Returns 0 (a sample not after its session's previous one is counted in
 * out_of_order and skipped), or -1 with err set when out of memory. */
int ipk_dataset_add(struct ipk_dataset *d, const struct ipk_sample *s, struct ipk_err *err);

/* What ipk_dataset_read() does with a bad line: msg names the input, the
 * line and the fault ("input 'F' line N: ..."). Return 0 to skip the line,
 * -1 to stop reading there (--strict). */
typedef int (*ipk_dataset_bad_fn)(void *arg, const char *msg);

/* Read every "sample" record of a record file (path, "-" for standard
 * input) into d; other records are ignored. A bad line (not a record, or a
 * sample record with a missing or invalid field) is passed to bad(arg, ..)
 * (NULL: skipped silently). Returns 0, or -1 with err set: the file cannot
 * be opened or read, out of memory, or bad() asked to stop (err then holds
 * that line's message with code IPK_EXIT_DATAERR). */
int ipk_dataset_read(struct ipk_dataset *d, const char *path, ipk_dataset_bad_fn bad, void *arg,
		     struct ipk_err *err);

/* The dataset's distinct users ("" included when a series has none),
 * sorted, into users (at most max). Returns how many there are. */
int ipk_dataset_users(const struct ipk_dataset *d, char (*users)[64], int max);

#endif
