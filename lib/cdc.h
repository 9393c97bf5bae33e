/* cdc.h - content-defined chunking: cut bytes where their content says, so
 * that an insertion or deletion moves the cuts along with the content.
 *
 * A gear rolling hash (h = (h << 1) + gear[byte], so each bit of h depends
 * on a window of the last 64 bytes) marks content points: bytes where the
 * hash's top 11 bits are zero (1 byte in 2048 on incompressible data). A
 * chunk ends after a content point that has no other content point in the
 * IPK_CDC_MIN bytes before it (the start of the data counts as one), or
 * IPK_CDC_MAX bytes after its start when no such point comes first.
 * Whether a content point ends a chunk thus depends only on the
 * IPK_CDC_MIN + 64 bytes up to it, not on where the chunk started:
 * where two files have the same content after some point (an insertion or
 * a deletion), both cut at the first such content point more than
 * IPK_CDC_MIN + 64 bytes past it, and at the same content from there on
 * (the forced cuts after it follow from it): the cuts fall on the same
 * content again within one chunk after the change. Content cuts are at
 * least IPK_CDC_MIN apart; a chunk is shorter than that only at the end of
 * the data or right after a forced IPK_CDC_MAX chunk. Chunks are about
 * 5.5 KiB on incompressible data. The gear table is fixed (derived from a
 * constant seed), so cuts are the same in every build and on every
 * machine: the delta encoder (delta.h) relies on that only for its size,
 * never for correctness (deltas store byte ranges, not cuts).
 *
 * Ownership: struct ipk_cdc and struct ipk_cdc_scan are plain values the
 * caller keeps; nothing to free. The scan does not keep the data pointer.
 */
#ifndef IPK_CDC_H
#define IPK_CDC_H

#include <stddef.h>
#include <stdint.h>

#define IPK_CDC_MIN 2048u  /* least distance between content cuts */
#define IPK_CDC_MAX 16384u /* longest chunk */

struct ipk_cdc {
	uint64_t gear[256];
};

/* Where the chunking of one buffer stands: zero it (= { 0 }) to start at
 * the buffer's first byte. */
struct ipk_cdc_scan {
	size_t at;   /* where the next chunk starts */
	size_t last; /* 1 + offset of the last content point, 0: the start */
	uint64_t h;  /* gear hash of the bytes before at */
};

/* Fill the gear table. */
void ipk_cdc_init(struct ipk_cdc *c);

/* The length of the next chunk of p[0..n), which starts at s->at; moves s
 * past it. Between 1 and IPK_CDC_MAX; 0 only when s->at is n. Every call
 * of one scan must pass the same p and n: the hash and the last content
 * point carry over from one chunk to the next. */
size_t ipk_cdc_next(const struct ipk_cdc *c, struct ipk_cdc_scan *s, const uint8_t *p, size_t n);

#endif
