/* model.c - the model file. See model.h for the format. */
#define _GNU_SOURCE
#include "model.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

static const unsigned char MAGIC[8] = { 'I', 'P', 'K', 'M', 'O', 'D', 'E', 'L' };

struct ipk_model {
	struct ipk_model_info info;
	struct ipk_lstm *net;
	char id[96];
};

/* ------------------------------------------------------------ encoding */

struct wbuf {
	unsigned char *p;
	size_t n, cap;
	int oom;
};

static void put(struct wbuf *b, const void *src, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->n + n)
			cap *= 2;
		unsigned char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, src, n);
	b->n += n;
}

static void put_u64(struct wbuf *b, uint64_t v)
{
	unsigned char x[8];
	for (int i = 0; i < 8; i++)
		x[i] = (unsigned char)(v >> (8 * i));
	put(b, x, 8);
}

static void put_u32(struct wbuf *b, uint32_t v)
{
	unsigned char x[4];
	for (int i = 0; i < 4; i++)
		x[i] = (unsigned char)(v >> (8 * i));
	put(b, x, 4);
}

static void put_u16(struct wbuf *b, uint16_t v)
{
	unsigned char x[2] = { (unsigned char)v, (unsigned char)(v >> 8) };
	put(b, x, 2);
}

static void put_f32(struct wbuf *b, float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	put_u32(b, u);
}

static void put_f64(struct wbuf *b, double d)
{
	uint64_t u;
	memcpy(&u, &d, 8);
	put_u64(b, u);
}

static void put_str16(struct wbuf *b, const char *s)
{
	size_t n = strnlen(s, 65535);
	put_u16(b, (uint16_t)n);
	put(b, s, n);
}

int ipk_model_encode(const struct ipk_model *m, unsigned char **buf, size_t *len, struct ipk_err *err)
{
	const struct ipk_model_info *in = &m->info;
	const struct ipk_lstm_shape *sh = ipk_lstm_shape(m->net);
	struct wbuf b = { 0 };
	put(&b, MAGIC, 8);
	put_u32(&b, IPK_MODEL_VERSION);
	put_u64(&b, 0); /* length, patched below */
	put_u32(&b, (uint32_t)sh->n_in);
	put_u32(&b, (uint32_t)sh->hidden);
	put_u32(&b, (uint32_t)sh->layers);
	put_u32(&b, (uint32_t)sh->n_out);
	for (int k = 0; k < in->nwin; k++)
		put_f64(&b, in->window[k]);
	for (int k = 0; k < in->nwin; k++)
		put_f64(&b, in->threshold[k]);
	put_u32(&b, (uint32_t)in->nfeat);
	for (int k = 0; k < in->nfeat; k++) {
		size_t n = strnlen(in->feat[k], IPK_MODEL_FEAT_NAME - 1);
		unsigned char l = (unsigned char)n;
		put(&b, &l, 1);
		put(&b, in->feat[k], n);
		put_f32(&b, in->mean[k]);
		put_f32(&b, in->scale[k]);
	}
	put_str16(&b, in->name);
	put_str16(&b, in->meta);
	size_t np = ipk_lstm_nparams(m->net);
	const double *p = ipk_lstm_params_const(m->net);
	put_u64(&b, np);
	for (size_t k = 0; k < np; k++)
		put_f32(&b, (float)p[k]);
	put_u32(&b, in->stacked ? 1 : 0);
	if (in->stacked) {
		put_f64(&b, in->early_idle);
		put_u32(&b, (uint32_t)in->nfeat);
		for (int k = 0; k < in->nwin; k++)
			for (int i = 0; i <= in->nfeat; i++)
				put_f64(&b, in->lr_w[k][i]);
		put_u32(&b, IPK_MODEL_STACK_IN);
		for (int k = 0; k < in->nwin; k++)
			for (int i = 0; i <= IPK_MODEL_STACK_IN; i++)
				put_f64(&b, in->stack_w[k][i]);
		put_u32(&b, (uint32_t)in->gaps.n);
		for (int i = 0; i < in->gaps.n; i++) {
			put_f64(&b, in->gaps.len[i]);
			put_u64(&b, (uint64_t)in->gaps.count[i]);
		}
	}
	if (!b.oom) {
		uint64_t total = b.n + 8;
		for (int i = 0; i < 8; i++)
			b.p[12 + i] = (unsigned char)(total >> (8 * i));
		put_u64(&b, XXH64(b.p, b.n, 0));
	}
	if (b.oom) {
		free(b.p);
		return ipk_err_set(err, IPK_EXIT_OSERR, "encode model '%s': out of memory", in->name);
	}
	*buf = b.p;
	*len = b.n;
	return 0;
}

