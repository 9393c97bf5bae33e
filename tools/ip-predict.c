/* ip-predict - probability that each session's client stays idle, per
 * sample, from an LSTM model. */
#define _GNU_SOURCE
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dataset.h"
#include "predict.h"
#include "record.h"
#include "train.h"

enum { OPT_WINDOW = 256, OPT_THRESHOLD, OPT_EXPIRE, OPT_EVAL, OPT_TABLE };

static const struct ipk_opt opts[] = {
	{ "model", required_argument, 'm', "FILE", "the model to use (required)" },
	{ "window", required_argument, OPT_WINDOW, "SECONDS", "window the decision is taken on (default: the model's first)" },
	{ "threshold", required_argument, OPT_THRESHOLD, "P", "decide \"above\" when p >= P (default: the model's threshold)" },
	{ "expire", required_argument, OPT_EXPIRE, "SECONDS", "forget a session silent for SECONDS of stream time (default 300)" },
	{ "eval", no_argument, OPT_EVAL, NULL, "score the model and the idle timer on the input instead: eval records" },
	{ "table", no_argument, OPT_TABLE, NULL, "with --eval: a readable table instead of records" },
	{ NULL, 0, 0, NULL, NULL },
};

static const struct ipk_prog prog = {
	.name = "ip-predict",
	.synopsis = "[OPTION]... -m MODEL [FILE]...",
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

/* Stream one input: predictions for samples, everything else passed on. */
static int predict_file(struct ipk_cli *cli, const char *path, struct ipk_predictor *pr, const char *model,
			struct ipk_writer *w, struct ipk_err *err)
{
	struct ipk_reader *r = ipk_reader_open(path, err);
	if (!r)
		return -1;
	struct ipk_record rec;
	struct ipk_sample s;
	struct ipk_prediction p;
	int rc = 0;
	for (;;) {
		struct ipk_err e2 = { 0 };
		enum ipk_read_result res = ipk_reader_next(r, &rec, &e2);
		if (res == IPK_READ_EOF)
			break;
		if (res == IPK_READ_ERROR) {
			rc = ipk_err_set(err, e2.code, "%s", e2.msg);
			break;
		}
		if (res == IPK_READ_BAD) {
			if (cli->strict) {
				rc = ipk_err_set(err, e2.code, "%s", e2.msg);
				break;
			}
			ipk_warn(cli, "%s", e2.msg);
			continue;
		}
		if (strcmp(rec.type, "sample") != 0) {
			if (ipk_write_raw(w, rec.line, rec.len, err) < 0) {
				rc = -1;
				break;
			}
			continue;
		}
		if (ipk_sample_from_json(rec.json, &s, &e2) < 0) {
			ipk_err_set(&e2, IPK_EXIT_DATAERR, "input '%s' line %ld: %.900s", ipk_reader_name(r), rec.lineno,
				    e2.msg);
			if (cli->strict) {
				rc = ipk_err_set(err, e2.code, "%s", e2.msg);
				break;
			}
			ipk_warn(cli, "%s", e2.msg);
			continue;
		}
		int got = ipk_predictor_step(pr, &s, &p, err);
		if (got < 0) {
			rc = -1;
			break;
		}
		if (!got) {
			ipk_warn(cli, "input '%s' line %ld: sample of '%s' not after its previous one, skipped",
				 ipk_reader_name(r), rec.lineno, s.session);
			continue;
		}
		cJSON *o = prediction_json(&s, &p, model);
		if (!o) {
			rc = ipk_err_set(err, IPK_EXIT_OSERR, "write prediction: out of memory");
			break;
		}
		int wr = ipk_write(w, o, err);
		cJSON_Delete(o);
		if (wr < 0) {
			rc = -1;
			break;
		}
	}
	ipk_reader_close(r);
	return rc;
}

static int cmd_predict(int argc, char **argv)
{
	struct ipk_cli cli;
	const char *model_path = NULL;
	double window = -1, threshold = -1, expire = 300;
	int do_eval = 0, table = 0, status = IPK_EXIT_OK;
	struct ipk_err err = { 0 };
	struct ipk_model *m = NULL;
	struct ipk_predictor *pr = NULL;
	struct ipk_dataset *d = NULL;
	struct ipk_train_report rep = { 0 };
	struct ipk_writer w;

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
		case OPT_WINDOW:
			bad = ipk_parse_double(&cli, "window", a, 1e-3, 1e9, &window);
			break;
		case OPT_THRESHOLD:
			bad = ipk_parse_double(&cli, "threshold", a, 0, 1, &threshold);
			break;
		case OPT_EXPIRE:
			bad = ipk_parse_double(&cli, "expire", a, 1e-3, 1e9, &expire);
			break;
		case OPT_EVAL:
			do_eval = 1;
			break;
		case OPT_TABLE:
			table = 1;
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
	if (!model_path) {
		status = (ipk_cli_usage_error(&cli, "no model: give --model FILE"), IPK_EXIT_USAGE);
		goto done;
	}
	if (table && !do_eval) {
		status = (ipk_cli_usage_error(&cli, "--table needs --eval"), IPK_EXIT_USAGE);
		goto done;
	}
	signal(SIGPIPE, SIG_IGN);
	ipk_writer_init(&w, stdout);
	if (!(m = ipk_model_load(model_path, &err)))
		goto fail;
	ipk_info(&cli, "model %s: %s", ipk_model_id(m), ipk_model_info(m)->meta);
	if (do_eval) {
		if (!(d = ipk_dataset_new())) {
			ipk_err_set(&err, IPK_EXIT_OSERR, "gather samples: out of memory");
			goto fail;
		}
		long bad = 0;
		if (cli.optind == argc && ipk_dataset_read(d, "-", &bad, &err) < 0)
			goto fail;
		for (int i = cli.optind; i < argc; i++)
			if (ipk_dataset_read(d, argv[i], &bad, &err) < 0)
				goto fail;
		if (bad && cli.strict) {
			ipk_err_set(&err, IPK_EXIT_DATAERR, "read samples: %ld bad sample line(s)", bad);
			goto fail;
		}
		if (bad)
			ipk_warn(&cli, "skipped %ld bad sample line(s)", bad);
		if (ipk_eval_model(m, d, 2.0, &rep, &err) < 0)
			goto fail;
		if (table)
			ipk_train_report_table(stdout, &rep);
		else if (ipk_train_report_records(&w, &rep, ipk_model_id(m), &err) < 0 && !ipk_writer_closed(&w))
			goto fail;
	} else {
		if (!(pr = ipk_predictor_new(m, window >= 0 ? window : ipk_model_info(m)->window[0], threshold, expire,
					     &err)))
			goto fail;
		if (cli.optind == argc && predict_file(&cli, "-", pr, ipk_model_id(m), &w, &err) < 0)
			goto stream_fail;
		for (int i = cli.optind; i < argc; i++)
			if (predict_file(&cli, argv[i], pr, ipk_model_id(m), &w, &err) < 0)
				goto stream_fail;
	}
	if (!ipk_writer_closed(&w) && ipk_writer_finish(&w, &err) < 0 && !ipk_writer_closed(&w))
		goto fail;
	goto done;
stream_fail:
	if (ipk_writer_closed(&w))
		goto done;
fail:
	status = ipk_fail(&cli, &err);
done:
	ipk_train_report_free(&rep);
	ipk_dataset_free(d);
	ipk_predictor_free(pr);
	ipk_model_free(m);
	ipk_cli_free(&cli);
	return status;
}

int main(int argc, char **argv)
{
	return cmd_predict(argc, argv);
}
