/* Model file: round trip (memory and file), refusal of every single-byte
 * corruption, of every truncation, of other versions (version 1 with a
 * message to retrain), of bad magic, of junk after the end and of a
 * well-checksummed file with bad sizes; the same for a model with the
 * stacked output stage and its gap histogram, whose output is checked
 * against a hand computation; version 2 (no histogram) and version 3
 * files (seven stacking inputs) read as before; the histogram's fit when
 * lengths must be rounded; and the stacking fit on a synthetic
 * miscalibrated score: monotone, and a lower Brier score than the score
 * itself. */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <xxhash.h>

#include "check.h"
#include "eval.h"
#include "model.h"

/* the gaps the stacked test model's histogram is fitted on (sorted) */
static const double GAPS[] = { 1, 1, 2, 5, 5, 5, 30, 60 };
#define NGAPS ((int)(sizeof(GAPS) / sizeof(GAPS[0])))

static struct ipk_model *small_model(int stacked)
{
	struct ipk_err err = { 0 };
	struct ipk_lstm_shape sh = { .n_in = 3, .hidden = 2, .layers = 1, .n_out = 2 };
	struct ipk_lstm *net = ipk_lstm_new(&sh, &err);
	ipk_lstm_init(net, 4);
	struct ipk_model_info in;
	memset(&in, 0, sizeof(in));
	in.nwin = 2;
	in.window[0] = 5;
	in.window[1] = 30;
	in.threshold[0] = 0.5;
	in.threshold[1] = 0.75;
	in.nfeat = 3;
	strcpy(in.feat[0], "events");
	strcpy(in.feat[1], "idle_s");
	strcpy(in.feat[2], "cpu");
	for (int k = 0; k < 3; k++) {
		in.mean[k] = 0.25f * k;
		in.scale[k] = 1.5f + k;
	}
	strcpy(in.name, "lstm-h2");
	strcpy(in.meta, "test model");
	if (stacked) {
		in.stacked = 1;
		in.early_idle = 2;
		for (int k = 0; k < 2; k++) {
			for (int i = 0; i <= 3; i++)
				in.lr_w[k][i] = 0.1 * (i + 1) - 0.2 * k;
			for (int i = 0; i <= IPK_MODEL_STACK_IN; i++)
				in.stack_w[k][i] = 0.3 - 0.05 * i + 0.1 * k;
		}
		ipk_model_gaps_fit(&in.gaps, GAPS, NGAPS);
	}
	struct ipk_model *m = ipk_model_new(&in, net, &err);
	if (!m) {
		fprintf(stderr, "%s\n", err.msg);
		exit(1);
	}
	return m;
}

static int same_model(const struct ipk_model *a, const struct ipk_model *b)
{
	const struct ipk_model_info *x = ipk_model_info(a), *y = ipk_model_info(b);
	struct ipk_lstm *na = ipk_model_net(a), *nb = ipk_model_net(b);
	size_t np = ipk_lstm_nparams(na);
	if (np != ipk_lstm_nparams(nb) || x->nwin != y->nwin || x->nfeat != y->nfeat || strcmp(x->name, y->name) ||
	    strcmp(x->meta, y->meta) || strcmp(ipk_model_id(a), ipk_model_id(b)))
		return 0;
	for (int k = 0; k < x->nwin; k++)
		if (x->window[k] != y->window[k] || x->threshold[k] != y->threshold[k])
			return 0;
	for (int k = 0; k < x->nfeat; k++)
		if (strcmp(x->feat[k], y->feat[k]) || x->mean[k] != y->mean[k] || x->scale[k] != y->scale[k])
			return 0;
	if (x->stacked != y->stacked || (x->stacked && x->early_idle != y->early_idle))
		return 0;
	for (int k = 0; x->stacked && k < x->nwin; k++) {
		for (int i = 0; i <= x->nfeat; i++)
			if (x->lr_w[k][i] != y->lr_w[k][i])
				return 0;
		for (int i = 0; i <= IPK_MODEL_STACK_IN; i++)
			if (x->stack_w[k][i] != y->stack_w[k][i])
				return 0;
	}
	if (x->stacked && x->gaps.n != y->gaps.n)
		return 0;
	for (int i = 0; x->stacked && i < x->gaps.n; i++)
		if (x->gaps.len[i] != y->gaps.len[i] || x->gaps.count[i] != y->gaps.count[i] ||
		    x->gaps.tail[i] != y->gaps.tail[i])
			return 0;
	const double *pa = ipk_lstm_params(na), *pb = ipk_lstm_params(nb);
	for (size_t k = 0; k < np; k++)
		if ((float)pa[k] != (float)pb[k])
			return 0;
	return 1;
}

