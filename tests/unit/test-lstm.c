/* LSTM: gradient against finite differences, streaming step against the
 * double-precision unrolled forward pass, sessions coming and going in one
 * batch, determinism of training for a seed (any thread count), a small
 * memory task learnt, and an ensemble merged into one network giving the
 * sigmoid of its members' mean logit.
 *
 * Extra modes (used by tests/t0300-lstm-torch.sh and for benchmarks):
 *   test-lstm --export FILE     write a tiny random model, an input sequence
 *                               and this library's streaming outputs as text
 *   test-lstm --bench IN H      session-steps per second at 1, 1024 and
 *                               65536 sessions, one JSON line per count
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "feature.h"
#include "lstm.h"

static void fill_seq(struct ipk_rng *r, int len, int nin, int nout, float *x, float *y, double excl)
{
	for (int i = 0; i < len * nin; i++)
		x[i] = (float)(2 * ipk_rng_uniform(r) - 1);
	for (int i = 0; i < len * nout; i++) {
		double u = ipk_rng_uniform(r);
		y[i] = u < excl ? -1.0f : (ipk_rng_uniform(r) < 0.4 ? 1.0f : 0.0f);
	}
}

static struct ipk_lstm *make_net(int nin, int H, int L, int nout, uint64_t seed)
{
	struct ipk_err err = { 0 };
	struct ipk_lstm_shape sh = { .n_in = nin, .hidden = H, .layers = L, .n_out = nout };
	struct ipk_lstm *net = ipk_lstm_new(&sh, &err);
	if (!net) {
		fprintf(stderr, "%s\n", err.msg);
		exit(1);
	}
	ipk_lstm_init(net, seed);
	/* larger weights than the default so the non-linearities are exercised */
	double *p = ipk_lstm_params(net);
	for (size_t k = 0; k < ipk_lstm_nparams(net); k++)
		p[k] *= 2.5;
	ipk_lstm_sync(net);
	return net;
}

static void test_gradient(void)
{
	const int nin = 3, H = 5, L = 2, nout = 2, len = 9;
	struct ipk_lstm *net = make_net(nin, H, L, nout, 11);
	struct ipk_rng r;
	ipk_rng_seed(&r, 5);
	float x[len * nin], y[len * nout];
	fill_seq(&r, len, nin, nout, x, y, 0.2);
	struct ipk_lstm_seq seq = { x, y, len };
	size_t np = ipk_lstm_nparams(net);
	double *g = calloc(np, sizeof(double)), *dummy = calloc(np, sizeof(double));
	long nl = 0;
	double loss = ipk_lstm_loss_grad(net, &seq, g, &nl);
	CHECK("gradient: loss is finite and positive", loss > 0 && isfinite(loss));
	int want = 0;
	for (int i = 0; i < len * nout; i++)
		want += y[i] >= 0;
	CHECK("gradient: excluded labels are not counted", nl == want && want < len * nout);
	double *p = ipk_lstm_params(net), maxrel = 0, maxabs = 0;
	const double eps = 1e-5;
	for (size_t k = 0; k < np; k++) {
		double keep = p[k];
		p[k] = keep + eps;
		double lp = ipk_lstm_loss_grad(net, &seq, dummy, NULL);
		p[k] = keep - eps;
		double lm = ipk_lstm_loss_grad(net, &seq, dummy, NULL);
		p[k] = keep;
		double num = (lp - lm) / (2 * eps), d = fabs(num - g[k]);
		double rel = d / fmax(1e-3, fabs(num) + fabs(g[k]));
		if (d > maxabs)
			maxabs = d;
		if (rel > maxrel)
			maxrel = rel;
	}
	fprintf(stderr, "gradient check: %zu parameters, max abs error %.3g, max rel error %.3g\n", np, maxabs, maxrel);
	CHECK("gradient: analytic equals central differences (rel 1e-6)", maxrel < 1e-6);
	CHECK("gradient: not all zero", fabs(g[0]) + fabs(g[np - 1]) > 0);
	free(g);
	free(dummy);
	ipk_lstm_free(net);
}

