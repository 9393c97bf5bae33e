/* sha256.h - SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), for the
 * migration transport's authentication and per-frame integrity.
 *
 * Ownership: the contexts are plain structs owned by the caller (on the
 * stack or inside another struct); nothing to free. No function fails.
 */
#ifndef IPK_SHA256_H
#define IPK_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define IPK_SHA256_LEN 32

struct ipk_sha256 {
	uint32_t h[8];
	uint64_t bytes;  /* message length so far */
	uint8_t buf[64];
	size_t nbuf;
};

void ipk_sha256_init(struct ipk_sha256 *c);
void ipk_sha256_update(struct ipk_sha256 *c, const void *data, size_t len);
/* Write the digest to out; c must be re-initialised before reuse. */
void ipk_sha256_final(struct ipk_sha256 *c, uint8_t out[IPK_SHA256_LEN]);
/* One-shot digest of data. */
void ipk_sha256(const void *data, size_t len, uint8_t out[IPK_SHA256_LEN]);

struct ipk_hmac {
	struct ipk_sha256 inner, outer;
};

/* HMAC-SHA256 keyed with key (any length: longer than 64 bytes is hashed). */
void ipk_hmac_init(struct ipk_hmac *h, const void *key, size_t keylen);
void ipk_hmac_update(struct ipk_hmac *h, const void *data, size_t len);
void ipk_hmac_final(struct ipk_hmac *h, uint8_t out[IPK_SHA256_LEN]);
/* One-shot HMAC of data. */
void ipk_hmac(const void *key, size_t keylen, const void *data, size_t len, uint8_t out[IPK_SHA256_LEN]);

/* Compare n bytes in time independent of where they differ: 0 when equal. */
int ipk_ct_memcmp(const void *a, const void *b, size_t n);

/* Lowercase hex of n bytes into out (2n + 1 bytes). Returns out. */
char *ipk_hex(const uint8_t *in, size_t n, char *out);

#endif