static void reseal(unsigned char *buf, size_t len)
{
	uint64_t h = XXH64(buf, len - 8, 0);
	for (int i = 0; i < 8; i++)
		buf[len - 8 + i] = (unsigned char)(h >> (8 * i));
}

/* A version 2 or 3 file made from m's current bytes: that version, the
 * first six (2) or seven (3) stacking weights and the intercept of each
 * window, the histogram only in version 3. It reads as m with weight 0 on
 * the inputs it lacks, and predicts so. */
static void read_older(const struct ipk_model *m, const unsigned char *buf, size_t len, size_t gapsec, int ver)
{
	struct ipk_err err = { 0 };
	const struct ipk_model_info *in = ipk_model_info(m);
	const size_t S = IPK_MODEL_STACK_IN, W = (size_t)in->nwin, ns = ver == 2 ? 6 : 7;
	size_t ws = len - 8 - gapsec - W * (S + 1) * 8; /* the first stacking weight */
	unsigned char *v = malloc(len);
	size_t n = 0;
	char what[64];
	memcpy(v, buf, ws);
	n = ws;
	v[ws - 4] = (unsigned char)ns; /* nstack */
	for (size_t k = 0; k < W; k++) {
		memcpy(v + n, buf + ws + k * (S + 1) * 8, ns * 8);
		n += ns * 8;
		memcpy(v + n, buf + ws + k * (S + 1) * 8 + S * 8, 8);
		n += 8;
	}
	if (ver == 3) {
		memcpy(v + n, buf + len - 8 - gapsec, gapsec);
		n += gapsec;
	}
	n += 8;
	v[8] = (unsigned char)ver;
	for (int i = 0; i < 8; i++)
		v[12 + i] = (unsigned char)((uint64_t)n >> (8 * i));
	reseal(v, n);
	struct ipk_model *old = ipk_model_decode(v, n, "old.ipkm", &err);
	snprintf(what, sizeof(what), "a version %d model is read", ver);
	CHECK(what, old != NULL);
	int same = old != NULL;
	for (size_t k = 0; old && k < W; k++)
		for (size_t i = 0; i <= S; i++)
			same &= ipk_model_info(old)->stack_w[k][i] == (i >= ns && i < S ? 0 : in->stack_w[k][i]);
	same &= old && ipk_model_info(old)->gaps.n == (ver == 2 ? 0 : in->gaps.n);
	snprintf(what, sizeof(what), "version %d: stacking weights kept, 0 on the inputs it lacks", ver);
	CHECK(what, same);
	char id[64];
	snprintf(id, sizeof(id), "lstm-h2-%08x", (unsigned)(XXH64(v, n - 8, 0) >> 32));
	snprintf(what, sizeof(what), "version %d: the id names the file's checksum", ver);
	CHECK(what, old && !strcmp(ipk_model_id(old), id));
	if (old) {
		/* m with weight 0 on those inputs gives the same output */
		struct ipk_model_info *w0 = malloc(sizeof(*w0));
		*w0 = *in;
		for (size_t k = 0; k < W; k++)
			for (size_t i = ns; i < S; i++)
				w0->stack_w[k][i] = 0;
		float x[3] = { 0.5f, -1, 2 }, q[2] = { 0.3f, 0.8f }, p1[2], p2[2];
		ipk_model_info_output(w0, x, 7.5, q, p1);
		ipk_model_output(old, x, 7.5, q, p2);
		snprintf(what, sizeof(what), "version %d: predicts as before", ver);
		CHECK(what, fabsf(p1[0] - p2[0]) < 1e-7f && fabsf(p1[1] - p2[1]) < 1e-7f);
		free(w0);
	}
	ipk_model_free(old);
	free(v);
}

/* The histogram: lengths rounded up when there are too many distinct ones;
 * every gap counted, lengths ascending, and the score as counted by hand. */