static void test_streaming(void)
{
	const int nin = 5, H = 13, L = 2, nout = 3, len = 60;
	struct ipk_lstm *net = make_net(nin, H, L, nout, 3);
	struct ipk_rng r;
	ipk_rng_seed(&r, 9);
	float xa[len * nin], xb[len * nin], xc[len * nin], y[len * nout];
	fill_seq(&r, len, nin, nout, xa, y, 0);
	fill_seq(&r, len, nin, nout, xb, y, 0);
	fill_seq(&r, len, nin, nout, xc, y, 0);
	double ref[len * nout];
	struct ipk_lstm_seq seq = { xa, y, len };
	CHECK("reference forward pass runs", ipk_lstm_forward(net, &seq, ref) == 0);

	/* session a alone */
	struct ipk_lstm_state *a = ipk_lstm_state_new(net);
	float pa[len * nout];
	double maxd = 0;
	for (int t = 0; t < len; t++) {
		ipk_lstm_step(net, &a, 1, xa + t * nin, pa + t * nout);
		for (int k = 0; k < nout; k++)
			maxd = fmax(maxd, fabs(pa[t * nout + k] - ref[t * nout + k]));
	}
	fprintf(stderr, "streaming (float, kernel %s) vs unrolled double forward: max abs diff %.3g\n",
		ipk_lstm_kernel(net), maxd);
	CHECK("streaming: step equals the unrolled forward pass (1e-5)", maxd < 1e-5);
	if (ipk_lstm_set_kernel(net, "avx2") == 0 && ipk_lstm_set_kernel(net, "generic") == 0) {
		struct ipk_lstm_state *gs = ipk_lstm_state_new(net);
		float pg[len * nout];
		for (int t = 0; t < len; t++)
			ipk_lstm_step(net, &gs, 1, xa + t * nin, pg + t * nout);
		CHECK("streaming: generic and avx2 kernels agree bit for bit", !memcmp(pg, pa, sizeof(pg)));
		ipk_lstm_state_free(gs);
		ipk_lstm_set_kernel(net, "avx2");
	} else {
		SKIP("streaming: generic and avx2 kernels agree bit for bit", "no avx2 on this cpu");
	}
	CHECK("unknown kernel refused", ipk_lstm_set_kernel(net, "quantum") < 0);
	CHECK("streaming: outputs are not constant", fabs(pa[0] - pa[(len - 1) * nout]) > 1e-4);

	/* a batch where b joins at step 10 and leaves at 40, c joins at 25 and
	 * a runs throughout: every session's outputs equal its solo run */
	ipk_lstm_state_reset(net, a);
	struct ipk_lstm_state *b = NULL, *c = NULL, *solo = ipk_lstm_state_new(net);
	float pb_solo[len * nout], pc_solo[len * nout];
	for (int t = 0; t < 30; t++)
		ipk_lstm_step(net, &solo, 1, xb + t * nin, pb_solo + t * nout);
	ipk_lstm_state_reset(net, solo);
	for (int t = 0; t < 35; t++)
		ipk_lstm_step(net, &solo, 1, xc + t * nin, pc_solo + t * nout);
	int same = 1;
	for (int t = 0; t < len; t++) {
		struct ipk_lstm_state *st[3];
		float xin[3 * nin], out[3 * nout];
		int n = 0, ia = -1, ib = -1, ic = -1;
		if (t == 10)
			b = ipk_lstm_state_new(net);
		if (t == 40) {
			ipk_lstm_state_free(b);
			b = NULL;
		}
		if (t == 25)
			c = ipk_lstm_state_new(net);
		if (c) {
			ic = n;
			st[n] = c;
			memcpy(xin + n++ * nin, xc + (t - 25) * nin, sizeof(float) * nin);
		}
		ia = n;
		st[n] = a;
		memcpy(xin + n++ * nin, xa + t * nin, sizeof(float) * nin);
		if (b) {
			ib = n;
			st[n] = b;
			memcpy(xin + n++ * nin, xb + (t - 10) * nin, sizeof(float) * nin);
		}
		ipk_lstm_step(net, st, n, xin, out);
		same &= !memcmp(out + ia * nout, pa + t * nout, sizeof(float) * nout);
		if (ib >= 0)
			same &= !memcmp(out + ib * nout, pb_solo + (t - 10) * nout, sizeof(float) * nout);
		if (ic >= 0)
			same &= !memcmp(out + ic * nout, pc_solo + (t - 25) * nout, sizeof(float) * nout);
	}
	CHECK("streaming: sessions coming and going in a batch equal their solo runs", same);
	CHECK("streaming: state size is 2 x layers x padded hidden floats", ipk_lstm_state_bytes(net) == 2 * 2 * 16 * 4);
	ipk_lstm_state_free(a);
	ipk_lstm_state_free(b);
	ipk_lstm_state_free(c);
	ipk_lstm_state_free(solo);
	ipk_lstm_free(net);
}

