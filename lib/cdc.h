/* cdc.h - content-defined chunking: cut bytes where their content says, so
 * that an insertion or deletion moves the cuts along with the content.
 *
 * A gear rolling hash (h = (h << 1) + gear[byte], so each bit of h depends
 * on a window of the last 64 bytes) with FastCDC's normalised cut: no cut
 * before IPK_CDC_MIN bytes, a strict condition (15 hash bits zero) up to
 * IPK_CDC_AVG, a loose one (11 bits) after it, a forced cut at IPK_CDC_MAX.
 * Chunks are 2-16 KiB, about 8 KiB on incompressible data. The gear table is
 * fixed (derived from a constant seed), so cuts are the same in every build
 * and on every machine: the delta encoder (delta.h) relies on that only for
 * its size, never for correctness.
 *
 * Ownership: struct ipk_cdc is a plain value the caller keeps; nothing to free.
 */
#ifndef IPK_CDC_H
#define IPK_CDC_H

#include <stddef.h>
#include <stdint.h>

#define IPK_CDC_MIN 2048u
#define IPK_CDC_AVG 8192u
#define IPK_CDC_MAX 16384u

struct ipk_cdc {
	uint64_t gear[256];
};

/* Fill the gear table. */
void ipk_cdc_init(struct ipk_cdc *c);

/* The length of the chunk that starts at p, with n bytes left: between
 * 1 and IPK_CDC_MAX, n when n <= IPK_CDC_MIN; 0 only when n is 0. */
size_t ipk_cdc_next(const struct ipk_cdc *c, const uint8_t *p, size_t n);

#endif