static void gaps_rounding(void)
{
	enum { N = 5000 };
	double *g = malloc(sizeof(double) * N);
	for (int i = 0; i < N; i++)
		g[i] = 0.5 + i * 0.037; /* 5000 distinct lengths */
	struct ipk_model_gaps *gp = calloc(1, sizeof(*gp));
	ipk_model_gaps_fit(gp, g, N);
	int asc = 1;
	for (int i = 1; i < gp->n; i++)
		asc &= gp->len[i] > gp->len[i - 1];
	CHECK("gaps: rounded to fit", gp->n > 0 && gp->n <= IPK_MODEL_MAX_GAPS && asc && gp->tail[0] == N);
	/* rounding up by at most the step keeps the counts near the truth */
	long above = 0, above_w = 0;
	for (int i = 0; i < N; i++) {
		above += g[i] > 60;
		above_w += g[i] > 90;
	}
	double h = ipk_model_gaps_score(gp, 60, 30), want = (above_w + 0.5) / (above + 1.0);
	fprintf(stderr, "gaps: %d lengths; score %.4f, exact %.4f\n", gp->n, h, want);
	CHECK("gaps: rounded score near the exact one", fabs(h - want) < 0.01);
	ipk_model_gaps_fit(gp, g, 0);
	CHECK("gaps: none gives 1/2", gp->n == 0 && ipk_model_gaps_score(gp, 3, 5) == 0.5);
	free(gp);
	free(g);
}