/* Sequences for training: the label of step t is 1 when channel 0 was
 * positive at step t-3 (a memory task), excluded for t < 3. */
struct dataset {
	int nseq, len, nin, nout;
	float *x, *y;
	struct ipk_lstm_seq *seqs;
};

static void make_memory_task(struct dataset *d, int nseq, int len, uint64_t seed)
{
	d->nseq = nseq;
	d->len = len;
	d->nin = 2;
	d->nout = 1;
	d->x = calloc((size_t)nseq * len * 2, sizeof(float));
	d->y = calloc((size_t)nseq * len, sizeof(float));
	d->seqs = calloc(nseq, sizeof(*d->seqs));
	struct ipk_rng r;
	ipk_rng_seed(&r, seed);
	for (int s = 0; s < nseq; s++) {
		float *x = d->x + (size_t)s * len * 2, *y = d->y + (size_t)s * len;
		for (int t = 0; t < len; t++) {
			x[t * 2] = ipk_rng_uniform(&r) < 0.5 ? 1.0f : -1.0f;
			x[t * 2 + 1] = (float)(ipk_rng_uniform(&r) - 0.5);
			y[t] = t < 3 ? -1.0f : (x[(t - 3) * 2] > 0 ? 1.0f : 0.0f);
		}
		d->seqs[s] = (struct ipk_lstm_seq){ x, y, len };
	}
}

static void free_dataset(struct dataset *d)
{
	free(d->x);
	free(d->y);
	free(d->seqs);
}

static struct ipk_lstm *train(const struct dataset *d, int H, int epochs, uint64_t seed, int threads, double *loss)
{
	struct ipk_err err = { 0 };
	struct ipk_lstm_shape sh = { .n_in = d->nin, .hidden = H, .layers = 1, .n_out = d->nout };
	struct ipk_lstm *net = ipk_lstm_new(&sh, &err);
	ipk_lstm_init(net, seed);
	struct ipk_lstm_train_opts o;
	ipk_lstm_train_defaults(&o);
	o.batch = 8;
	o.bptt = 16;
	o.lr = 0.02;
	o.seed = seed;
	o.threads = threads;
	struct ipk_lstm_trainer *t = ipk_lstm_trainer_new(net, &o, &err);
	for (int e = 0; e < epochs; e++)
		*loss = ipk_lstm_train_epoch(t, d->seqs, d->nseq, &err);
	ipk_lstm_trainer_free(t);
	return net;
}

static void test_training(void)
{
	struct dataset d;
	make_memory_task(&d, 12, 100, 77);
	double l1, l2, l3;
	struct ipk_lstm *a = train(&d, 6, 2, 42, 1, &l1);
	struct ipk_lstm *b = train(&d, 6, 2, 42, 2, &l2);
	struct ipk_lstm *c = train(&d, 6, 2, 43, 2, &l3);
	size_t np = ipk_lstm_nparams(a);
	CHECK("training: same seed, 1 or 2 threads, identical parameters",
	      !memcmp(ipk_lstm_params(a), ipk_lstm_params(b), np * sizeof(double)) && l1 == l2);
	CHECK("training: another seed gives other parameters",
	      memcmp(ipk_lstm_params(a), ipk_lstm_params(c), np * sizeof(double)) != 0);
	ipk_lstm_free(a);
	ipk_lstm_free(b);
	ipk_lstm_free(c);

	/* learn the memory task; judge on fresh sequences with the streaming path */
	double loss0 = 0, loss = 0;
	struct ipk_lstm *n0 = train(&d, 8, 1, 5, 0, &loss0);
	ipk_lstm_free(n0);
	struct ipk_lstm *net = train(&d, 8, 40, 5, 0, &loss);
	fprintf(stderr, "memory task: loss after 1 epoch %.4f, after 40 epochs %.4f\n", loss0, loss);
	struct dataset test;
	make_memory_task(&test, 4, 100, 1234);
	int right = 0, total = 0;
	for (int s = 0; s < test.nseq; s++) {
		struct ipk_lstm_state *st = ipk_lstm_state_new(net);
		for (int t = 0; t < test.len; t++) {
			float p;
			ipk_lstm_step(net, &st, 1, test.seqs[s].x + t * 2, &p);
			float yv = test.seqs[s].y[t];
			if (yv < 0)
				continue;
			right += (p > 0.5f) == (yv > 0.5f);
			total++;
		}
		ipk_lstm_state_free(st);
	}
	fprintf(stderr, "memory task: %d of %d held-out steps right\n", right, total);
	CHECK("training: loss falls", loss < 0.5 * loss0);
	CHECK("training: memory task learnt (>= 97% on held-out sequences)", right >= 0.97 * total);
	ipk_lstm_free(net);
	free_dataset(&d);
	free_dataset(&test);
}

