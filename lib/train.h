/* train.h - from gathered samples (dataset.h) to a model file's contents:
 * split by user, normalisation fitted on the training users, LSTM training
 * with the epoch chosen on the validation users, decision thresholds, and
 * the evaluation of the model and the three baselines on the validation
 * users (all steps, and early steps: input within the last 2 s).
 *
 * Ownership: ipk_train_run() returns a model the caller frees with
 * ipk_model_free(); the report's rows live in the caller's struct and are
 * freed with ipk_train_report_free().
 */
#ifndef IPK_TRAIN_H
#define IPK_TRAIN_H

#include <stdio.h>

#include "dataset.h"
#include "eval.h"
#include "model.h"

struct ipk_train_opts {
	int hidden, layers, epochs;
	int nwin;
	double window[IPK_LSTM_MAX_OUT];
	struct ipk_lstm_train_opts lstm; /* batch, bptt, lr, clip, threads, seed */
	uint64_t seed;                   /* initial weights and the user split */
	const char *val_users;           /* comma-separated; NULL: a seeded quarter */
	int baselines;                   /* fit and score the baselines too */
	double early_idle;               /* "early" steps: idle <= this (default 2) */
};

void ipk_train_defaults(struct ipk_train_opts *o);

/* One row of the evaluation: predictor ("lstm", "idle-timer",
 * "hybrid-histogram", "logistic"), window, step subset ("all", "early"). */
struct ipk_eval_row {
	char predictor[24];
	double window;
	char subset[8];
	struct ipk_metrics m;
};

struct ipk_train_report {
	char train_users[512], val_users[512];
	long train_steps, val_steps;
	int best_epoch;
	double epoch_seconds;       /* mean wall time of one training epoch */
	struct ipk_eval_row *rows;
	int nrows;
};
void ipk_train_report_free(struct ipk_train_report *r);

/* Progress after each epoch: epoch (1-based), mean training loss, the
 * validation score used for selection (mean PR-AUC over windows). */
typedef void (*ipk_train_progress)(void *arg, int epoch, double loss, double val_score, double seconds);

/* Train on d. Returns the model (best validation epoch), or NULL with err
 * set: no user left for training or validation, an unknown validation
 * user, no labelled step (IPK_EXIT_DATAERR), out of memory. */
struct ipk_model *ipk_train_run(const struct ipk_train_opts *o, const struct ipk_dataset *d, ipk_train_progress cb,
				void *cbarg, struct ipk_train_report *rep, struct ipk_err *err);

/* Score model on every session of d (users it may have seen: the caller
 * chooses the data), against the idle timer; rows as for training, with
 * val_users listing the users scored. Returns 0, or -1 with err set: the
 * model's features are not this build's (IPK_EXIT_DATAERR), out of memory. */
int ipk_eval_model(const struct ipk_model *m, const struct ipk_dataset *d, double early_idle,
		   struct ipk_train_report *rep, struct ipk_err *err);

/* 0 when the model's features are this build's, in the same order; else -1
 * with err naming the model id and the first difference. */
int ipk_model_check_features(const struct ipk_model *m, struct ipk_err *err);

/* The report as a readable table on f (one row per predictor, window and
 * step subset; "-" where a metric does not apply). */
void ipk_train_report_table(FILE *f, const struct ipk_train_report *r);

struct ipk_writer;
/* The report as "eval" records (ipkit-records(7)): model, predictor, window,
 * steps, n, base_rate, roc_auc, pr_auc, brier, recall_at_p90, users; null
 * for a metric that does not apply. Returns 0, or -1 with err set. */
int ipk_train_report_records(struct ipk_writer *w, const struct ipk_train_report *r, const char *model_id,
			     struct ipk_err *err);

#endif