static void file_checks(int stacked)
{
	struct ipk_err err = { 0 };
	struct ipk_model *m = small_model(stacked);
	unsigned char *buf;
	size_t len;
	CHECK("encode", ipk_model_encode(m, &buf, &len, &err) == 0);
	CHECK("id is name and checksum", strncmp(ipk_model_id(m), "lstm-h2-", 8) == 0 && strlen(ipk_model_id(m)) == 16);
	CHECK("magic and little-endian version at the start", !memcmp(buf, "IPKMODEL\4\0\0\0", 12));
	struct ipk_model *back = ipk_model_decode(buf, len, "mem", &err);
	CHECK("decode what was encoded", back != NULL);
	CHECK("round trip keeps everything", back && same_model(m, back));
	ipk_model_free(back);

	char path[] = "/tmp/ipkit-test-model.XXXXXX";
	int fd = mkstemp(path);
	close(fd);
	CHECK("save", ipk_model_save(m, path, &err) == 0);
	struct ipk_model *loaded = ipk_model_load(path, &err);
	CHECK("load from file keeps everything", loaded && same_model(m, loaded));
	/* and predicts the same */
	if (loaded) {
		struct ipk_lstm_state *s1 = ipk_lstm_state_new(ipk_model_net(m)), *s2 = ipk_lstm_state_new(ipk_model_net(loaded));
		float x[3] = { 0.5f, -1, 2 }, p1[2], p2[2];
		ipk_lstm_step(ipk_model_net(m), &s1, 1, x, p1);
		ipk_lstm_step(ipk_model_net(loaded), &s2, 1, x, p2);
		CHECK("loaded model predicts the same", !memcmp(p1, p2, sizeof(p1)));
		ipk_lstm_state_free(s1);
		ipk_lstm_state_free(s2);
	}
	ipk_model_free(loaded);
	unlink(path);
	CHECK("missing file: NOINPUT naming it", !ipk_model_load(path, &err) && err.code == IPK_EXIT_NOINPUT &&
							 strstr(err.msg, path));

	/* every byte flipped in turn */
	int refused = 0, named = 0;
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0xff;
		struct ipk_model *c = ipk_model_decode(buf, len, "flip.model", &err);
		refused += c == NULL && err.code == IPK_EXIT_DATAERR;
		named += c == NULL && strstr(err.msg, "'flip.model'") != NULL;
		ipk_model_free(c);
		buf[i] ^= 0xff;
	}
	fprintf(stderr, "flipped each of %zu bytes: %d refused\n", len, refused);
	CHECK("every flipped byte refused", refused == (int)len && named == (int)len);
	buf[len / 2] ^= 1;
	ipk_model_decode(buf, len, "x", &err);
	CHECK("corruption is called a checksum mismatch", strstr(err.msg, "checksum mismatch") != NULL);
	buf[len / 2] ^= 1;

	int trunc = 0;
	for (size_t n = 0; n < len; n++) {
		struct ipk_model *c = ipk_model_decode(buf, n, "t", &err);
		trunc += c == NULL;
		ipk_model_free(c);
	}
	CHECK("every truncation refused", trunc == (int)len);
	ipk_model_decode(buf, len - 10, "t", &err);
	CHECK("truncation is called so", strstr(err.msg, "truncated") != NULL);

	unsigned char *big = malloc(len + 3);
	memcpy(big, buf, len);
	memset(big + len, 0, 3);
	CHECK("junk after the end refused", !ipk_model_decode(big, len + 3, "j", &err) && strstr(err.msg, "junk"));
	free(big);

	unsigned char *v2 = malloc(len);
	memcpy(v2, buf, len);
	v2[8] = IPK_MODEL_VERSION + 1;
	reseal(v2, len);
	CHECK("a newer format version refused by name",
	      !ipk_model_decode(v2, len, "v5", &err) && strstr(err.msg, "format version 5 is not supported"));
	memcpy(v2, buf, len);
	v2[8] = 1;
	reseal(v2, len);
	CHECK("a version 1 model refused with a message to retrain",
	      !ipk_model_decode(v2, len, "old.ipkm", &err) && err.code == IPK_EXIT_DATAERR &&
		      strstr(err.msg, "read model 'old.ipkm': format version 1 is no longer supported") &&
		      strstr(err.msg, "retrain it with ip-train"));
	memcpy(v2, buf, len);
	v2[20] = 200; /* n_in 200 while 3 features follow: checksum right, sizes wrong */
	reseal(v2, len);
	CHECK("well-sealed file with wrong sizes refused", !ipk_model_decode(v2, len, "s", &err) && strstr(err.msg, "bad header"));
	memcpy(v2, buf, len);
	unsigned char *name = memmem(v2, len, "idle_s", 6);
	if (name) {
		name[4] = '\0'; /* "idl\0_s": would decode as "idl" and encode differently */
		reseal(v2, len);
	}
	CHECK("a name holding a NUL byte refused", name && !ipk_model_decode(v2, len, "n", &err) && strstr(err.msg, "NUL"));
	/* the output stage: kind u32 after the parameters */
	const size_t gapsec = 4 + (size_t)ipk_model_info(m)->gaps.n * 16;
	size_t stage = stacked ? 4 + 8 + 4 + 2 * 4 * 8 + 4 + 2 * (IPK_MODEL_STACK_IN + 1) * 8 + gapsec : 4;
	memcpy(v2, buf, len);
	v2[len - 8 - stage] = 7;
	reseal(v2, len);
	CHECK("unknown output stage refused", !ipk_model_decode(v2, len, "k", &err) && strstr(err.msg, "unknown kind"));
	if (stacked) {
		double nan = NAN;
		memcpy(v2, buf, len);
		memcpy(v2 + len - 8 - gapsec - 8, &nan, 8); /* the last stacking weight */
		reseal(v2, len);
		CHECK("stacked: a weight that is not a number refused",
		      !ipk_model_decode(v2, len, "w", &err) && strstr(err.msg, "not a finite number"));
		memcpy(v2, buf, len);
		v2[len - 8 - stage + 4 + 8] = 2; /* regression size 2, 3 features */
		reseal(v2, len);
		CHECK("stacked: regression size refused", !ipk_model_decode(v2, len, "r", &err) && strstr(err.msg, "regression size"));
		double bad[2] = { 0, 60 };
		for (int b = 0; b < 2; b++) {
			memcpy(v2, buf, len);
			/* the first gap length 0, or the second as long as the last */
			memcpy(v2 + len - 8 - gapsec + 4 + 16 * b, &bad[b], 8);
			reseal(v2, len);
			CHECK(b ? "stacked: gap lengths not ascending refused" : "stacked: a gap length 0 refused",
			      !ipk_model_decode(v2, len, "h", &err) && strstr(err.msg, "gap histogram"));
		}
		memcpy(v2, buf, len);
		v2[len - 8 - gapsec + 4 + 8] = 0; /* the first length's count 0 */
		reseal(v2, len);
		CHECK("stacked: a gap count 0 refused", !ipk_model_decode(v2, len, "c", &err) && strstr(err.msg, "counts"));
		memcpy(v2, buf, len);
		v2[len - 8 - gapsec + 1] = 0x10; /* 4097 lengths */
		reseal(v2, len);
		CHECK("stacked: too many gap lengths refused", !ipk_model_decode(v2, len, "n", &err) && strstr(err.msg, "too large"));
	}
	memcpy(v2, buf, len);
	memcpy(v2, "GIF89a..", 8);
	CHECK("not a model: bad magic", !ipk_model_decode(v2, len, "g", &err) && strstr(err.msg, "bad magic"));
	free(v2);
	if (stacked) {
		read_older(m, buf, len, gapsec, 2);
		read_older(m, buf, len, gapsec, 3);
	}
	free(buf);

	struct ipk_lstm_shape sh = { .n_in = 4, .hidden = 2, .layers = 1, .n_out = 2 };
	struct ipk_lstm *net = ipk_lstm_new(&sh, &err);
	struct ipk_model_info in = *ipk_model_info(m);
	CHECK("info disagreeing with the network refused", !ipk_model_new(&in, net, &err) && err.code == IPK_EXIT_USAGE);
	ipk_model_free(m);
	ipk_model_free(NULL);
}

static double sigm(double z)
{
	return 1 / (1 + exp(-z));
}