/* ------------------------------------------------------------ decoding */

struct rbuf {
	const unsigned char *p;
	size_t n, pos;
	int short_read;
	int nul;  /* a string held a NUL byte */
};

static const unsigned char *take(struct rbuf *b, size_t n)
{
	if (b->short_read || n > b->n - b->pos) {
		b->short_read = 1;
		return NULL;
	}
	const unsigned char *r = b->p + b->pos;
	b->pos += n;
	return r;
}

static uint64_t get_le(const unsigned char *x, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = (v << 8) | x[i];
	return v;
}

static uint64_t get_u64(struct rbuf *b)
{
	const unsigned char *x = take(b, 8);
	return x ? get_le(x, 8) : 0;
}

static uint32_t get_u32(struct rbuf *b)
{
	const unsigned char *x = take(b, 4);
	return x ? (uint32_t)get_le(x, 4) : 0;
}

static uint16_t get_u16(struct rbuf *b)
{
	const unsigned char *x = take(b, 2);
	return x ? (uint16_t)get_le(x, 2) : 0;
}

static float get_f32(struct rbuf *b)
{
	uint32_t u = get_u32(b);
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static double get_f64(struct rbuf *b)
{
	uint64_t u = get_u64(b);
	double d;
	memcpy(&d, &u, 8);
	return d;
}

static void get_str(struct rbuf *b, size_t n, char *dst, size_t cap)
{
	const unsigned char *x = take(b, n);
	if (!x || n >= cap) {
		b->short_read = 1;
		dst[0] = '\0';
		return;
	}
	if (memchr(x, 0, n))
		b->nul = 1;
	memcpy(dst, x, n);
	dst[n] = '\0';
}

/* The output stage after the parameters into in, of format version ver;
 * NULL or why it is bad. */
static const char *get_stage(struct rbuf *b, struct ipk_model_info *in, uint32_t ver)
{
	uint32_t kind = get_u32(b);
	if (b->short_read)
		return NULL;
	if (kind > 1)
		return "bad output stage: unknown kind";
	in->stacked = (int)kind;
	if (!kind)
		return NULL;
	in->early_idle = get_f64(b);
	if (!b->short_read && !(in->early_idle >= 0 && isfinite(in->early_idle)))
		return "bad output stage: early idle limit out of range";
	uint32_t nlr = get_u32(b);
	if (!b->short_read && nlr != (uint32_t)in->nfeat)
		return "bad output stage: regression size differs from the feature count";
	for (int k = 0; k < in->nwin && !b->short_read; k++)
		for (int i = 0; i <= in->nfeat; i++)
			in->lr_w[k][i] = get_f64(b);
	/* versions 2 and 3 hold the first six or seven inputs (weight 0 on the
	 * others), version 2 no histogram */
	static const uint32_t stack_in_of_version[IPK_MODEL_VERSION + 1] = { [2] = 6, [3] = 7,
									   [IPK_MODEL_VERSION] = IPK_MODEL_STACK_IN };
	const uint32_t want = stack_in_of_version[ver];
	uint32_t ns = get_u32(b);
	if (!b->short_read && ns != want)
		return "bad output stage: stacking size is not this build's";
	for (int k = 0; k < in->nwin && !b->short_read; k++) {
		for (uint32_t i = 0; i < want; i++)
			in->stack_w[k][i] = get_f64(b);
		for (int i = (int)want; i < IPK_MODEL_STACK_IN; i++)
			in->stack_w[k][i] = 0;
		in->stack_w[k][IPK_MODEL_STACK_IN] = get_f64(b);
	}
	in->gaps.n = 0;
	if (ver >= 3) {
		uint32_t ng = get_u32(b);
		if (!b->short_read && ng > IPK_MODEL_MAX_GAPS)
			return "bad output stage: gap histogram too large";
		for (uint32_t i = 0; i < ng && !b->short_read; i++) {
			double len = get_f64(b);
			uint64_t cnt = get_u64(b);
			if (b->short_read)
				break;
			if (!(len > 0) || !isfinite(len) || (i && !(len > in->gaps.len[i - 1])) || cnt < 1 ||
			    cnt > ((uint64_t)1 << 52))
				return "bad output stage: gap histogram lengths must be positive and ascending, counts >= 1";
			in->gaps.len[i] = len;
			in->gaps.count[i] = (double)cnt;
		}
		if (!b->short_read) {
			in->gaps.n = (int)ng;
			double t = 0;
			for (int i = in->gaps.n - 1; i >= 0; i--)
				in->gaps.tail[i] = t += in->gaps.count[i];
		}
	}
	for (int k = 0; k < in->nwin && !b->short_read; k++) {
		for (int i = 0; i <= in->nfeat; i++)
			if (!isfinite(in->lr_w[k][i]))
				return "bad output stage: a weight is not a finite number";
		for (int i = 0; i <= IPK_MODEL_STACK_IN; i++)
			if (!isfinite(in->stack_w[k][i]))
				return "bad output stage: a weight is not a finite number";
	}
	return NULL;
}

#define BAD(...) (ipk_err_set(err, IPK_EXIT_DATAERR, __VA_ARGS__), NULL)

struct ipk_model *ipk_model_decode(const unsigned char *buf, size_t len, const char *name, struct ipk_err *err)
{
	if (len < 8 || memcmp(buf, MAGIC, 8) != 0)
		return BAD("read model '%s': not an ipkit model file (bad magic)", name);
	if (len < 20 + 8)
		return BAD("read model '%s': truncated (%zu bytes)", name, len);
	struct rbuf b = { .p = buf, .n = len, .pos = 8 };
	uint32_t ver = get_u32(&b);
	if (ver == 1)
		return BAD("read model '%s': format version 1 is no longer supported (this build reads versions 2 to "
			   "%d, which add the stacked output stage); retrain it with ip-train",
			   name, IPK_MODEL_VERSION);
	if (ver < 2 || ver > IPK_MODEL_VERSION)
		return BAD("read model '%s': format version %" PRIu32 " is not supported (this build reads versions 2 "
			   "to %d)",
			   name, ver, IPK_MODEL_VERSION);
	uint64_t total = get_u64(&b);
	if (total > len)
		return BAD("read model '%s': truncated (%zu of %" PRIu64 " bytes)", name, len, total);
	if (total < len)
		return BAD("read model '%s': %" PRIu64 " bytes of junk after the model's %" PRIu64 " bytes", name,
			   (uint64_t)len - total, total);
	uint64_t want = get_le(buf + len - 8, 8), got = XXH64(buf, len - 8, 0);
	if (want != got)
		return BAD("read model '%s': checksum mismatch (file is corrupt)", name);
	b.n = len - 8;

	struct ipk_lstm_shape sh;
	sh.n_in = (int)get_u32(&b);
	sh.hidden = (int)get_u32(&b);
	sh.layers = (int)get_u32(&b);
	sh.n_out = (int)get_u32(&b);
	if (b.short_read || sh.n_in < 1 || sh.n_in > IPK_MODEL_MAX_FEAT || sh.hidden < 1 ||
	    sh.hidden > IPK_LSTM_MAX_HIDDEN || sh.layers < 1 || sh.layers > IPK_LSTM_MAX_LAYERS || sh.n_out < 1 ||
	    sh.n_out > IPK_LSTM_MAX_OUT)
		return BAD("read model '%s': bad header: sizes out of range", name);
	struct ipk_model_info *in = calloc(1, sizeof(*in));
	if (!in) {
		ipk_err_set(err, IPK_EXIT_OSERR, "read model '%s': out of memory", name);
		return NULL;
	}
	struct ipk_model *m = NULL;
	const char *why = NULL;
	in->nwin = sh.n_out;
	for (int k = 0; k < sh.n_out; k++)
		in->window[k] = get_f64(&b);
	for (int k = 0; k < sh.n_out; k++)
		in->threshold[k] = get_f64(&b);
	for (int k = 0; k < sh.n_out && !why; k++) {
		if (!(in->window[k] > 0) || !isfinite(in->window[k]) || (k && !(in->window[k] > in->window[k - 1])))
			why = "bad header: windows must be positive and ascending";
		else if (!(in->threshold[k] >= 0 && in->threshold[k] <= 1))
			why = "bad header: thresholds must lie in 0..1";
	}
	in->nfeat = (int)get_u32(&b);
	if (!why && in->nfeat != sh.n_in)
		why = "bad header: feature count differs from the network's input size";
	for (int k = 0; !why && k < in->nfeat && !b.short_read; k++) {
		const unsigned char *l = take(&b, 1);
		if (!l)
			break;
		get_str(&b, *l, in->feat[k], IPK_MODEL_FEAT_NAME);
		in->mean[k] = get_f32(&b);
		in->scale[k] = get_f32(&b);
		if (!b.short_read && (!in->feat[k][0] || !isfinite(in->mean[k]) || !(in->scale[k] > 0) ||
				      !isfinite(in->scale[k])))
			why = "bad header: a feature has an empty name or a bad normalisation";
	}
	if (!why) {
		get_str(&b, get_u16(&b), in->name, sizeof(in->name));
		get_str(&b, get_u16(&b), in->meta, sizeof(in->meta));
	}
	if (!why && b.nul)
		why = "bad header: a name holds a NUL byte";
	if (!why && !b.short_read) {
		struct ipk_err e2 = { 0 };
		struct ipk_lstm *net = ipk_lstm_new(&sh, &e2);
		if (!net) {
			ipk_err_set(err, e2.code, "read model '%s': %s", name, e2.msg);
			free(in);
			return NULL;
		}
		uint64_t np = get_u64(&b);
		if (np != ipk_lstm_nparams(net)) {
			why = "bad header: parameter count does not match the sizes";
			ipk_lstm_free(net);
		} else {
			double *p = ipk_lstm_params(net);
			for (uint64_t k = 0; k < np; k++) {
				float f = get_f32(&b);
				if (!isfinite(f) && !b.short_read)
					why = "a parameter is not a finite number";
				p[k] = f;
			}
			if (!why)
				why = get_stage(&b, in, ver);
			if (!why && !b.short_read && b.pos != b.n)
				why = "bytes left over after the output stage";
			if (why || b.short_read) {
				ipk_lstm_free(net);
			} else {
				ipk_lstm_sync(net);
				m = ipk_model_new(in, net, err);
				/* the id names the file read: an older file
				 * re-encodes as the current version, with another
				 * checksum */
				if (m && ver != IPK_MODEL_VERSION)
					snprintf(m->id, sizeof(m->id), "%s-%08" PRIx32, m->info.name, (uint32_t)(want >> 32));
			}
		}
	}
	free(in);
	if (m)
		return m;
	if (b.short_read && !why)
		why = "fields run past the end of the file";
	if (why)
		return BAD("read model '%s': %s", name, why);
	return NULL;
}

/* ------------------------------------------------------- output stage */

double ipk_logit(double p)
{
	if (!(p >= 1e-6))
		p = 1e-6;
	if (p > 1 - 1e-6)
		p = 1 - 1e-6;
	return log(p / (1 - p));
}

double ipk_sigmoid(double z)
{
	return z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z));
}

