/* test-recal: the per-user online recalibration (recal.h). Its outcomes are
 * eval.h's labels (counted and summed against ipk_label_windows on a
 * session with idle runs, input and samples that do not say their events);
 * it starts as the identity and moves towards what the user does; rate 0 or
 * no user leaves the model's probabilities alone; a calibration of another
 * model or other windows starts afresh; the state directory keeps it and
 * adds two processes' learning; a bad calibration in the file is refused;
 * and the streaming predictor, one sample or a batch at a time, gives
 * bit for bit the probabilities that ipk_predict_dataset() (the
 * evaluation's path) gives for the same samples in the same order. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "eval.h"
#include "feature.h"
#include "predict.h"
#include "recal.h"

static const double WIN[2] = { 2, 5 };

/* events of step t of the labelled session: idle runs, input, unknowns;
 * idle from step 292, so that no outcome is known before the session ends
 * that eval.h leaves out (a window running past the last sample) */
static float events_at(int t)
{
	if (t >= 292)
		return 0;
	if (t % 17 == 9)
		return NAN;
	return (t % 11 < 3 || t % 29 == 0) ? (float)(1 + t % 4) : 0.0f;
}

static void test_labels(void)
{
	enum { N = 300 };
	double ts[N];
	float ev[N], y[N * 2];
	for (int t = 0; t < N; t++) {
		ts[t] = 1000 + t;
		ev[t] = events_at(t);
	}
	ipk_label_windows(ts, ev, N, WIN, 2, y);
	/* with z = 0 (p = 0.5) and a tiny rate, b moves by -rate * sum(0.5 - y)
	 * to first order, and a does not move */
	const double rate = 1e-9;
	struct ipk_calib c;
	ipk_calib_reset(&c, "m", 2, WIN);
	struct ipk_recal_queue *q = ipk_recal_queue_new();
	int unchanged = 1;
	for (int t = 0; t < N; t++) {
		float p[2] = { 0.5f, 0.5f };
		ipk_recal_step(q, &c, rate, ts[t], ev[t], p);
		unchanged &= fabsf(p[0] - 0.5f) < 1e-6f && fabsf(p[1] - 0.5f) < 1e-6f;
	}
	CHECK("p = 0.5 stays 0.5 at a tiny rate", unchanged);
	for (int k = 0; k < 2; k++) {
		double n = 0, sum = 0;
		for (int t = 0; t < N; t++)
			if (y[t * 2 + k] >= 0) {
				n++;
				sum += 0.5 - y[t * 2 + k];
			}
		char name[96];
		snprintf(name, sizeof(name), "window %g: one update per eval label", WIN[k]);
		CHECK(name, c.labels[k] == n && n > 100);
		snprintf(name, sizeof(name), "window %g: the updates' outcomes are eval's labels", WIN[k]);
		CHECK_NEAR(name, c.b[k], -rate * sum, 1e-13); /* one label moves b by 1e-9 */
		snprintf(name, sizeof(name), "window %g: a does not move at z = 0", WIN[k]);
		CHECK(name, c.a[k] == 1);
	}
	CHECK("what is pending at the end is the last window's worth", ipk_recal_pending(q) == 5);
	ipk_recal_queue_free(q);
}

static void test_learning(void)
{
	struct ipk_calib c;
	ipk_calib_reset(&c, "m", 2, WIN);
	struct ipk_recal_queue *q = ipk_recal_queue_new();
	/* the model says 0.3 but the user never touches the client */
	float first[2] = { 0.3f, 0.3f }, p[2];
	ipk_recal_step(q, &c, 0.05, 1, 0, first);
	CHECK("starts as the identity", fabsf(first[0] - 0.3f) < 1e-6f && fabsf(first[1] - 0.3f) < 1e-6f);
	for (int t = 2; t <= 400; t++) {
		p[0] = p[1] = 0.3f;
		ipk_recal_step(q, &c, 0.05, t, 0, p);
	}
	CHECK("an idle user's probabilities rise", p[0] > 0.8f && p[1] > 0.8f);
	CHECK("learned from every settled step", c.labels[0] == 398 && c.labels[1] == 395);
	ipk_recal_queue_free(q);

	struct ipk_recal_queue *q0 = ipk_recal_queue_new();
	p[0] = p[1] = 0.3f;
	ipk_recal_step(q0, &c, 0, 500, 0, p);
	CHECK("rate 0: the model's probabilities as they are", p[0] == 0.3f && p[1] == 0.3f && !ipk_recal_pending(q0));
	ipk_recal_step(q0, NULL, 0.05, 501, 0, p);
	CHECK("no user: as they are", p[0] == 0.3f && !ipk_recal_pending(q0));
	ipk_recal_queue_free(q0);

	double a0 = c.a[0];
	CHECK("same model and windows: kept", ipk_calib_for(&c, "m", 2, WIN) == &c && c.a[0] == a0);
	ipk_calib_for(&c, "other", 2, WIN);
	CHECK("another model: identity", c.a[0] == 1 && c.b[0] == 0 && c.labels[0] == 0 && !strcmp(c.model, "other"));
	c.b[1] = 2;
	double w2[2] = { 2, 6 };
	ipk_calib_for(&c, "other", 2, w2);
	CHECK("other windows: identity", c.b[1] == 0 && c.window[1] == 6);
}

