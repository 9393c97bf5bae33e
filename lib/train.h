/* train.h - from gathered samples (dataset.h) to a model file's contents:
 * split by user, normalisation fitted on the training users, LSTM training
 * with the epoch chosen on the validation users, the stacked output stage
 * (model.h: the network combined with a logistic regression on the
 * features and the idle-gap histogram, both fitted on the training users,
 * by a per-window logistic
 * regression fitted on the validation users, or cross-fitted by user),
 * decision thresholds, and the evaluation of the model and the three
 * baselines on the validation users, or on every user out of fold (all
 * steps, and early steps: input within the last 2 s).
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
	int stack;                       /* stacked output stage (model.h), default 1 */
	double early_idle;               /* "early" steps: idle <= this (default 2) */
	int cross_fit;                   /* folds by user instead of validation users (below) */
	int ensemble;                    /* networks averaged, 1..IPK_TRAIN_MAX_ENSEMBLE (default 1; below) */
	int final_refit;                 /* cross-fit: retrain the final network instead of the fold mean */
};

/* Ensembles (o->ensemble = k > 1): k networks of o->hidden units are
 * trained side by side from seeds seed, seed+1, ... (weights and order),
 * each epoch for every member, and used as their average, one network of
 * k*hidden units (lstm.h: ipk_lstm_merge) whose output is the sigmoid of
 * the members' mean logit. Everything that uses the network (epoch choice,
 * stacking stage, thresholds, report) sees that average. k = 1 is the plain
 * network. Training takes k times as long. */
#define IPK_TRAIN_MAX_ENSEMBLE 8

void ipk_train_defaults(struct ipk_train_opts *o);

/* One row of the evaluation: predictor ("lstm", "idle-timer",
 * "hybrid-histogram", "logistic"), window, step subset ("all", "early"). */
struct ipk_eval_row {
	char predictor[24];
	double window;
	char subset[8];
	struct ipk_metrics m;
	/* ipk_eval_model, rows of a baseline with a Brier score: the model's
	 * Brier score minus this one's on the same steps, with a 95 % interval
	 * from a paired bootstrap over the scored sessions (eval.h; 1000
	 * resamples, fixed seed); NaN elsewhere */
	struct ipk_paired_diff brier_diff;
};
#define IPK_EVAL_BOOTSTRAP 1000

/* Lead time of one predictor and window (ipk_eval_model): over the idle
 * gaps of at least lead_min_gap seconds, the idle time (seconds since the
 * last input) at the first step, from the gap's last active step on, whose
 * score reaches the threshold. The model uses its own threshold; the idle
 * timer the lowest threshold reaching the model's precision there. */
struct ipk_lead_row {
	char predictor[24];
	double window;
	double threshold;   /* score threshold (seconds of idleness for the timer) */
	double precision;   /* all-step precision of score >= threshold */
	long gaps;          /* gaps considered */
	long fired;         /* of which reached the threshold before input resumed */
	double p10, p50, p90, mean; /* delay quantiles over the fired gaps, s */
	double within2;     /* share of the gaps fired within 2 s of the last input */
};

struct ipk_train_report {
	char train_users[512], val_users[512];
	long train_steps, val_steps;
	int best_epoch;
	double epoch_seconds;       /* mean wall time of one training epoch (cross-fit: of the refitted final
				       network's; 0 for the fold mean, which trains nothing) */
	int folds;                  /* cross-fit: the number of user folds; 0 otherwise */
	double fold_epoch_seconds;  /* cross-fit: mean wall time of one fold's epoch */
	struct ipk_eval_row *rows;
	int nrows;
	long val_sessions;          /* ipk_eval_model: the sessions scored */
	struct ipk_lead_row *lead;  /* ipk_eval_model only */
	int nlead;
};
void ipk_train_report_free(struct ipk_train_report *r);

