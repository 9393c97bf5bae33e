/* test-lstmcuda: the batched prediction path (ipk_predictor_step_batch) gives
 * the same predictions as the per-sample one on the CPU, sessions repeated
 * within a batch included, with the model's stacked output stage applied in
 * both; and, where a GPU is usable, the CUDA step equals
 * the CPU step within 1e-5 (random networks of 1 and 2 layers, hidden sizes
 * 8, 32, 40 and 96, 3,000 sessions, 40 steps) and the predictor on the GPU equals
 * the one on the CPU. Without CUDA or a GPU the GPU checks are skipped. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "feature.h"
#include "lstmcuda.h"
#include "predict.h"

static struct ipk_model *model(int hidden, int layers)
{
	struct ipk_err err = { 0 };
	struct ipk_lstm_shape sh = { .n_in = IPK_FEAT_COUNT, .hidden = hidden, .layers = layers, .n_out = 3 };
	struct ipk_lstm *net = ipk_lstm_new(&sh, &err);
	ipk_lstm_init(net, 11);
	struct ipk_model_info in;
	memset(&in, 0, sizeof(in));
	in.nwin = 3;
	in.window[0] = 5;
	in.window[1] = 10;
	in.window[2] = 30;
	in.threshold[0] = in.threshold[1] = in.threshold[2] = 0.5;
	in.nfeat = IPK_FEAT_COUNT;
	for (int k = 0; k < IPK_FEAT_COUNT; k++) {
		snprintf(in.feat[k], IPK_MODEL_FEAT_NAME, "%s", ipk_feat_name(k));
		in.mean[k] = 0.5f;
		in.scale[k] = 2.0f;
	}
	strcpy(in.name, "test");
	in.stacked = 1;
	in.early_idle = 2;
	for (int k = 0; k < 3; k++) {
		for (int i = 0; i <= IPK_FEAT_COUNT; i++)
			in.lr_w[k][i] = 0.05 * ((i * 7 + k) % 5 - 2);
		for (int i = 0; i <= IPK_MODEL_STACK_IN; i++)
			in.stack_w[k][i] = 0.4 - 0.1 * i + 0.05 * k;
	}
	struct ipk_model *m = ipk_model_new(&in, net, &err);
	if (!m) {
		fprintf(stderr, "%s\n", err.msg);
		exit(1);
	}
	return m;
}

/* Samples of nsess sessions (two users) for nt intervals, in interval order;
 * with dup, one session's sample comes twice in an interval (the second is
 * a later interval's, so it is valid and must be stepped after the first). */
static struct ipk_sample *samples(int nsess, int nt, int *n)
{
	struct ipk_sample *v = calloc((size_t)nsess * nt, sizeof(*v));
	struct ipk_rng r;
	ipk_rng_seed(&r, 3);
	int k = 0;
	for (int t = 0; t < nt; t++)
		for (int s = 0; s < nsess; s++) {
			char name[32];
			snprintf(name, sizeof(name), "s%d", s);
			ipk_sample_init(&v[k], name, "test", 1000 + t, 1);
			snprintf(v[k].user, sizeof(v[k].user), "u%d", s % 2);
			double u = ipk_rng_uniform(&r);
			ipk_sample_set_field(&v[k], IPK_F_EVENTS, u < 0.5 ? 0 : floor(u * 20));
			ipk_sample_set_field(&v[k], IPK_F_CLICKS, u > 0.9);
			k++;
		}
	*n = k;
	return v;
}

