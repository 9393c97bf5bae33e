/* libFuzzer target: the model file reader. Each input is decoded as it is,
 * and also used as edits (offset, value byte pairs) on a valid small model
 * whose checksum is then recomputed, so the fuzzer reaches the header and
 * parameter parsing behind the checksum. Any input must be refused with a
 * message or give a model that encodes back to the same bytes; never a
 * crash, a leak or undefined behaviour. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "model.h"

static unsigned char *base;
static size_t base_len;

static void make_base(void)
{
	struct ipk_err err = { 0 };
	struct ipk_lstm_shape sh = { .n_in = 2, .hidden = 3, .layers = 2, .n_out = 2 };
	struct ipk_lstm *net = ipk_lstm_new(&sh, &err);
	if (!net)
		abort();
	ipk_lstm_init(net, 1);
	struct ipk_model_info in;
	memset(&in, 0, sizeof(in));
	in.nwin = 2;
	in.window[0] = 5;
	in.window[1] = 10;
	in.threshold[0] = in.threshold[1] = 0.5;
	in.nfeat = 2;
	strcpy(in.feat[0], "a");
	strcpy(in.feat[1], "bb");
	in.scale[0] = in.scale[1] = 1;
	strcpy(in.name, "fuzz");
	/* with the stacked output stage, so edits reach its parser too */
	in.stacked = 1;
	in.early_idle = 2;
	for (int k = 0; k < 2; k++) {
		for (int i = 0; i <= 2; i++)
			in.lr_w[k][i] = 0.5 - 0.25 * i;
		for (int i = 0; i <= IPK_MODEL_STACK_IN; i++)
			in.stack_w[k][i] = 0.1 * i - 0.2;
	}
	struct ipk_model *m = ipk_model_new(&in, net, &err);
	if (!m || ipk_model_encode(m, &base, &base_len, &err) < 0)
		abort();
	ipk_model_free(m);
}

static void try_decode(const unsigned char *buf, size_t len)
{
	struct ipk_err err = { 0 };
	struct ipk_model *m = ipk_model_decode(buf, len, "fuzz", &err);
	if (!m) {
		if (!err.msg[0] || err.code != IPK_EXIT_DATAERR)
			abort();
		return;
	}
	unsigned char *again;
	size_t alen;
	if (ipk_model_encode(m, &again, &alen, &err) < 0)
		abort();
	if (alen != len || memcmp(again, buf, len) != 0)
		abort(); /* a decoded model must encode to the same bytes */
	free(again);
	ipk_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!base)
		make_base();
	try_decode(data, size);
	unsigned char *buf = malloc(base_len);
	if (!buf)
		return 0;
	memcpy(buf, base, base_len);
	for (size_t i = 0; i + 1 < size; i += 2)
		buf[((size_t)data[i] * 7 + i) % (base_len - 8)] = data[i + 1];
	uint64_t h = XXH64(buf, base_len - 8, 0);
	for (int i = 0; i < 8; i++)
		buf[base_len - 8 + i] = (unsigned char)(h >> (8 * i));
	try_decode(buf, base_len);
	free(buf);
	return 0;
}