static int export_model(const char *path)
{
	const int nin = 4, H = 6, L = 2, nout = 3, len = 25;
	struct ipk_lstm *net = make_net(nin, H, L, nout, 21);
	FILE *f = fopen(path, "w");
	if (!f)
		return 1;
	fprintf(f, "%d %d %d %d\n", nin, H, L, nout);
	size_t np = ipk_lstm_nparams(net);
	const double *p = ipk_lstm_params(net);
	/* the float weights the streaming path uses */
	fprintf(f, "%zu\n", np);
	for (size_t k = 0; k < np; k++)
		fprintf(f, "%.9g\n", (double)(float)p[k]);
	struct ipk_rng r;
	ipk_rng_seed(&r, 99);
	float x[len * nin], y[len * nout], out[len * nout];
	fill_seq(&r, len, nin, nout, x, y, 0);
	struct ipk_lstm_state *st = ipk_lstm_state_new(net);
	for (int t = 0; t < len; t++)
		ipk_lstm_step(net, &st, 1, x + t * nin, out + t * nout);
	fprintf(f, "%d\n", len);
	for (int i = 0; i < len * nin; i++)
		fprintf(f, "%.9g\n", x[i]);
	for (int i = 0; i < len * nout; i++)
		fprintf(f, "%.9g\n", out[i]);
	ipk_lstm_state_free(st);
	ipk_lstm_free(net);
	return fclose(f) != 0;
}

static int bench(int nin, int H)
{
	static const int counts[] = { 1, 1024, 65536 };
	for (int ci = 0; ci < 3; ci++) {
		int n = counts[ci];
		struct ipk_lstm *net = make_net(nin, H, 1, 3, 1);
		struct ipk_lstm_state **st = malloc(sizeof(*st) * n);
		float *x = malloc(sizeof(float) * n * nin), *p = malloc(sizeof(float) * n * 3);
		struct ipk_rng r;
		ipk_rng_seed(&r, 1);
		for (int i = 0; i < n; i++)
			st[i] = ipk_lstm_state_new(net);
		for (int i = 0; i < n * nin; i++)
			x[i] = (float)ipk_rng_uniform(&r);
		long steps = 0;
		double t0 = ipk_mono(), t1;
		do {
			for (int rep = 0; rep < (n < 1024 ? 1000 : 1); rep++) {
				ipk_lstm_step(net, st, n, x, p);
				steps += n;
			}
			t1 = ipk_mono();
		} while (t1 - t0 < 1.0);
		printf("{\"bench\":\"lstm_step\",\"kernel\":\"%s\",\"n_in\":%d,\"hidden\":%d,\"sessions\":%d,"
		       "\"steps_per_s\":%.0f,\"state_bytes\":%zu}\n",
		       ipk_lstm_kernel(net), nin, H, n, steps / (t1 - t0), ipk_lstm_state_bytes(net));
		for (int i = 0; i < n; i++)
			ipk_lstm_state_free(st[i]);
		free(st);
		free(x);
		free(p);
		ipk_lstm_free(net);
	}
	return 0;
}

static double logit(double p)
{
	return log(p / (1 - p));
}

/* ipk_lstm_merge: three members of two layers into one network whose
 * streaming output is sigmoid(mean of the members' logits), every step of
 * a sequence; one member merged alone is that member, bit for bit; shapes
 * that disagree are refused. */