int main(void)
{
	struct ipk_err err = { 0 };
	struct ipk_model *m = model(32, 1);
	int n;
	const int NS = 50, NT = 60;
	struct ipk_sample *smp = samples(NS, NT, &n);
	struct ipk_predictor *a = ipk_predictor_new(m, 5, -1, 300, NULL, &err);
	struct ipk_predictor *b = ipk_predictor_new(m, 5, -1, 300, NULL, &err);
	struct ipk_prediction *pa = calloc(n, sizeof(*pa)), *pb = calloc(n, sizeof(*pb));
	int *got = calloc(n, sizeof(int));
	for (int i = 0; i < n; i++)
		ipk_predictor_step(a, &smp[i], &pa[i], &err);
	/* batches of 1.5 intervals: every other batch holds a session twice */
	int ok = 1;
	for (int i = 0; i < n && ok; i += NS * 3 / 2) {
		int cnt = n - i < NS * 3 / 2 ? n - i : NS * 3 / 2;
		ok = ipk_predictor_step_batch(b, &smp[i], cnt, &pb[i], got + i, &err) == 0;
	}
	CHECK("batched steps run", ok);
	int same = 1, all = 1;
	for (int i = 0; i < n; i++) {
		all &= got[i];
		for (int j = 0; j < 3; j++)
			same &= pa[i].p[j] == pb[i].p[j];
		same &= pa[i].above == pb[i].above && pa[i].idle_s == pb[i].idle_s;
	}
	CHECK("batched: every sample predicted", all);
	CHECK("batched on the CPU = one sample at a time, bit for bit", same);
	ipk_predictor_free(b);

	/* the GPU */
	struct ipk_lstm_cuda *probe = ipk_lstm_cuda_new(ipk_model_net(m), 1, &err);
	if (!probe) {
		CHECK("no GPU: unavailable, said why", err.code == IPK_EXIT_UNAVAILABLE && strstr(err.msg, "cuda"));
		SKIP("cuda step equals the cpu step", err.msg);
		goto done;
	}
	printf("# GPU: %s\n", ipk_lstm_cuda_device(probe));
	ipk_lstm_cuda_free(probe);
	/* 96: an ensemble of 3 x 32; 192: the default model's fold mean of 6 x 32 */
	int shapes[5][2] = { { 32, 1 }, { 40, 2 }, { 8, 1 }, { 96, 1 }, { 192, 1 } };
	for (int q = 0; q < 5; q++) {
		struct ipk_lstm_shape sh = { .n_in = 16, .hidden = shapes[q][0], .layers = shapes[q][1], .n_out = 3 };
		struct ipk_lstm *net = ipk_lstm_new(&sh, &err);
		ipk_lstm_init(net, 100 + q);
		const int S = 3000, T = 40;
		struct ipk_lstm_cuda *cu = ipk_lstm_cuda_new(net, 16, &err); /* grows on demand */
		int *slots = malloc(sizeof(int) * S);
		struct ipk_lstm_state **st = malloc(sizeof(*st) * S);
		float *x = malloc(sizeof(float) * S * 16), *p1 = malloc(sizeof(float) * S * 3), *p2 = malloc(sizeof(float) * S * 3);
		int okq = cu && ipk_lstm_cuda_reserve(cu, S, &err) == 0;
		for (int s = 0; s < S; s++) {
			slots[s] = S - 1 - s; /* rows and slots in different orders */
			st[s] = ipk_lstm_state_new(net);
		}
		struct ipk_rng r;
		ipk_rng_seed(&r, 9);
		double maxd = 0;
		for (int t = 0; t < T && okq; t++) {
			for (int i = 0; i < S * 16; i++)
				x[i] = (float)(ipk_rng_uniform(&r) * 4 - 2);
			ipk_lstm_step(net, st, S, x, p1);
			okq = ipk_lstm_cuda_step(cu, slots, S, x, p2, &err) == 0;
			for (int i = 0; i < S * 3 && okq; i++)
				maxd = fmax(maxd, fabs((double)p1[i] - p2[i]));
		}
		char name[96];
		snprintf(name, sizeof(name), "cuda step = cpu step within 1e-5 (hidden %d, layers %d; max diff %.2g)",
			 sh.hidden, sh.layers, maxd);
		CHECK(name, okq && maxd < 1e-5);
		if (!okq)
			fprintf(stderr, "%s\n", err.msg);
		for (int s = 0; s < S; s++)
			ipk_lstm_state_free(st[s]);
		free(st);
		free(slots);
		free(x);
		free(p1);
		free(p2);
		ipk_lstm_cuda_free(cu);
		ipk_lstm_free(net);
	}
	struct ipk_predictor *g = ipk_predictor_new(m, 5, -1, 300, NULL, &err);
	CHECK("predictor on the GPU", g && ipk_predictor_use_cuda(g, &err) == 0);
	double maxd = 0;
	for (int i = 0; i < n; i += NS)
		if (ipk_predictor_step_batch(g, &smp[i], NS, &pb[i], got + i, &err) < 0)
			maxd = 1;
	for (int i = 0; i < n; i++)
		for (int j = 0; j < 3; j++)
			maxd = fmax(maxd, fabs((double)pa[i].p[j] - pb[i].p[j]));
	printf("# predictor gpu vs cpu: max diff %.3g\n", maxd);
	CHECK("predictions on the GPU = on the CPU within 1e-5", maxd < 1e-5);
	ipk_predictor_free(g);
done:
	ipk_predictor_free(a);
	free(pa);
	free(pb);
	free(got);
	free(smp);
	ipk_model_free(m);
	CHECK_DONE();
}