/* The stacked output against a computation written out here. */
static void stacked_output(void)
{
	struct ipk_model *m = small_model(1), *plain = small_model(0);
	const struct ipk_model_info *in = ipk_model_info(m);
	float x[3] = { 0.5f, -1, 2 }, q[2] = { 0.3f, 0.8f }, p[2], p0[2];
	double idles[2] = { 1, 7.5 };
	int ok = 1, same = 1;
	for (int c = 0; c < 2; c++) {
		ipk_model_output(m, x, idles[c], q, p);
		ipk_model_output(plain, x, idles[c], q, p0);
		same &= p0[0] == q[0] && p0[1] == q[1];
		for (int k = 0; k < 2; k++) {
			double r = sigm(in->lr_w[k][0] * 0.5 - in->lr_w[k][1] + in->lr_w[k][2] * 2 + in->lr_w[k][3]);
			double lq = log(q[k] / (1.0 - q[k])), lr = log(r / (1 - r)), e = idles[c] <= 2;
			/* the histogram: gaps longer than idle + W over those
			 * longer than idle, smoothed */
			double c0 = 0, c1 = 0;
			for (int i = 0; i < NGAPS; i++) {
				c0 += GAPS[i] > idles[c];
				c1 += GAPS[i] > idles[c] + in->window[k];
			}
			double h = (c1 + 0.5) / (c0 + 1), lh = log(h / (1 - h));
			double l = log1p(idles[c]);
			double z[10] = { lq, lr, l, e, e * lq, e * lr, lh, l * lq, l * lr, e * lh }, a = in->stack_w[k][10];
			for (int i = 0; i < 10; i++)
				a += in->stack_w[k][i] * z[i];
			ok &= fabs(p[k] - sigm(a)) < 1e-5;
		}
	}
	CHECK("without a stage the output is the network's", same);
	CHECK("stacked output as written out by hand", ok);
	ipk_model_free(m);
	ipk_model_free(plain);
}

/* A score that ranks well but is miscalibrated (q = p^3 of the true
 * probability p): the stacking regression fitted on it is monotone in q and
 * has a lower Brier score. */
static void stacking_calibrates(void)
{
	struct ipk_err err = { 0 };
	enum { N = 20000 };
	float *z = malloc(sizeof(float) * N * IPK_MODEL_STACK_IN), *y = malloc(sizeof(float) * N);
	double *q = malloc(sizeof(double) * N);
	uint64_t s = 12345;
	for (int i = 0; i < N; i++) {
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		double p = ((s >> 11) + 0.5) / 9007199254740992.0;
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		double u = ((s >> 11) + 0.5) / 9007199254740992.0;
		y[i] = u < p;
		q[i] = p * p * p;
		/* a regression score that knows nothing (constant), idle 5 s */
		ipk_model_stack_inputs(q[i], 0.5, 0.5, 5, 2, z + (size_t)i * IPK_MODEL_STACK_IN);
	}
	struct ipk_logreg st;
	CHECK("stacking fit", ipk_logreg_fit(&st, z, IPK_MODEL_STACK_IN, y, 1, N, 1e-3, &err) == 0);
	struct ipk_model_info *in = calloc(1, sizeof(*in));
	in->nwin = 1;
	in->nfeat = 1;
	in->stacked = 1;
	in->early_idle = 2;
	for (int i = 0; i <= IPK_MODEL_STACK_IN; i++)
		in->stack_w[0][i] = st.w[i];
	double b0 = 0, b1 = 0, prev = -1;
	int mono = 1;
	float x = 0;
	for (int i = 0; i < N; i++) {
		float qi = (float)q[i], pi;
		ipk_model_info_output(in, &x, 5, &qi, &pi);
		b0 += (q[i] - y[i]) * (q[i] - y[i]);
		b1 += (pi - y[i]) * (pi - y[i]);
	}
	for (int i = 1; i < 1000; i++) {
		float qi = (float)(i / 1000.0), pi;
		ipk_model_info_output(in, &x, 5, &qi, &pi);
		mono &= pi >= prev;
		prev = pi;
	}
	fprintf(stderr, "brier of the miscalibrated score %.4f, stacked %.4f\n", b0 / N, b1 / N);
	CHECK("stacked output monotone in the network's output", mono);
	CHECK("stacking lowers the Brier score of a miscalibrated score", b1 / N < b0 / N - 0.01);
	free(in);
	free(z);
	free(y);
	free(q);
}

int main(void)
{
	file_checks(0);
	file_checks(1);
	stacked_output();
	gaps_rounding();
	stacking_calibrates();
	CHECK_DONE();
}
