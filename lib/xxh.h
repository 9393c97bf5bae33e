/* xxh.h - XXH3 for the hot paths: libxxhash's run-time dispatch on x86.
 *
 * Include after <xxhash.h> (with XXH_INLINE_ALL). xxhash's inline code is
 * built for the baseline (SSE2) and hashes whole images at about half the
 * speed of libxxhash's *_dispatch functions, which pick AVX2 or AVX-512 when
 * the CPU has them. The inline state (XXH3_state_t) is the library's: the
 * header and the library come from the same package. Elsewhere, the inline
 * functions. Nothing here allocates; pure functions of their input.
 */
#ifndef IPK_XXH_H
#define IPK_XXH_H

#include <stddef.h>

#if defined(__x86_64__) && !defined(IPK_XXH_NO_DISPATCH)
XXH64_hash_t XXH3_64bits_dispatch(const void *input, size_t len);
XXH64_hash_t XXH3_64bits_withSeed_dispatch(const void *input, size_t len, XXH64_hash_t seed);
XXH_errorcode XXH3_64bits_update_dispatch(XXH3_state_t *state, const void *input, size_t len);
XXH_errorcode XXH3_128bits_update_dispatch(XXH3_state_t *state, const void *input, size_t len);
#define ipk_xxh3_64 XXH3_64bits_dispatch
#define ipk_xxh3_64_seed XXH3_64bits_withSeed_dispatch
#define ipk_xxh3_64_update XXH3_64bits_update_dispatch
#define ipk_xxh3_128_update XXH3_128bits_update_dispatch
#else
#define ipk_xxh3_64 XXH3_64bits
#define ipk_xxh3_64_seed XXH3_64bits_withSeed
#define ipk_xxh3_64_update XXH3_64bits_update
#define ipk_xxh3_128_update XXH3_128bits_update
#endif

#endif
