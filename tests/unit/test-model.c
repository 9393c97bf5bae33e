/* Model file: round trip (memory and file), refusal of every single-byte
 * corruption, of every truncation, of other versions, of bad magic, of junk
 * after the end and of a well-checksummed file with bad sizes. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <xxhash.h>

#include "check.h"
#include "model.h"

static struct ipk_model *small_model(void)
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

int main(void)
{
	struct ipk_err err = { 0 };
	struct ipk_model *m = small_model();
	unsigned char *buf;
	size_t len;
	CHECK("encode", ipk_model_encode(m, &buf, &len, &err) == 0);
	CHECK("id is name and checksum", strncmp(ipk_model_id(m), "lstm-h2-", 8) == 0 && strlen(ipk_model_id(m)) == 16);
	CHECK("magic and little-endian version at the start", !memcmp(buf, "IPKMODEL\1\0\0\0", 12));
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
	v2[8] = 2;
	reseal(v2, len);
	CHECK("another format version refused by name",
	      !ipk_model_decode(v2, len, "v2", &err) && strstr(err.msg, "format version 2"));
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
	memcpy(v2, buf, len);
	memcpy(v2, "GIF89a..", 8);
	CHECK("not a model: bad magic", !ipk_model_decode(v2, len, "g", &err) && strstr(err.msg, "bad magic"));
	free(v2);
	free(buf);

	struct ipk_lstm_shape sh = { .n_in = 4, .hidden = 2, .layers = 1, .n_out = 2 };
	struct ipk_lstm *net = ipk_lstm_new(&sh, &err);
	struct ipk_model_info in = *ipk_model_info(m);
	CHECK("info disagreeing with the network refused", !ipk_model_new(&in, net, &err) && err.code == IPK_EXIT_USAGE);
	ipk_model_free(m);
	ipk_model_free(NULL);
	CHECK_DONE();
}
