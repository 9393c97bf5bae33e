/* libFuzzer target: the ipkit image/delta reader (image.c, delta.c) on
 * arbitrary bytes, applied against a small fixed base and without one. Any
 * input must be decoded or refused, never crash, leak or overrun. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delta.h"
#include "memimg.h"

static struct ipk_memimg *base_img(void)
{
	/* The base the seed deltas are made against (tests/fuzz/make-seeds.sh):
	 * 64 KiB + 100 bytes, pseudo-random but for a pattern in the last 4 KiB
	 * (the same in tests/unit/test-delta.c). */
	static struct ipk_memimg *m;
	if (!m) {
		size_t n = 65536 + 100;
		uint8_t *b = malloc(n);
		uint64_t x = 0x9e3779b97f4a7c15ull;
		for (size_t i = 0; i < n; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			b[i] = i < n - 4096 ? (uint8_t)(x >> 56) : (uint8_t)(i * 7 + (i >> 12));
		}
		b[0] = 'X';
		m = ipk_memimg_from_mem(b, n, 1, 0, "base", NULL);
	}
	return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (int withbase = 0; withbase < 2; withbase++) {
		FILE *in = fmemopen((void *)data, size ? size : 1, "r");
		FILE *out = fopen("/dev/null", "w");
		if (in && out) {
			struct ipk_err err = { 0 };
			ipk_delta_apply(withbase ? base_img() : NULL, in, "fuzz", out, NULL, &err);
		}
		if (in)
			fclose(in);
		if (out)
			fclose(out);
	}
	return 0;
}
