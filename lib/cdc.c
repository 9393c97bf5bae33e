/* cdc.c - content-defined chunking (see cdc.h). */
#include "cdc.h"

/* A content point: the hash's 11 top bits (those that depend on all of the
 * last 64 bytes) zero. */
#define MASK ((((uint64_t)1 << 11) - 1) << 53)

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

/* The cut condition never looks at where the chunk started (only the
 * forced cut at IPK_CDC_MAX does): a chunker that started its chunks
 * elsewhere (as in the file before an insertion) makes the same content
 * cuts once it is IPK_CDC_MIN + 64 bytes past the difference. A minimum
 * chunk size counted from the chunk's start, or a cut condition that
 * changes with the distance from it (FastCDC's normalised chunking, used
 * before), makes a cut depend on the previous one, and the cuts of two
 * such files could stay apart for many chunks after an insertion.
 *
 * Every byte is hashed (the content points before a cut matter), four at
 * a time: a hash under 2^53 is one whose top 11 bits are zero, so when the
 * least of the four is not, none of them is a content point; otherwise
 * those four bytes are gone over again one by one. */
size_t ipk_cdc_next(const struct ipk_cdc *c, struct ipk_cdc_scan *s, const uint8_t *p, size_t n)
{
	size_t at = s->at;
	if (at >= n)
		return 0;
	size_t end = n - at < IPK_CDC_MAX ? n : at + IPK_CDC_MAX;
	uint64_t h = s->h;
	size_t last = s->last, i = at;
	int cut = 0;
	while (!cut && i < end) {
		for (; i + 4 <= end; i += 4) {
			uint64_t h1 = (h << 1) + c->gear[p[i]];
			uint64_t h2 = (h1 << 1) + c->gear[p[i + 1]];
			uint64_t h3 = (h2 << 1) + c->gear[p[i + 2]];
			uint64_t h4 = (h3 << 1) + c->gear[p[i + 3]];
			uint64_t m12 = h1 < h2 ? h1 : h2, m34 = h3 < h4 ? h3 : h4;
			if ((m12 < m34 ? m12 : m34) <= ~MASK)
				break;
			h = h4;
		}
		for (size_t stop = end - i < 4 ? end : i + 4; i < stop;) {
			h = (h << 1) + c->gear[p[i++]];
			if (h & MASK)
				continue;
			/* A content point ending at i: a cut when the one before
			 * it (or the start of the data) is at least IPK_CDC_MIN
			 * bytes back. */
			cut = i - last >= IPK_CDC_MIN;
			last = i;
			if (cut)
				break;
		}
	}
	s->at = i;
	s->last = last;
	s->h = h;
	return i - at;
}