static void test_state(void)
{
	char dir[] = "/tmp/test-recal-XXXXXX";
	CHECK("temp dir", mkdtemp(dir) != NULL);
	struct ipk_err err = { 0 };
	struct ipk_histdb *a = ipk_histdb_new(), *b = ipk_histdb_new(), *c = ipk_histdb_new();
	struct ipk_calib *ca = ipk_calib_for(&ipk_histdb_get(a, "ann")->cal, "m1", 2, WIN);
	ca->a[0] = 1.25;
	ca->b[1] = -0.125;
	ca->labels[0] = ca->labels[1] = 10;
	CHECK("sync a calibration", ipk_histdb_sync(a, dir, &err) == 0);
	CHECK("load it twice", ipk_histdb_load(b, dir, &err) == 0 && ipk_histdb_load(c, dir, &err) == 0);
	struct ipk_calib *cb = &ipk_histdb_get(b, "ann")->cal, *cc = &ipk_histdb_get(c, "ann")->cal;
	CHECK("round trip", !strcmp(cb->model, "m1") && cb->nwin == 2 && cb->window[1] == 5 && cb->a[0] == 1.25 &&
				    cb->b[1] == -0.125 && cb->labels[1] == 10);
	cb->b[0] += 0.5;
	cb->labels[0] += 3;
	cc->b[0] += 0.25;
	cc->labels[0] += 2;
	CHECK("two processes sync", ipk_histdb_sync(b, dir, &err) == 0 && ipk_histdb_sync(c, dir, &err) == 0);
	struct ipk_histdb *d = ipk_histdb_new();
	CHECK("load merged", ipk_histdb_load(d, dir, &err) == 0);
	struct ipk_calib *cd = &ipk_histdb_get(d, "ann")->cal;
	CHECK("both processes' learning added once", cd->b[0] == 0.75 && cd->labels[0] == 15 && cd->a[0] == 1.25);
	/* a process running another model replaces the calibration */
	struct ipk_calib *ce = ipk_calib_for(&ipk_histdb_get(d, "ann")->cal, "m2", 2, WIN);
	ce->b[0] = 0.5;
	ce->labels[0] = 1;
	CHECK("sync another model's", ipk_histdb_sync(d, dir, &err) == 0);
	struct ipk_histdb *e = ipk_histdb_new();
	CHECK("reload", ipk_histdb_load(e, dir, &err) == 0);
	struct ipk_calib *cf = &ipk_histdb_get(e, "ann")->cal;
	CHECK("another model's replaces it", !strcmp(cf->model, "m2") && cf->b[0] == 0.5 && cf->labels[0] == 1);

	char path[256];
	snprintf(path, sizeof(path), "%s/history.jsonl", dir);
	FILE *f = fopen(path, "w");
	fputs("{\"type\":\"history\",\"v\":1,\"user\":\"x\",\"gaps\":0,\"intervals\":0,\"active\":0,\"bins\":[],"
	      "\"calibration\":{\"model\":\"m\",\"windows\":[5,10],\"a\":[1],\"b\":[0,0],\"labels\":[0,0]}}\n",
	      f);
	fclose(f);
	struct ipk_histdb *g = ipk_histdb_new();
	struct ipk_err e2 = { 0 };
	CHECK("a calibration with too few values refused", ipk_histdb_load(g, dir, &e2) < 0 &&
								 e2.code == IPK_EXIT_DATAERR &&
								 strstr(e2.msg, "line 1: bad calibration"));
	unlink(path);
	snprintf(path, sizeof(path), "%s/history.lock", dir);
	unlink(path);
	rmdir(dir);
	ipk_histdb_free(a);
	ipk_histdb_free(b);
	ipk_histdb_free(c);
	ipk_histdb_free(d);
	ipk_histdb_free(e);
	ipk_histdb_free(g);
}