void ipk_model_gaps_fit(struct ipk_model_gaps *gp, const double *g, long n)
{
	double q = 0; /* rounding step, 0: exact */
	for (;;) {
		int m = 0, fits = 1;
		for (long i = 0; i < n; i++) {
			double v = q > 0 ? ceil(g[i] / q) * q : g[i];
			if (!(v > 0) || !isfinite(v))
				continue;
			if (m && v <= gp->len[m - 1] + 1e-9) {
				gp->count[m - 1] += 1;
				continue;
			}
			if (m == IPK_MODEL_MAX_GAPS) {
				fits = 0;
				break;
			}
			gp->len[m] = v;
			gp->count[m++] = 1;
		}
		if (fits) {
			gp->n = m;
			break;
		}
		q = q > 0 ? q * 2 : 1.0 / 64;
	}
	double t = 0;
	for (int i = gp->n - 1; i >= 0; i--)
		gp->tail[i] = t += gp->count[i];
}

/* The number of gaps longer than x (with eval.c's slack on sums of
 * timestamps). */
static double gaps_above(const struct ipk_model_gaps *gp, double x)
{
	int lo = 0, hi = gp->n;
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		if (gp->len[mid] > x + 1e-9)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo < gp->n ? gp->tail[lo] : 0;
}

double ipk_model_gaps_score(const struct ipk_model_gaps *gp, double idle, double window)
{
	if (!(idle > 0))
		idle = 0;
	return (gaps_above(gp, idle + window) + 0.5) / (gaps_above(gp, idle) + 1);
}