static void test_merge(void)
{
	enum { K = 3, NIN = 5, H = 6, L = 2, NOUT = 3, T = 50 };
	struct ipk_err err = { 0 };
	struct ipk_lstm *m[K];
	for (int i = 0; i < K; i++)
		m[i] = make_net(NIN, H, L, NOUT, 40 + i);
	struct ipk_lstm_shape sh = { .n_in = NIN, .hidden = K * H, .layers = L, .n_out = NOUT };
	struct ipk_lstm *e = ipk_lstm_new(&sh, &err);
	CHECK("merge: three members", e && ipk_lstm_merge(e, m, K, &err) == 0);
	float x[T * NIN], y[T * NOUT];
	struct ipk_rng r;
	ipk_rng_seed(&r, 5);
	fill_seq(&r, T, NIN, NOUT, x, y, 0);
	struct ipk_lstm_seq seq = { x, y, T };
	double pm[K][T * NOUT];
	for (int i = 0; i < K; i++)
		ipk_lstm_forward(m[i], &seq, pm[i]);
	struct ipk_lstm_state *st = ipk_lstm_state_new(e);
	double maxd = 0;
	for (int t = 0; t < T; t++) {
		float p[NOUT];
		ipk_lstm_step(e, &st, 1, x + t * NIN, p);
		for (int o = 0; o < NOUT; o++) {
			double z = 0;
			for (int i = 0; i < K; i++)
				z += logit(pm[i][t * NOUT + o]) / K;
			maxd = fmax(maxd, fabs(p[o] - 1 / (1 + exp(-z))));
		}
	}
	ipk_lstm_state_free(st);
	char name[96];
	snprintf(name, sizeof(name), "merge: output = sigmoid(mean member logit) within 1e-5 (max %.2g)", maxd);
	CHECK(name, maxd < 1e-5);
	/* The step skips the zero blocks of the recurrent weights. The same
	 * network with negligible weights (1e-30, lost in every gate's sum) in
	 * each gate row's first and last columns outside its block is stepped
	 * densely: the outputs must agree bit for bit. */
	struct ipk_lstm *dense = ipk_lstm_new(&sh, &err);
	memcpy(ipk_lstm_params(dense), ipk_lstm_params(e), sizeof(double) * ipk_lstm_nparams(e));
	for (int l = 0; l < L; l++) {
		int din = l ? K * H : NIN, M = K * H;
		double *whh = ipk_lstm_params(dense) + ipk_lstm_offset(dense, l) + (size_t)4 * M * din;
		for (int row = 0; row < 4 * M; row++)
			for (int k = 0; k < M; k += M - 1)
				if (k / H != (row % M) / H)
					whh[(size_t)row * M + k] = 1e-30;
	}
	ipk_lstm_sync(dense);
	struct ipk_lstm_state *ss = ipk_lstm_state_new(e), *sd = ipk_lstm_state_new(dense);
	int same = 1;
	for (int t = 0; t < T; t++) {
		float ps[NOUT], pd[NOUT];
		ipk_lstm_step(e, &ss, 1, x + t * NIN, ps);
		ipk_lstm_step(dense, &sd, 1, x + t * NIN, pd);
		same &= !memcmp(ps, pd, sizeof(ps));
	}
	CHECK("merge: the step skipping the zero blocks equals the dense step, bit for bit", same);
	ipk_lstm_state_free(ss);
	ipk_lstm_state_free(sd);
	ipk_lstm_free(dense);
	/* a member alone */
	struct ipk_lstm_shape s1 = { .n_in = NIN, .hidden = H, .layers = L, .n_out = NOUT };
	struct ipk_lstm *one = ipk_lstm_new(&s1, &err);
	CHECK("merge: one member is that member, bit for bit",
	      one && ipk_lstm_merge(one, m, 1, &err) == 0 &&
		      !memcmp(ipk_lstm_params(one), ipk_lstm_params(m[0]), sizeof(double) * ipk_lstm_nparams(one)));
	CHECK("merge: a destination of the wrong size is refused",
	      ipk_lstm_merge(one, m, 2, &err) < 0 && err.code == IPK_EXIT_USAGE && strstr(err.msg, "merge"));
	struct ipk_lstm *other = make_net(NIN, H, 1, NOUT, 9);
	struct ipk_lstm *mix[2] = { m[0], other };
	struct ipk_lstm_shape s2 = { .n_in = NIN, .hidden = 2 * H, .layers = L, .n_out = NOUT };
	struct ipk_lstm *two = ipk_lstm_new(&s2, &err);
	err.code = 0;
	CHECK("merge: members of another shape are refused",
	      two && ipk_lstm_merge(two, mix, 2, &err) < 0 && err.code == IPK_EXIT_USAGE);
	ipk_lstm_free(two);
	ipk_lstm_free(other);
	ipk_lstm_free(one);
	ipk_lstm_free(e);
	for (int i = 0; i < K; i++)
		ipk_lstm_free(m[i]);
}