static struct ipk_model *model(void)
{
	struct ipk_err err = { 0 };
	struct ipk_lstm_shape sh = { .n_in = IPK_FEAT_COUNT, .hidden = 6, .layers = 1, .n_out = 2 };
	struct ipk_lstm *net = ipk_lstm_new(&sh, &err);
	ipk_lstm_init(net, 3);
	struct ipk_model_info in;
	memset(&in, 0, sizeof(in));
	in.nwin = 2;
	in.window[0] = WIN[0];
	in.window[1] = WIN[1];
	in.threshold[0] = in.threshold[1] = 0.5;
	in.nfeat = IPK_FEAT_COUNT;
	for (int k = 0; k < IPK_FEAT_COUNT; k++) {
		snprintf(in.feat[k], IPK_MODEL_FEAT_NAME, "%s", ipk_feat_name(k));
		in.mean[k] = 0.25f;
		in.scale[k] = 1.5f;
	}
	strcpy(in.name, "recal-test");
	struct ipk_model *m = ipk_model_new(&in, net, &err);
	if (!m) {
		fprintf(stderr, "%s\n", err.msg);
		exit(1);
	}
	return m;
}

/* Three sessions of two users, interleaved as a collector writes them. */
static void test_stream_equals_dataset(void)
{
	enum { NS = 3, NT = 200 };
	static const char *sess[NS] = { "ann/1", "ann/2", "bob/1" };
	struct ipk_sample smp[NS * NT];
	int n = 0;
	for (int t = 0; t < NT; t++)
		for (int s = 0; s < NS; s++) {
			struct ipk_sample *x = &smp[n++];
			ipk_sample_init(x, sess[s], "replay", 100 + t, 1);
			snprintf(x->user, sizeof(x->user), "%.3s", sess[s]);
			ipk_sample_set_field(x, IPK_F_EVENTS, events_at(t * (s + 1) + 5 * s) > 0 ? 2 : 0);
		}
	struct ipk_model *m = model();
	struct ipk_err err = { 0 };
	struct ipk_dataset *d = ipk_dataset_new();
	for (int i = 0; i < n; i++)
		ipk_dataset_add(d, &smp[i], &err);
	long off[NS] = { 0, NT, 2 * NT };
	static double pred[NS * NT * 2], plain[NS * NT * 2];
	CHECK("dataset prediction", ipk_predict_dataset(m, d, NULL, off, 0.05, pred, &err) == 0);
	CHECK("dataset prediction, rate 0", ipk_predict_dataset(m, d, NULL, off, 0, plain, &err) == 0);
	struct ipk_predictor *one = ipk_predictor_new(m, WIN[0], -1, 300, NULL, &err);
	struct ipk_predictor *batch = ipk_predictor_new(m, WIN[0], -1, 300, NULL, &err);
	ipk_predictor_set_recal(one, 0.05);
	ipk_predictor_set_recal(batch, 0.05);
	struct ipk_prediction out, bout[NS];
	int got[NS], same_one = 1, same_batch = 1, moved = 0;
	for (int i = 0; i < n; i++) {
		int s = i % NS, t = i / NS;
		const double *want = &pred[(off[s] + t) * 2];
		same_one &= ipk_predictor_step(one, &smp[i], &out, &err) == 1 && out.p[0] == (float)want[0] &&
			    out.p[1] == (float)want[1];
		moved += fabs(want[1] - plain[(off[s] + t) * 2 + 1]) > 1e-3;
		if (s == NS - 1) {
			ipk_predictor_step_batch(batch, &smp[i - NS + 1], NS, bout, got, &err);
			for (int r = 0; r < NS; r++)
				same_batch &= got[r] && bout[r].p[1] == (float)pred[(off[r] + t) * 2 + 1];
		}
	}
	CHECK("the recalibration changes the probabilities", moved > NS * NT / 2);
	CHECK("streaming one sample at a time equals the dataset path", same_one);
	CHECK("streaming a batch at a time equals the dataset path", same_batch);
	ipk_predictor_free(one);
	ipk_predictor_free(batch);
	ipk_dataset_free(d);
	ipk_model_free(m);
}

int main(void)
{
	test_labels();
	test_learning();
	test_state();
	test_stream_equals_dataset();
	CHECK_DONE();
}