void ipk_model_stack_inputs(double q, double r, double h, double idle, double early_idle, float *z)
{
	double lq = ipk_logit(q), lr = ipk_logit(r), lh = ipk_logit(h), e = idle <= early_idle ? 1 : 0;
	double l = log1p(idle > 0 ? idle : 0);
	z[0] = (float)lq;
	z[1] = (float)lr;
	z[2] = (float)l;
	z[3] = (float)e;
	z[4] = (float)(e * lq);
	z[5] = (float)(e * lr);
	z[6] = (float)lh;
	z[7] = (float)(l * lq);
	z[8] = (float)(l * lr);
	z[9] = (float)(e * lh);
}

void ipk_model_output(const struct ipk_model *m, const float *x, double idle, const float *q, float *p)
{
	ipk_model_info_output(&m->info, x, idle, q, p);
}

void ipk_model_info_output(const struct ipk_model_info *in, const float *x, double idle, const float *q, float *p)
{
	if (!in->stacked) {
		if (p != q)
			memcpy(p, q, sizeof(float) * in->nwin);
		return;
	}
	for (int k = 0; k < in->nwin; k++) {
		const double *w = in->lr_w[k];
		double a = w[in->nfeat];
		for (int i = 0; i < in->nfeat; i++)
			a += w[i] * x[i];
		float z[IPK_MODEL_STACK_IN];
		ipk_model_stack_inputs(q[k], ipk_sigmoid(a), ipk_model_gaps_score(&in->gaps, idle, in->window[k]), idle,
				       in->early_idle, z);
		const double *v = in->stack_w[k];
		double b = v[IPK_MODEL_STACK_IN];
		for (int i = 0; i < IPK_MODEL_STACK_IN; i++)
			b += v[i] * z[i];
		p[k] = (float)ipk_sigmoid(b);
	}
}

