/* ip-train - train the idle-prediction LSTM from sample records. */
#define _GNU_SOURCE
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dataset.h"
#include "record.h"
#include "train.h"

enum {
	OPT_HIDDEN = 256, OPT_LAYERS, OPT_EPOCHS, OPT_WINDOWS, OPT_BATCH, OPT_BPTT, OPT_LR, OPT_CLIP, OPT_SEED,
	OPT_THREADS, OPT_ENSEMBLE, OPT_VAL_USERS, OPT_CROSS_FIT, OPT_FINAL_NET, OPT_EVAL, OPT_TABLE, OPT_NO_BASELINES,
	OPT_NO_STACK,
};

static const struct ipk_opt opts[] = {
	{ "output", required_argument, 'o', "FILE", "write the model to FILE (required)" },
	{ "hidden", required_argument, OPT_HIDDEN, "N", "LSTM hidden size (default 32)" },
	{ "layers", required_argument, OPT_LAYERS, "N", "LSTM layers (default 1)" },
	{ "epochs", required_argument, OPT_EPOCHS, "N", "training epochs; the best on validation is kept (default 8)" },
	{ "windows", required_argument, OPT_WINDOWS, "LIST", "prediction windows in seconds, ascending (default 5,10,30)" },
	{ "batch", required_argument, OPT_BATCH, "N", "sequences trained side by side per update (default 32)" },
	{ "bptt", required_argument, OPT_BPTT, "STEPS", "truncated back-propagation length (default 64)" },
	{ "lr", required_argument, OPT_LR, "RATE", "Adam learning rate (default 0.002)" },
	{ "clip", required_argument, OPT_CLIP, "NORM", "clip the gradient's norm to NORM, 0 for no clipping (default 1)" },
	{ "seed", required_argument, OPT_SEED, "N", "seed of weights, order and user split (default 1)" },
	{ "ensemble", required_argument, OPT_ENSEMBLE, "K", "train K networks from seeds SEED.. and average their logits, as one network of K x hidden units (default 1)" },
	{ "threads", required_argument, OPT_THREADS, "N", "training threads, 0 for one per CPU up to 2 (default 0)" },
	{ "val-users", required_argument, OPT_VAL_USERS, "LIST", "validation users, comma-separated (default: a seeded quarter)" },
	{ "cross-fit", no_argument, OPT_CROSS_FIT, NULL, "every user a fold: epoch, stacking stage and thresholds from out-of-fold outputs, final model on every user" },
	{ "final-net", required_argument, OPT_FINAL_NET, "MODE", "cross-fit: the final network is the folds' mean (mean, the default: one network of users x hidden units) or trained again on every user (refit)" },
	{ "eval", no_argument, OPT_EVAL, NULL, "write eval records for the model and the baselines on the validation users (or out of fold)" },
	{ "table", no_argument, OPT_TABLE, NULL, "write the evaluation as a readable table instead of records" },
	{ "no-baselines", no_argument, OPT_NO_BASELINES, NULL, "evaluate the model only" },
	{ "no-stack", no_argument, OPT_NO_STACK, NULL, "use the network's outputs as they are: no stacked output stage" },
	{ NULL, 0, 0, NULL, NULL },
};

static const struct ipk_prog prog = {
	.name = "ip-train",
	.synopsis = "[OPTION]... -o MODEL [FILE]...",
	.summary = "Train the idle-prediction LSTM from sample records (files or standard input), split by user.",
	.opts = opts,
};

static void progress(void *arg, const char *stage, int epoch, double loss, double vs, double secs)
{
	if (!stage)
		ipk_info(arg, "epoch %d: training loss %.5f, validation score %.4f, %.1f s", epoch, loss, vs, secs);
	else if (vs == vs)
		ipk_info(arg, "%s: epoch %d: training loss %.5f, score out of fold %.4f, %.1f s", stage, epoch, loss, vs,
			 secs);
	else
		ipk_info(arg, "%s: epoch %d: training loss %.5f, %.1f s", stage, epoch, loss, secs);
}

/* --windows: positive decimal seconds, ascending, comma-separated; an
 * empty element, a sign, a hex or an exponent form is refused. */
static int parse_windows(struct ipk_cli *cli, const char *a, struct ipk_train_opts *o)
{
	int n = 0;
	for (const char *t = a;; t++) {
		size_t len = strcspn(t, ",");
		char buf[32];
		double v = 0;
		int ok = len > 0 && len < sizeof(buf) && strspn(t, "0123456789.") == len && n < IPK_LSTM_MAX_OUT;
		if (ok) {
			memcpy(buf, t, len);
			buf[len] = 0;
			char *end;
			v = strtod(buf, &end);
			ok = !*end && v > 0 && v <= 86400 && (!n || v > o->window[n - 1]);
		}
		if (!ok)
			return ipk_cli_usage_error(cli, "invalid --windows '%s' (ascending seconds up to 86400, at most %d)",
						   a, IPK_LSTM_MAX_OUT), -1;
		o->window[n++] = v;
		t += len;
		if (!*t)
			break;
	}
	o->nwin = n;
	return 0;
}

