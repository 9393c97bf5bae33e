/* cdc.c - content-defined chunking (see cdc.h). */
#include "cdc.h"

#define MASK_STRICT (((uint64_t)1 << 15) - 1) << 49 /* 15 top bits: used below IPK_CDC_AVG */
#define MASK_LOOSE (((uint64_t)1 << 11) - 1) << 53  /* 11 top bits: from IPK_CDC_AVG on */

void ipk_cdc_init(struct ipk_cdc *c)
{
	uint64_t x = 0x69706b69742d6364ull; /* splitmix64 from a fixed seed */
	for (int i = 0; i < 256; i++) {
		uint64_t z = (x += 0x9e3779b97f4a7c15ull);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		c->gear[i] = z ^ (z >> 31);
	}
}

size_t ipk_cdc_next(const struct ipk_cdc *c, const uint8_t *p, size_t n)
{
	if (n <= IPK_CDC_MIN)
		return n;
	size_t end = n < IPK_CDC_MAX ? n : IPK_CDC_MAX;
	size_t mid = end < IPK_CDC_AVG ? end : IPK_CDC_AVG;
	uint64_t h = 0;
	/* The hash needs 64 bytes of history: start it before the minimum. */
	size_t i = IPK_CDC_MIN - 64;
	for (; i < IPK_CDC_MIN; i++)
		h = (h << 1) + c->gear[p[i]];
	for (; i < mid; i++) {
		h = (h << 1) + c->gear[p[i]];
		if (!(h & MASK_STRICT))
			return i + 1;
	}
	for (; i < end; i++) {
		h = (h << 1) + c->gear[p[i]];
		if (!(h & MASK_LOOSE))
			return i + 1;
	}
	return end;
}