/* Progress after each epoch: stage (NULL for a run with validation users;
 * with cross-fitting "fold I/N (USER out)" or "final (every user)"), epoch
 * (1-based, within the stage), mean training loss, the validation score used
 * for selection (train.c sel_score: all-step PR-AUC, early-step PR-AUC and
 * ROC-AUC, averaged; NaN for the final stage), wall seconds of the epoch. */
typedef void (*ipk_train_progress)(void *arg, const char *stage, int epoch, double loss, double val_score,
				   double seconds);

/* Train on d. Returns the model (best validation epoch), or NULL with err
 * set: no user left for training or validation, an unknown validation
 * user, validation users with cross_fit (IPK_EXIT_USAGE); fewer than two
 * users, no labelled step (IPK_EXIT_DATAERR); out of memory.
 *
 * Cross-fitting (o->cross_fit): every user is a fold. For each user, the
 * normalisation, the network (o->epochs epochs, its outputs on the user kept
 * after each), the logistic regression and the hybrid histogram are fitted
 * on the other users and predict that user. The epoch is the one with the
 * best mean of the folds' selection scores; the stacking stage of each
 * window is fitted on the out-of-fold outputs of every user, and the
 * thresholds on its probabilities there. The final model refits the
 * normalisation, the regression and the histogram on every user and keeps
 * those stacking weights. Its network is the fold mean: the folds' networks
 * at the chosen epoch, each moved onto the final normalisation
 * (ipk_lstm_renormalise) and merged as one network of users x ensemble x
 * hidden units (ipk_lstm_merge: the sigmoid of their mean logit), so the
 * stage is applied to the kind of output it was fitted on. Past
 * IPK_LSTM_MAX_HIDDEN units that is an error (IPK_EXIT_USAGE) unless
 * o->final_refit, which instead trains the network again on every user
 * for the chosen number of epochs from the same seed.
 * The report scores every user out of fold; the model's rows there come
 * from stacking stages fitted without the scored user (so no row is scored
 * by anything fitted on it). Memory: epochs x steps x windows floats, and
 * for the fold mean users x epochs x parameters doubles. */
struct ipk_model *ipk_train_run(const struct ipk_train_opts *o, const struct ipk_dataset *d, ipk_train_progress cb,
				void *cbarg, struct ipk_train_report *rep, struct ipk_err *err);

struct ipk_eval_opts {
	double early_idle;                        /* "early": idle <= this (default 2) */
	double lead_min_gap;                      /* gaps for the lead time, s (default 60) */
	const struct ipk_dataset *baseline_train; /* fit the baselines on these; NULL: see below */
	double recal_rate;                        /* the model's per-user recalibration (recal.h; default IPK_RECAL_RATE, 0 off) */
};
void ipk_eval_defaults(struct ipk_eval_opts *o);

/* Score model on d: the model, the idle timer, and, when there is data to
 * fit them on, the hybrid histogram and logistic regression, on the same
 * steps (all, early), plus the lead time (struct ipk_lead_row) per window.
 * Sessions of the users the model names as its training users (its meta
 * text, "train users A,B;") are not scored; the baselines are fitted on
 * o->baseline_train when given, else on those sessions, else left out.
 * rep->val_users lists the users scored, rep->train_users those skipped.
 * Returns 0, or -1 with err set: the model's features are not this build's
 * (IPK_EXIT_DATAERR), a baseline cannot be fitted (IPK_EXIT_DATAERR), out of
 * memory. */
int ipk_eval_model(const struct ipk_model *m, const struct ipk_dataset *d, const struct ipk_eval_opts *o,
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
 * for a metric that does not apply; then one "lead" record per lead row:
 * model, predictor, window, threshold, precision, gaps, fired, delay_p10,
 * delay_p50, delay_p90, delay_mean, within_2s, users. Returns 0, or -1 with
 * err set. */
int ipk_train_report_records(struct ipk_writer *w, const struct ipk_train_report *r, const char *model_id,
			     struct ipk_err *err);

#endif