static int cmd_train(int argc, char **argv)
{
	struct ipk_cli cli;
	struct ipk_train_opts o;
	ipk_train_defaults(&o);
	const char *out = NULL;
	int do_eval = 0, table = 0, final_net = 0, status = IPK_EXIT_OK;
	struct ipk_err err = { 0 };
	struct ipk_dataset *d = NULL;
	struct ipk_model *m = NULL;
	struct ipk_train_report rep = { 0 };
	struct ipk_writer w;

	if (ipk_cli_init(&cli, &prog, argc, argv) < 0) {
		status = ipk_fail(&cli, &cli.err);
		goto done;
	}
	int c;
	long lv;
	while ((c = ipk_cli_next(&cli)) >= 0) {
		const char *a = cli.optarg;
		int bad = 0;
		switch (c) {
		case 'o':
			out = a;
			break;
		case OPT_HIDDEN:
			bad = ipk_parse_long(&cli, "hidden", a, 1, IPK_LSTM_MAX_HIDDEN, &lv);
			o.hidden = (int)lv;
			break;
		case OPT_LAYERS:
			bad = ipk_parse_long(&cli, "layers", a, 1, IPK_LSTM_MAX_LAYERS, &lv);
			o.layers = (int)lv;
			break;
		case OPT_EPOCHS:
			bad = ipk_parse_long(&cli, "epochs", a, 0, 100000, &lv);
			o.epochs = (int)lv;
			break;
		case OPT_WINDOWS:
			bad = parse_windows(&cli, a, &o);
			break;
		case OPT_BATCH:
			bad = ipk_parse_long(&cli, "batch", a, 1, 4096, &lv);
			o.lstm.batch = (int)lv;
			break;
		case OPT_BPTT:
			bad = ipk_parse_long(&cli, "bptt", a, 1, 100000, &lv);
			o.lstm.bptt = (int)lv;
			break;
		case OPT_LR:
			bad = ipk_parse_double(&cli, "lr", a, 1e-9, 10, &o.lstm.lr);
			break;
		case OPT_CLIP:
			bad = ipk_parse_double(&cli, "clip", a, 0, 1e9, &o.lstm.clip);
			break;
		case OPT_SEED:
			bad = ipk_parse_long(&cli, "seed", a, 0, 0x7fffffffffffffffL, &lv);
			o.seed = (uint64_t)lv;
			break;
		case OPT_ENSEMBLE:
			bad = ipk_parse_long(&cli, "ensemble", a, 1, IPK_TRAIN_MAX_ENSEMBLE, &lv);
			o.ensemble = (int)lv;
			break;
		case OPT_THREADS:
			bad = ipk_parse_long(&cli, "threads", a, 0, 256, &lv);
			o.lstm.threads = (int)lv;
			break;
		case OPT_VAL_USERS:
			o.val_users = a;
			break;
		case OPT_CROSS_FIT:
			o.cross_fit = 1;
			break;
		case OPT_FINAL_NET:
			final_net = 1;
			if (!strcmp(a, "mean") || !strcmp(a, "refit"))
				o.final_refit = !strcmp(a, "refit");
			else
				bad = ipk_cli_usage_error(&cli, "final-net '%s': mean or refit", a);
			break;
		case OPT_EVAL:
			do_eval = 1;
			break;
		case OPT_TABLE:
			do_eval = table = 1;
			break;
		case OPT_NO_BASELINES:
			o.baselines = 0;
			break;
		case OPT_NO_STACK:
			o.stack = 0;
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
	if (!out) {
		status = (ipk_cli_usage_error(&cli, "no output: give -o MODEL"), IPK_EXIT_USAGE);
		goto done;
	}
	if (final_net && !o.cross_fit) {
		status = (ipk_cli_usage_error(&cli, "final-net: applies with --cross-fit only"), IPK_EXIT_USAGE);
		goto done;
	}
	signal(SIGPIPE, SIG_IGN);
	ipk_writer_init(&w, stdout);
	if (!(d = ipk_dataset_new())) {
		ipk_err_set(&err, IPK_EXIT_OSERR, "gather samples: out of memory");
		goto fail;
	}
	if (cli.optind == argc) {
		if (ipk_dataset_read(d, "-", ipk_cli_bad_line, &cli, &err) < 0)
			goto fail;
	}
	for (int i = cli.optind; i < argc; i++)
		if (ipk_dataset_read(d, argv[i], ipk_cli_bad_line, &cli, &err) < 0)
			goto fail;
	if (d->out_of_order)
		ipk_warn(&cli, "skipped %ld sample(s) not after their session's previous one", d->out_of_order);
	ipk_info(&cli, "%ld samples of %d sessions", d->samples, d->n);
	if (!(m = ipk_train_run(&o, d, progress, &cli, &rep, &err)))
		goto fail;
	if (rep.folds && o.final_refit)
		ipk_info(&cli, "cross-fitted over %d user folds (%s), best epoch %d, %.1f s per fold epoch, %.1f s per final epoch",
			 rep.folds, rep.train_users, rep.best_epoch, rep.fold_epoch_seconds, rep.epoch_seconds);
	else if (rep.folds)
		ipk_info(&cli,
			 "cross-fitted over %d user folds (%s), best epoch %d, %.1f s per fold epoch; final network: the folds' mean",
			 rep.folds, rep.train_users, rep.best_epoch, rep.fold_epoch_seconds);
	else
		ipk_info(&cli, "validation users %s, training users %s, best epoch %d, %.1f s per epoch", rep.val_users,
			 rep.train_users, rep.best_epoch, rep.epoch_seconds);
	if (ipk_model_save(m, out, &err) < 0)
		goto fail;
	if (do_eval) {
		if (table)
			ipk_train_report_table(stdout, &rep);
		else if (ipk_train_report_records(&w, &rep, ipk_model_id(m), &err) < 0 && !ipk_writer_closed(&w))
			goto fail;
	}
	if (!ipk_writer_closed(&w) && ipk_writer_finish(&w, &err) < 0 && !ipk_writer_closed(&w))
		goto fail;
	goto done;
fail:
	status = ipk_fail(&cli, &err);
done:
	ipk_train_report_free(&rep);
	ipk_model_free(m);
	ipk_dataset_free(d);
	ipk_cli_free(&cli);
	return status;
}

int main(int argc, char **argv)
{
	return cmd_train(argc, argv);
}