/* ------------------------------------------------------------- objects */

struct ipk_model *ipk_model_new(const struct ipk_model_info *info, struct ipk_lstm *net, struct ipk_err *err)
{
	const struct ipk_lstm_shape *sh = ipk_lstm_shape(net);
	if (info->nwin != sh->n_out || info->nfeat != sh->n_in || info->nfeat > IPK_MODEL_MAX_FEAT) {
		ipk_err_set(err, IPK_EXIT_USAGE, "create model '%s': %d windows and %d features for a network of %d "
			    "outputs and %d inputs", info->name, info->nwin, info->nfeat, sh->n_out, sh->n_in);
		ipk_lstm_free(net);
		return NULL;
	}
	struct ipk_model *m = calloc(1, sizeof(*m));
	if (!m) {
		ipk_lstm_free(net);
		ipk_err_set(err, IPK_EXIT_OSERR, "create model '%s': out of memory", info->name);
		return NULL;
	}
	m->info = *info;
	m->info.name[sizeof(m->info.name) - 1] = '\0';
	m->info.meta[sizeof(m->info.meta) - 1] = '\0';
	m->net = net;
	unsigned char *buf;
	size_t len;
	if (ipk_model_encode(m, &buf, &len, err) < 0) {
		ipk_model_free(m);
		return NULL;
	}
	snprintf(m->id, sizeof(m->id), "%s-%08" PRIx32, m->info.name, (uint32_t)(XXH64(buf, len - 8, 0) >> 32));
	free(buf);
	return m;
}

void ipk_model_free(struct ipk_model *m)
{
	if (!m)
		return;
	ipk_lstm_free(m->net);
	free(m);
}