/* ipk_lstm_renormalise: a two-layer network moved from one normalisation
 * to another gives, on the raw inputs normalised the new way, the outputs
 * it gave on them normalised the old way (float kernels, within 1e-5), at
 * every step of a sequence; moving it back restores the parameters. */
static void test_renormalise(void)
{
	enum { NIN = 5, H = 6, L = 2, NOUT = 3, T = 50 };
	struct ipk_lstm *a = make_net(NIN, H, L, NOUT, 21), *b = make_net(NIN, H, L, NOUT, 21);
	float fm[NIN] = { 0.5f, -2, 3, 0, 10 }, fs[NIN] = { 1, 0.25f, 4, 2, 0.5f };
	float tm[NIN] = { 0.7f, -1, 2.5f, 0.1f, 9 }, ts[NIN] = { 1.5f, 0.5f, 3, 1, 0.8f };
	ipk_lstm_renormalise(b, fm, fs, tm, ts);
	struct ipk_rng r;
	ipk_rng_seed(&r, 8);
	struct ipk_lstm_state *sa = ipk_lstm_state_new(a), *sb = ipk_lstm_state_new(b);
	double maxd = 0, moved = 0;
	for (int t = 0; t < T; t++) {
		float raw[NIN], xa[NIN], xb[NIN], pa[NOUT], pb[NOUT];
		for (int k = 0; k < NIN; k++)
			raw[k] = tm[k] + (float)(4 * ipk_rng_uniform(&r) - 2) * ts[k];
		ipk_norm_apply(fm, fs, NIN, raw, xa);
		ipk_norm_apply(tm, ts, NIN, raw, xb);
		ipk_lstm_step(a, &sa, 1, xa, pa);
		ipk_lstm_step(b, &sb, 1, xb, pb);
		for (int o = 0; o < NOUT; o++)
			maxd = fmax(maxd, fabs(pa[o] - pb[o]));
		for (int k = 0; k < NIN; k++)
			moved = fmax(moved, fabs(xa[k] - xb[k]));
	}
	ipk_lstm_state_free(sa);
	ipk_lstm_state_free(sb);
	char name[96];
	snprintf(name, sizeof(name), "renormalise: same outputs on the same raw inputs within 1e-5 (max %.2g)", maxd);
	CHECK(name, moved > 0.1 && maxd < 1e-5);
	ipk_lstm_renormalise(b, tm, ts, fm, fs);
	double pd = 0;
	const double *pa = ipk_lstm_params_const(a), *pb = ipk_lstm_params_const(b);
	for (size_t i = 0; i < ipk_lstm_nparams(a); i++)
		pd = fmax(pd, fabs(pa[i] - pb[i]));
	CHECK("renormalise: moving back restores the parameters within 1e-12", pd < 1e-12);
	ipk_lstm_free(a);
	ipk_lstm_free(b);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--export"))
		return export_model(argv[2]);
	if (argc == 4 && !strcmp(argv[1], "--bench"))
		return bench(atoi(argv[2]), atoi(argv[3]));
	struct ipk_err err = { 0 };
	struct ipk_lstm_shape bad = { .n_in = 0, .hidden = 4, .layers = 1, .n_out = 1 };
	CHECK("bad shape refused", !ipk_lstm_new(&bad, &err) && err.code == IPK_EXIT_USAGE && strstr(err.msg, "lstm"));
	test_gradient();
	test_streaming();
	test_training();
	test_merge();
	test_renormalise();
	CHECK_DONE();
}