const struct ipk_model_info *ipk_model_info(const struct ipk_model *m)
{
	return &m->info;
}

struct ipk_lstm *ipk_model_net(const struct ipk_model *m)
{
	return m->net;
}

const char *ipk_model_id(const struct ipk_model *m)
{
	return m->id;
}

/* ---------------------------------------------------------------- files */

int ipk_model_save(const struct ipk_model *m, const char *path, struct ipk_err *err)
{
	unsigned char *buf;
	size_t len;
	if (ipk_model_encode(m, &buf, &len, err) < 0)
		return -1;
	char *tmp;
	if (asprintf(&tmp, "%s.tmp%ld", path, (long)getpid()) < 0) {
		free(buf);
		return ipk_err_set(err, IPK_EXIT_OSERR, "write model '%s': out of memory", path);
	}
	FILE *f = fopen(tmp, "wb");
	if (!f) {
		ipk_err_set(err, IPK_EXIT_CANTCREAT, "write model '%s': %s", path, strerror(errno));
		free(tmp);
		free(buf);
		return -1;
	}
	int bad = fwrite(buf, 1, len, f) != len;
	int e = errno;
	if (fclose(f) != 0 && !bad) {
		bad = 1;
		e = errno;
	}
	free(buf);
	if (bad || rename(tmp, path) != 0) {
		if (!bad)
			e = errno;
		unlink(tmp);
		free(tmp);
		return ipk_err_set(err, IPK_EXIT_IOERR, "write model '%s': %s", path, strerror(e));
	}
	free(tmp);
	return 0;
}

struct ipk_model *ipk_model_load(const char *path, struct ipk_err *err)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		ipk_err_set(err, IPK_EXIT_NOINPUT, "read model '%s': %s", path, strerror(errno));
		return NULL;
	}
	unsigned char *buf = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			if (cap > ((size_t)1 << 31)) {
				fclose(f);
				free(buf);
				return BAD("read model '%s': larger than 2 GiB, not a model", path);
			}
			unsigned char *nb = realloc(buf, cap);
			if (!nb) {
				fclose(f);
				free(buf);
				ipk_err_set(err, IPK_EXIT_OSERR, "read model '%s': out of memory", path);
				return NULL;
			}
			buf = nb;
		}
		size_t r = fread(buf + n, 1, cap - n, f);
		n += r;
		if (r == 0)
			break;
	}
	if (ferror(f)) {
		int e = errno;
		fclose(f);
		free(buf);
		ipk_err_set(err, IPK_EXIT_IOERR, "read model '%s': %s", path, strerror(e));
		return NULL;
	}
	fclose(f);
	struct ipk_model *m = ipk_model_decode(buf, n, path, err);
	free(buf);
	return m;
}

int ipk_model_find_default(char *path, size_t len, const char **how, struct ipk_err *err)
{
	const char *env = getenv("IPKIT_MODEL");
	if (env && env[0]) {
		snprintf(path, len, "%s", env);
		*how = "IPKIT_MODEL";
		return 0;
	}
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return ipk_err_set(err, IPK_EXIT_NOINPUT, "find default model '%s': cannot locate the running program: %s",
				   IPK_MODEL_DEFAULT_NAME, strerror(errno));
	exe[n] = 0;
	char *slash = strrchr(exe, '/');
	if (slash)
		*slash = 0;
	static const struct {
		const char *rel, *how;
	} cand[] = {
		{ "/../share/ipkit/", "installed" },
		{ "/../../models/", "source tree" },
		{ "/../../../models/", "source tree" },
	};
	for (size_t i = 0; i < sizeof(cand) / sizeof(cand[0]); i++) {
		snprintf(path, len, "%s%s%s", exe, cand[i].rel, IPK_MODEL_DEFAULT_NAME);
		if (access(path, R_OK) == 0) {
			*how = cand[i].how;
			return 0;
		}
	}
	return ipk_err_set(err, IPK_EXIT_NOINPUT,
			   "find default model '%s': not in %s/../share/ipkit nor in a source tree's models/; give --model FILE or set IPKIT_MODEL",
			   IPK_MODEL_DEFAULT_NAME, exe);
}
