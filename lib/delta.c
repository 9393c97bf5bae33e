/* delta.c - encode memory images against a base and apply the result (see
 * delta.h; the byte format is in image.h and ipkit-image(5)). */
#define _GNU_SOURCE
#include "delta.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <lz4.h>
#include <zstd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>
#include "xxh.h"

#include "cdc.h"
#include "image.h"
#include "outfile.h"
#include "qemusave.h"

#define BATCH_ITEMS 256
#define BATCH_BYTES (1u << 20)
#define WINDOW_BATCHES 32
#define OPAQUE_DEC_MAX IPK_MI_OPAQUE_MAX
#define SPREAD_BYTES (8u << 20) /* base reads spread wider than this are dropped early */
#define SPREAD_BATCHES 8        /* encode: spread batches between such drops */

static const uint8_t zero_page[IPK_PAGE_SIZE];

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* ---------------------------------------------------------------- encode */

struct batch {
	size_t i0, i1;   /* items [i0, i1) */
	size_t cap, len; /* output buffer */
	uint8_t *buf;
	struct ipk_delta_stats st;
	int failed;
};

struct worker {
	LZ4_stream_t *lz4;       /* LZ4 state, reused for every block */
	uint8_t *xbuf, *c1, *c2; /* XOR input and two compressed candidates */
	uint8_t *c3;             /* the dictionary candidate */
	uint8_t *dict;           /* DICT_MAX bytes of dictionary, then the page (LZ4 prefix mode) */
	uint8_t scratch[2][IPK_PAGE_SIZE];
	struct encoder *enc;
	ZSTD_CCtx *zc;           /* zstd codec: reused context */
	uint8_t *zmap, *zpre, *zcur; /* page map, prefix (base pages), changed pages of a ZPAGES record */
	double cpu;    /* thread CPU seconds spent encoding */
	size_t nbatch; /* batches encoded */
};

struct encoder {
	const struct ipk_memimg *base, *nw;
	const struct ipk_mi_item *items;
	const struct ipk_mi_item **base_opaque; /* by ordinal */
	size_t nbase_opaque;
	struct batch *batches; /* the window's */
	atomic_size_t next;
	atomic_uint spread; /* batches whose base reads were spread out */
	size_t wend;
	int accel, no_xor, no_dict, zstd, zlevel;
	int hashed; /* both images carry page hashes (else compare bytes) */
	uint64_t zhash;
};

/* The record of a pending COPY / ZERO run. */
struct run {
	struct ipk_img_rec r;
	int open;
};

static void emit(struct batch *b, const struct ipk_img_rec *r, const uint8_t *hash8, const uint8_t *data, size_t n)
{
	ipk_img_rec_put(r, b->buf + b->len);
	b->len += IPK_IMG_REC_LEN;
	if (hash8) {
		memcpy(b->buf + b->len, hash8, 8);
		b->len += 8;
	}
	if (n) {
		memcpy(b->buf + b->len, data, n);
		b->len += n;
	}
}

static void run_flush(struct batch *b, struct run *ru)
{
	if (ru->open)
		emit(b, &ru->r, NULL, NULL, 0);
	ru->open = 0;
}

/* Encode data (n bytes) as LZ4 of itself or, with ref, of itself XOR ref
 * (ref zero-padded to n); sets *coding and returns the payload length after
 * the hash, with the payload at *out. */
/* dst = a XOR b, n bytes, a word at a time. */
static void xor_into(uint8_t *dst, const uint8_t *a, const uint8_t *b, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t x, y;
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		x ^= y;
		memcpy(dst + i, &x, 8);
	}
	for (; i < n; i++)
		dst[i] = a[i] ^ b[i];
}

/* One independent LZ4 block in the worker's reused state. The state is
 * fully reset first (LZ4_loadDict of nothing: a cleared table and offsets
 * past it), so a block is coded the same whatever the state coded before.
 * A fast reset (LZ4_resetStream_fast) keeps the old table and only moves
 * its offsets on, and LZ4 codes a block differently in a state that never
 * coded (or whose offsets ran past 1 GiB, which clears the table: there an
 * empty entry is a match candidate at the block's start) than in one that
 * did (entries of earlier blocks are out of reach): the output depended on
 * which batches each thread had coded before (issue 4). Coded as before in
 * a state that did; the reset clears 16 KiB. */
static int lz4_block(struct worker *w, const uint8_t *src, uint8_t *dst, int n, int cap)
{
	LZ4_loadDict(w->lz4, (const char *)src, 0);
	return LZ4_compress_fast_continue(w->lz4, (const char *)src, (char *)dst, n, cap, w->enc->accel);
}

/* The dictionary of a page at addr (coding LZ4_DICT) is the base's page at
 * the same address: the parts of the page left as they were are matches in
 * it, what was rewritten compresses by itself (XOR would mix the new bytes
 * with the old ones). The base's neighbouring pages and NEW's previous page
 * were tried as well (on two live snapshots of the lab guest): they made the
 * delta larger and the encoding slower. The dictionary is copied right
 * before the data (DICT_MAX bytes, then the page) so that LZ4 works in its
 * faster prefix mode, in the encoder and in the decoder. */
#define DICT_MAX IPK_PAGE_SIZE

static size_t compress_best(struct worker *w, const uint8_t *data, size_t n, const uint8_t *ref, size_t refn,
			    uint8_t *coding, const uint8_t **out)
{
	int bound = LZ4_compressBound((int)n);
	int l1 = lz4_block(w, data, w->c1, (int)n, bound);
	size_t best = l1 > 0 ? (size_t)l1 : n + 1;
	*coding = IPK_CODE_LZ4;
	*out = w->c1;
	if (ref && !w->enc->no_xor) {
		size_t k = refn < n ? refn : n;
		xor_into(w->xbuf, data, ref, k);
		memcpy(w->xbuf + k, data + k, n - k);
		int l2 = lz4_block(w, w->xbuf, w->c2, (int)n, bound);
		if (l2 > 0 && (size_t)l2 < best) {
			best = (size_t)l2;
			*coding = IPK_CODE_LZ4_XOR;
			*out = w->c2;
		}
	}
	if (best >= n) {
		*coding = IPK_CODE_STORED;
		*out = data;
		return n;
	}
	return best;
}

/* compress_best for a page at addr, also trying LZ4 with the base's
 * neighbouring pages as dictionary. */
static size_t try_dict(struct worker *w, const uint8_t *data, size_t n, const uint8_t *ref, size_t refn, size_t best,
		       uint8_t *coding, const uint8_t **out);

static size_t compress_page(struct worker *w, const uint8_t *data, size_t n, const uint8_t *ref, size_t refn,
			    uint8_t *coding, const uint8_t **out)
{
	struct encoder *e = w->enc;
	/* A page with no 8-byte word left where it was has been rewritten
	 * whole: XOR cannot pay, and the dictionary only when the page does not
	 * compress well alone (its old content may have moved within it). On
	 * the lab's busy pair this skips two of three compressions for a third
	 * of the changed pages and costs 0.5 % of the delta's size. */
	if (ref && refn == n && n == IPK_PAGE_SIZE) {
		size_t eq = 0;
		for (size_t i = 0; i < n && !eq; i += 8)
			eq = !memcmp(data + i, ref + i, 8);
		if (!eq) {
			size_t best = compress_best(w, data, n, NULL, 0, coding, out);
			if (best <= n / 4 || e->no_dict)
				return best;
			return try_dict(w, data, n, ref, refn, best, coding, out);
		}
	}
	size_t best = compress_best(w, data, n, ref, refn, coding, out);
	if (!ref || refn == 0 || e->no_dict || best <= 16)
		return best;
	return try_dict(w, data, n, ref, refn, best, coding, out);
}

/* LZ4 of data with ref as dictionary, when smaller than best (the size of
 * the candidate at *out, coded *coding). */
static size_t try_dict(struct worker *w, const uint8_t *data, size_t n, const uint8_t *ref, size_t refn, size_t best,
		       uint8_t *coding, const uint8_t **out)
{
	struct encoder *e = w->enc;
	size_t dl = refn;
	memcpy(w->dict, ref, dl);
	memcpy(w->dict + dl, data, n);
	LZ4_resetStream_fast(w->lz4);
	if (LZ4_loadDict(w->lz4, (const char *)w->dict, (int)dl) < 0)
		return best;
	int l3 = LZ4_compress_fast_continue(w->lz4, (const char *)w->dict + dl, (char *)w->c3, (int)n,
					    LZ4_compressBound((int)n), e->accel);
	if (l3 > 0 && (size_t)l3 < best) {
		best = (size_t)l3;
		*coding = IPK_CODE_LZ4_DICT;
		*out = w->c3;
	}
	return best;
}

static void encode_opaque(struct worker *w, struct batch *b, const struct ipk_mi_item *it)
{
	struct encoder *e = w->enc;
	size_t nb;
	/* an opaque item's bytes (NEW may still be parsed: not ipk_memimg_bytes) */
	const uint8_t *data = ipk_memimg_item_data(e->nw, it, NULL);
	const uint8_t *ref = NULL;
	size_t refn = 0;
	struct ipk_img_rec r = { .type = IPK_REC_OPAQUE, .addr = it->len, .count = 0xffffffffu };
	b->st.opaque_bytes += it->len;
	if (it->ord < e->nbase_opaque) {
		const struct ipk_mi_item *bo = e->base_opaque[it->ord];
		ref = ipk_memimg_bytes(e->base, &nb) + bo->off;
		refn = bo->len;
		r.count = it->ord;
		if (refn == it->len && !memcmp(ref, data, it->len)) {
			r.coding = IPK_CODE_COPY;
			b->st.opaque_same += it->len;
			emit(b, &r, NULL, NULL, 0);
			return;
		}
	}
	uint8_t h[8];
	put64(h, ipk_xxh3_64(data, it->len));
	const uint8_t *payload;
	size_t n = compress_best(w, data, it->len, ref, refn, &r.coding, &payload);
	if (r.coding != IPK_CODE_LZ4_XOR)
		r.count = 0xffffffffu;
	r.payload = (uint32_t)(8 + n);
	emit(b, &r, h, payload, n);
}

/* What a page of NEW is against the base's page at its address. */
enum page_kind {
	PAGE_SAME,    /* the same bytes */
	PAGE_FILL,    /* uniform (fill) */
	PAGE_CHANGED, /* anything else */
};

struct page_view {
	const uint8_t *data;          /* NEW's bytes */
	const struct ipk_mi_page *bp; /* the base's page at the address, or NULL */
	const uint8_t *ref;           /* its bytes, or NULL */
	uint64_t hash;                /* XXH3-64 of data; see view_page */
	uint8_t fill;                 /* PAGE_FILL: the byte */
};

/* The span of the base's file a batch read, for trim_spread. */
struct base_span {
	uint64_t lo, hi;
};

/* Look page it of NEW up in the base and classify it, counting it in b's
 * stats (pages, pages_same, pages_zero, pages_new). v->hash is the page's
 * hash as read with the image; when the images were read without page
 * hashes it is only the zero-page mark, unless need_hash asks for it to be
 * computed. */
static enum page_kind view_page(struct worker *w, struct batch *b, const struct ipk_mi_item *it, int need_hash,
				size_t *hint, struct base_span *span, struct page_view *v)
{
	struct encoder *e = w->enc;
	b->st.pages++;
	v->data = ipk_memimg_item_data(e->nw, it, w->scratch[0]);
	v->bp = e->base ? ipk_memimg_find(e->base, it->addr, hint) : NULL;
	v->ref = v->bp ? ipk_memimg_page_data(e->base, v->bp, w->scratch[1]) : NULL;
	v->fill = 0;
	if (v->bp && !v->bp->record) {
		span->lo = v->bp->off < span->lo ? v->bp->off : span->lo;
		span->hi = v->bp->off > span->hi ? v->bp->off : span->hi;
	}
	v->hash = e->hashed || !need_hash ? it->hash : ipk_xxh3_64(v->data, it->len);
	if (v->bp && v->bp->len == it->len && (!e->hashed || v->bp->hash == v->hash) &&
	    !memcmp(v->ref, v->data, it->len)) {
		b->st.pages_same++;
		return PAGE_SAME;
	}
	if (it->zero || (it->len == IPK_PAGE_SIZE && v->hash == e->zhash && !memcmp(v->data, zero_page, IPK_PAGE_SIZE))) {
		v->fill = it->zero ? it->fill : 0;
		b->st.pages_zero++;
		return PAGE_FILL;
	}
	if (!v->bp)
		b->st.pages_new++;
	return PAGE_CHANGED;
}

/* The base's pages are read in NEW's order, which may jump around the
 * base's file (pages QEMU sent again): each read maps up to 64 KiB around
 * it. After every SPREAD_BATCHES batches whose reads were spread out, drop
 * them, not only at the end of the window. */
static void trim_spread(struct encoder *e, const struct base_span *span)
{
	if (e->base && span->hi > span->lo && span->hi - span->lo > SPREAD_BYTES &&
	    atomic_fetch_add(&e->spread, 1) % SPREAD_BATCHES == SPREAD_BATCHES - 1)
		ipk_memimg_trim(e->base);
}

static void encode_batch(struct worker *w, struct batch *b)
{
	struct encoder *e = w->enc;
	struct run ru = { .open = 0 };
	size_t hint = 0;
	struct base_span span = { UINT64_MAX, 0 };
	memset(&b->st, 0, sizeof(b->st));
	b->len = 0;
	for (size_t i = b->i0; i < b->i1; i++) {
		const struct ipk_mi_item *it = &e->items[i];
		if (it->type == IPK_MI_OPAQUE) {
			run_flush(b, &ru);
			encode_opaque(w, b, it);
			continue;
		}
		struct page_view v;
		enum page_kind kind = view_page(w, b, it, 1, &hint, &span, &v);
		const uint8_t *data = v.data, *ref = v.ref;
		const struct ipk_mi_page *bp = v.bp;
		uint8_t coding = kind == PAGE_SAME ? IPK_CODE_COPY : IPK_CODE_ZERO, fill = v.fill;
		if (kind == PAGE_CHANGED) {
			struct ipk_img_rec r = { .type = IPK_REC_PAGES, .block = it->block, .rflags0 = it->rflags,
						 .rflags1 = it->rflags, .count = 1, .addr = it->addr,
						 .len = (uint16_t)(it->len == IPK_PAGE_SIZE ? 0 : it->len) };
			/* A run of COPY pages right before this page at the
			 * addresses before it goes into its record. */
			struct ipk_img_rec *q = &ru.r;
			if (ru.open && q->coding == IPK_CODE_COPY && q->block == it->block && q->len == r.len &&
			    it->addr == q->addr + (uint64_t)q->count * IPK_PAGE_SIZE && q->count < UINT32_MAX - 1 &&
			    (q->count == 1 || q->rflags1 == it->rflags)) {
				r.addr = q->addr;
				r.rflags0 = q->rflags0;
				r.count = q->count + 1;
				ru.open = 0;
			} else {
				run_flush(b, &ru);
			}
			uint8_t hb[8];
			put64(hb, v.hash);
			const uint8_t *payload;
			size_t n = compress_page(w, data, it->len, ref, bp ? bp->len : 0, &r.coding, &payload);
			if (r.coding == IPK_CODE_LZ4_XOR)
				b->st.pages_xor++;
			else if (r.coding == IPK_CODE_LZ4_DICT)
				b->st.pages_dict++;
			else
				b->st.pages_lz4++;
			r.payload = (uint32_t)(8 + n);
			emit(b, &r, hb, payload, n);
			continue;
		}
		/* COPY or ZERO: extend the open run when this page continues it. */
		struct ipk_img_rec *r = &ru.r;
		uint16_t l16 = (uint16_t)(it->len == IPK_PAGE_SIZE ? 0 : it->len);
		if (ru.open && r->coding == coding && r->block == it->block && r->len == l16 && r->fill == fill &&
		    it->addr == r->addr + (uint64_t)r->count * IPK_PAGE_SIZE &&
		    (r->count == 1 || r->rflags1 == it->rflags)) {
			r->rflags1 = it->rflags;
			r->count++;
			continue;
		}
		run_flush(b, &ru);
		memset(r, 0, sizeof(*r));
		r->type = IPK_REC_PAGES;
		r->coding = coding;
		r->block = it->block;
		r->rflags0 = r->rflags1 = it->rflags;
		r->count = 1;
		r->addr = it->addr;
		r->len = l16;
		r->fill = fill;
		ru.open = 1;
	}
	run_flush(b, &ru);
	trim_spread(e, &span);
}

/* ------------------------------------------------------- zstd page batches
 *
 * Codec zstd (format 3): the page items of a batch between opaque items go
 * into one ZPAGES record: a compact page map (one tag byte per page, with
 * the address, QEMU flags, block, fill and length only where they differ
 * from what the previous page implies), then the changed pages' content
 * concatenated and coded as one zstd frame whose prefix is the base's pages
 * at the same addresses in the same order. zstd thus finds the parts of a
 * page left as they were (at a fixed distance, its repeat offsets), matches
 * across the pages of the batch, and entropy-codes the literals.
 *
 * Payload: le64 XXH3-64 of the content (seeded with XXH3-64 of the raw
 * map), le32 raw map length, le32 stored map length (0: the map is stored
 * raw), le32 content length, le32 frame length, the map, the frame. */
#define ZTAG_OP 0x03    /* 0 COPY, 1 ZERO, 2 coded */
#define ZTAG_ADDR 0x04  /* zigzag varint of (addr - expected) / 4096 follows */
#define ZTAG_FLAGS 0x08 /* le16 QEMU flags follow */
#define ZTAG_BLOCK 0x10 /* le16 block follows */
#define ZTAG_FILL 0x20  /* the fill byte follows (ZERO) */
#define ZTAG_LEN 0x40   /* le16 content length (1..4095) follows */
#define ZMAP_MAX 18     /* bytes of one map entry at most */
#define ZHDR_LEN 24
#define ZMAX_ITEMS 1024 /* pages of one ZPAGES record at most (decoder limit) */
/* The window must reach from a page to the base's page at its address, a
 * batch's prefix away (the levels' own windows are smaller for small
 * inputs, which on the lab's idle pair made the delta 45 % larger). */
#define ZWINDOW_LOG 21

struct zseg {
	size_t n, maplen, curlen, prelen;
	uint64_t addr0, expect;
	uint16_t block0, rflags0, block, rflags;
};

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

static void zseg_add(struct worker *w, struct zseg *s, const struct ipk_mi_item *it, int op, uint8_t fill,
		     const uint8_t *data, const uint8_t *ref, size_t refn)
{
	if (s->n == 0) {
		s->addr0 = s->expect = it->addr;
		s->block0 = s->block = it->block;
		s->rflags0 = s->rflags = it->rflags;
	}
	uint8_t *m = w->zmap + s->maplen, *q = m + 1;
	uint8_t tag = (uint8_t)op;
	if (it->addr != s->expect) {
		int64_t dp = (int64_t)(it->addr - s->expect) / (int64_t)IPK_PAGE_SIZE;
		tag |= ZTAG_ADDR;
		q += put_varint(q, ((uint64_t)dp << 1) ^ (uint64_t)(dp >> 63));
	}
	if (it->rflags != s->rflags) {
		tag |= ZTAG_FLAGS;
		*q++ = (uint8_t)it->rflags;
		*q++ = (uint8_t)(it->rflags >> 8);
	}
	if (it->block != s->block) {
		tag |= ZTAG_BLOCK;
		*q++ = (uint8_t)it->block;
		*q++ = (uint8_t)(it->block >> 8);
	}
	if (fill) {
		tag |= ZTAG_FILL;
		*q++ = fill;
	}
	if (it->len != IPK_PAGE_SIZE) {
		tag |= ZTAG_LEN;
		*q++ = (uint8_t)it->len;
		*q++ = (uint8_t)(it->len >> 8);
	}
	*m = tag;
	s->maplen = (size_t)(q - w->zmap);
	s->expect = it->addr + IPK_PAGE_SIZE;
	s->rflags = it->rflags;
	s->block = it->block;
	s->n++;
	if (op == 2) {
		memcpy(w->zcur + s->curlen, data, it->len);
		s->curlen += it->len;
		if (ref) {
			memcpy(w->zpre + s->prelen, ref, refn);
			s->prelen += refn;
		}
	}
}

static void zseg_flush(struct worker *w, struct batch *b, struct zseg *s)
{
	if (!s->n)
		return;
	struct encoder *e = w->enc;
	uint8_t *rec = b->buf + b->len, *p = rec + IPK_IMG_REC_LEN + ZHDR_LEN;
	size_t room = b->cap - b->len - IPK_IMG_REC_LEN - ZHDR_LEN;
	/* The map: zstd when it pays (runs of unchanged pages make it tiny). */
	size_t mstored = 0;
	if (s->maplen > 32) {
		size_t k = ZSTD_compress2(w->zc, p, room, w->zmap, s->maplen);
		if (!ZSTD_isError(k) && k < s->maplen)
			mstored = k;
	}
	if (!mstored)
		memcpy(p, w->zmap, s->maplen);
	size_t mlen = mstored ? mstored : s->maplen;
	p += mlen;
	room -= mlen;
	size_t flen = 0;
	if (s->curlen) {
		if (s->prelen)
			ZSTD_CCtx_refPrefix(w->zc, w->zpre, s->prelen);
		flen = ZSTD_compress2(w->zc, p, room, w->zcur, s->curlen);
		if (ZSTD_isError(flen)) {
			b->failed = 1; /* cannot happen: room >= ZSTD_compressBound */
			ZSTD_CCtx_reset(w->zc, ZSTD_reset_session_only);
			flen = 0;
		}
	}
	uint8_t *z = rec + IPK_IMG_REC_LEN;
	put64(z, ipk_xxh3_64_seed(w->zcur, s->curlen, ipk_xxh3_64(w->zmap, s->maplen)));
	for (int i = 0; i < 4; i++) {
		z[8 + i] = (uint8_t)(s->maplen >> (8 * i));
		z[12 + i] = (uint8_t)(mstored >> (8 * i));
		z[16 + i] = (uint8_t)(s->curlen >> (8 * i));
		z[20 + i] = (uint8_t)(flen >> (8 * i));
	}
	struct ipk_img_rec r = { .type = IPK_REC_ZPAGES, .coding = IPK_CODE_ZSTD, .block = s->block0,
				 .rflags0 = s->rflags0, .rflags1 = s->rflags0, .count = (uint32_t)s->n,
				 .addr = s->addr0, .payload = (uint32_t)(ZHDR_LEN + mlen + flen) };
	ipk_img_rec_put(&r, rec);
	b->len += IPK_IMG_REC_LEN + r.payload;
	b->st.zbatches++;
	b->st.zmap_bytes += mlen;
	(void)e;
	memset(s, 0, sizeof(*s));
}

static void encode_batch_z(struct worker *w, struct batch *b)
{
	struct encoder *e = w->enc;
	struct zseg s;
	memset(&s, 0, sizeof(s));
	size_t hint = 0;
	struct base_span span = { UINT64_MAX, 0 };
	memset(&b->st, 0, sizeof(b->st));
	b->len = 0;
	for (size_t i = b->i0; i < b->i1; i++) {
		const struct ipk_mi_item *it = &e->items[i];
		if (it->type == IPK_MI_OPAQUE) {
			zseg_flush(w, b, &s);
			encode_opaque(w, b, it);
			continue;
		}
		struct page_view v;
		enum page_kind kind = view_page(w, b, it, 0, &hint, &span, &v);
		if (kind == PAGE_CHANGED) {
			b->st.pages_zstd++;
			zseg_add(w, &s, it, 2, 0, v.data, v.ref, v.bp ? v.bp->len : 0);
		} else {
			zseg_add(w, &s, it, kind == PAGE_FILL, v.fill, NULL, NULL, 0);
		}
	}
	zseg_flush(w, b, &s);
	trim_spread(e, &span);
}

static double thread_cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct encoder *e = w->enc;
	double c0 = thread_cpu();
	for (;;) {
		size_t k = atomic_fetch_add(&e->next, 1);
		if (k >= e->wend)
			break;
		if (e->zstd)
			encode_batch_z(w, &e->batches[k]);
		else
			encode_batch(w, &e->batches[k]);
		w->nbatch++;
	}
	w->cpu += thread_cpu() - c0;
	return NULL;
}

static void worker_free(struct worker *w)
{
	if (w->lz4)
		LZ4_freeStream(w->lz4);
	free(w->xbuf);
	free(w->c1);
	free(w->c2);
	free(w->c3);
	free(w->dict);
	ZSTD_freeCCtx(w->zc);
	free(w->zmap);
	free(w->zpre);
	free(w->zcur);
}

static int worker_init(struct worker *w, struct encoder *e)
{
	memset(w, 0, sizeof(*w));
	w->enc = e;
	size_t bound = (size_t)LZ4_compressBound(BATCH_BYTES) + 64;
	w->lz4 = LZ4_createStream();
	w->xbuf = malloc(BATCH_BYTES);
	w->c1 = malloc(bound);
	w->c2 = malloc(bound);
	w->c3 = malloc((size_t)LZ4_compressBound(IPK_PAGE_SIZE));
	w->dict = malloc(DICT_MAX + IPK_PAGE_SIZE);
	if (!w->lz4 || !w->xbuf || !w->c1 || !w->c2 || !w->c3 || !w->dict) {
		worker_free(w);
		return -1;
	}
	if (e->zstd) {
		w->zc = ZSTD_createCCtx();
		w->zmap = malloc(BATCH_ITEMS * ZMAP_MAX);
		w->zpre = malloc(BATCH_BYTES + IPK_PAGE_SIZE);
		w->zcur = malloc(BATCH_BYTES + IPK_PAGE_SIZE);
		if (!w->zc || !w->zmap || !w->zpre || !w->zcur ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(w->zc, ZSTD_c_compressionLevel, e->zlevel)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(w->zc, ZSTD_c_checksumFlag, 0)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(w->zc, ZSTD_c_contentSizeFlag, 0)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(w->zc, ZSTD_c_windowLog, ZWINDOW_LOG))) {
			worker_free(w);
			return -1;
		}
	}
	return 0;
}

struct sink {
	FILE *f;
	XXH3_state_t *h;
	uint64_t n;
	char name[300]; /* for messages: "'PATH'", "the delta" or "the image" */
};

static int sink_write(struct sink *s, const void *p, size_t n, struct ipk_err *err)
{
	if (n && fwrite(p, 1, n, s->f) != n)
		return ipk_err_set(err, IPK_EXIT_IOERR, "write %s: %s", s->name, strerror(errno));
	ipk_xxh3_64_update(s->h, p, n);
	s->n += n;
	return 0;
}

/* ---------------------------------------------------------------- chunks */

/* Plain files whose content shifted: NEW cut into content-defined chunks
 * (cdc.h), each found in the base's chunks by hash (then compared) or coded
 * by itself; RANGE records in NEW's order. Used instead of pages when it
 * finds clearly more of NEW in the base than same-offset pages do. */
#define RANGE_MAX (64u << 10) /* content bytes of a coded range record */

struct cdc_ent {
	uint64_t off, len, boff; /* in NEW; boff: in the base, UINT64_MAX when not found */
};

struct cdc_plan {
	struct cdc_ent *e;
	size_t n, cap;
	uint64_t copied;
};

struct cdc_slot {
	uint64_t hash, off;
	uint32_t len, used;
};

static int cdc_plan_make(const struct ipk_memimg *base, const struct ipk_memimg *nw, struct cdc_plan *pl,
			 struct ipk_err *err)
{
	struct ipk_cdc cdc;
	ipk_cdc_init(&cdc);
	size_t bl, nl;
	const uint8_t *b = ipk_memimg_bytes(base, &bl), *n = ipk_memimg_bytes(nw, &nl);
	size_t cap = 64;
	while (cap < 2 * (bl / IPK_CDC_MIN + 1))
		cap *= 2;
	struct cdc_slot *t = calloc(cap, sizeof(*t));
	memset(pl, 0, sizeof(*pl));
	if (!t)
		return ipk_err_set(err, IPK_EXIT_OSERR, "encode delta: out of memory");
	struct ipk_cdc_scan sb = { 0 }, sn = { 0 };
	for (size_t at = 0, since = 0; at < bl;) {
		size_t k = ipk_cdc_next(&cdc, &sb, b, bl);
		uint64_t h = ipk_xxh3_64(b + at, k);
		size_t i = (size_t)h & (cap - 1);
		while (t[i].used && !(t[i].hash == h && t[i].len == k))
			i = (i + 1) & (cap - 1);
		if (!t[i].used)
			t[i] = (struct cdc_slot){ .hash = h, .off = at, .len = (uint32_t)k, .used = 1 };
		at += k;
		if ((since += k) >= IPK_MI_TRIM_BYTES) {
			ipk_memimg_trim(base);
			since = 0;
		}
	}
	for (size_t at = 0, since = 0; at < nl;) {
		size_t k = ipk_cdc_next(&cdc, &sn, n, nl);
		if (pl->n == pl->cap) {
			size_t nc = pl->cap ? 2 * pl->cap : 1024;
			struct cdc_ent *ne = realloc(pl->e, nc * sizeof(*ne));
			if (!ne) {
				free(t);
				return ipk_err_set(err, IPK_EXIT_OSERR, "encode delta: out of memory");
			}
			pl->e = ne;
			pl->cap = nc;
		}
		struct cdc_ent *e = &pl->e[pl->n++];
		*e = (struct cdc_ent){ .off = at, .len = k, .boff = UINT64_MAX };
		uint64_t h = ipk_xxh3_64(n + at, k);
		for (size_t i = (size_t)h & (cap - 1); t[i].used; i = (i + 1) & (cap - 1))
			if (t[i].hash == h && t[i].len == k && !memcmp(b + t[i].off, n + at, k)) {
				e->boff = t[i].off;
				pl->copied += k;
				break;
			}
		at += k;
		if ((since += k) >= IPK_MI_TRIM_BYTES) {
			ipk_memimg_trim(base);
			ipk_memimg_trim(nw);
			since = 0;
		}
	}
	free(t);
	return 0;
}

/* Bytes of NEW that fixed pages would copy from the base (same offset, same hash). */
static uint64_t same_page_bytes(const struct ipk_memimg *base, const struct ipk_memimg *nw)
{
	size_t np, hint = 0;
	const struct ipk_mi_page *pg = ipk_memimg_pages(nw, &np);
	uint64_t same = 0;
	uint8_t s1[IPK_PAGE_SIZE], s2[IPK_PAGE_SIZE];
	for (size_t i = 0; i < np; i++) {
		const struct ipk_mi_page *bp = ipk_memimg_find(base, pg[i].addr, &hint);
		if (!bp || bp->len != pg[i].len)
			continue;
		if (ipk_memimg_page_hashes(base) && ipk_memimg_page_hashes(nw) ? bp->hash == pg[i].hash
										 : !memcmp(ipk_memimg_page_data(base, bp, s1),
											   ipk_memimg_page_data(nw, &pg[i], s2), bp->len))
			same += pg[i].len;
	}
	return same;
}

/* Write NEW as RANGE records following the plan. */
static int cdc_encode(struct worker *w, const struct cdc_plan *pl, struct sink *sk, struct ipk_delta_stats *st,
		      struct ipk_err *err)
{
	size_t nl;
	const uint8_t *n = ipk_memimg_bytes(w->enc->nw, &nl);
	uint8_t rb[IPK_IMG_REC_LEN + 8];
	uint64_t since = 0;
	for (size_t i = 0; i < pl->n;) {
		struct ipk_img_rec r = { .type = IPK_REC_RANGE };
		const struct cdc_ent *e = &pl->e[i];
		uint64_t len = e->len;
		size_t j = i + 1;
		if (e->boff != UINT64_MAX) {
			/* Chunks that follow each other in the base too: one copy. */
			while (j < pl->n && pl->e[j].boff == e->boff + len && len + pl->e[j].len <= UINT32_MAX) {
				len += pl->e[j].len;
				j++;
			}
			r.coding = IPK_CODE_COPY;
			r.addr = e->boff;
			r.count = (uint32_t)len;
			ipk_img_rec_put(&r, rb);
			if (sink_write(sk, rb, IPK_IMG_REC_LEN, err) < 0)
				return -1;
			st->cdc_copied += j - i;
			st->cdc_copied_bytes += len;
		} else {
			while (j < pl->n && pl->e[j].boff == UINT64_MAX && len + pl->e[j].len <= RANGE_MAX) {
				len += pl->e[j].len;
				j++;
			}
			/* A single chunk may exceed RANGE_MAX only if IPK_CDC_MAX did. */
			const uint8_t *data = n + e->off, *payload;
			size_t pn = compress_best(w, data, len, NULL, 0, &r.coding, &payload);
			r.count = (uint32_t)len;
			r.payload = (uint32_t)(8 + pn);
			ipk_img_rec_put(&r, rb);
			put64(rb + IPK_IMG_REC_LEN, ipk_xxh3_64(data, len));
			if (sink_write(sk, rb, sizeof(rb), err) < 0 || sink_write(sk, payload, pn, err) < 0)
				return -1;
		}
		st->cdc_chunks += j - i;
		if ((since += len) >= IPK_MI_TRIM_BYTES) {
			ipk_memimg_trim(w->enc->nw);
			ipk_memimg_trim(w->enc->base);
			since = 0;
		}
		i = j;
	}
	return 0;
}

#define WINDOW_ITEMS (WINDOW_BATCHES * BATCH_ITEMS)

/* Cut items[0, n) into up to WINDOW_BATCHES batches (e->batches): up to
 * BATCH_ITEMS items or BATCH_BYTES bytes each, so that the output does not
 * depend on the thread count nor on how the items arrived. A batch that
 * ends at n without being full is kept only when final (no item follows).
 * Returns the number of batches; *used: the items they hold. */
static size_t form_batches(struct encoder *e, const struct ipk_mi_item *items, size_t n, int final, size_t *used)
{
	size_t nb = 0, i = 0;
	while (nb < WINDOW_BATCHES && i < n) {
		struct batch *b = &e->batches[nb];
		memset(b, 0, sizeof(*b));
		b->i0 = i;
		size_t bytes = 0, j = i;
		while (j < n && j - b->i0 < BATCH_ITEMS && bytes < BATCH_BYTES) {
			bytes += items[j].len;
			b->cap += IPK_IMG_REC_LEN + 8 + (size_t)LZ4_compressBound((int)items[j].len);
			j++;
		}
		if (j == n && !final && j - b->i0 < BATCH_ITEMS && bytes < BATCH_BYTES)
			break; /* more items may join this batch */
		b->i1 = i = j;
		/* zstd: per run of pages a record header, its fixed part and the
		 * frames' overhead beyond the content (which the LZ4 bound covers). */
		b->cap += ZSTD_compressBound(bytes) + ZSTD_compressBound(BATCH_ITEMS * ZMAP_MAX) + 4096;
		nb++;
	}
	*used = i;
	return nb;
}

int ipk_delta_encode(const struct ipk_memimg *base, const struct ipk_memimg *nw, FILE *out,
		     const struct ipk_delta_opts *opts, struct ipk_delta_stats *stp, struct ipk_err *err)
{
	struct ipk_delta_stats st;
	memset(&st, 0, sizeof(st));
	struct encoder e;
	memset(&e, 0, sizeof(e));
	e.base = base;
	e.nw = nw;
	e.accel = opts && opts->acceleration > 0 ? opts->acceleration : 1;
	e.no_xor = opts && opts->no_xor;
	e.no_dict = opts && opts->no_dict;
	e.zstd = opts && opts->codec == IPK_DELTA_CODEC_ZSTD ? 1
		 : opts && opts->codec == IPK_DELTA_CODEC_LZ4 ? 0
							     : base != NULL;
	e.zlevel = opts && opts->zlevel ? opts->zlevel : IPK_DELTA_ZLEVEL;
	e.hashed = ipk_memimg_page_hashes(nw) && (!base || ipk_memimg_page_hashes(base));
	e.zhash = ipk_xxh3_64(zero_page, IPK_PAGE_SIZE);
	int nthreads = opts && opts->threads > 0 ? opts->threads : 1;
	if (nthreads > 64)
		nthreads = 64;
	struct worker *ws = calloc((size_t)nthreads, sizeof(*ws));
	pthread_t *tids = calloc((size_t)nthreads, sizeof(*tids));
	struct sink sk = { .f = out, .h = XXH3_createState() };
	if (opts && opts->out_name)
		snprintf(sk.name, sizeof(sk.name), "'%.280s'", opts->out_name);
	else
		snprintf(sk.name, sizeof(sk.name), "%s", base ? "the delta" : "the image");
	int rc = -1, nw_ok = 0, use_cdc = 0;
	uint8_t *slots[WINDOW_BATCHES] = { 0 };
	size_t slotcap[WINDOW_BATCHES] = { 0 };
	struct batch wbatches[WINDOW_BATCHES];
	struct ipk_mi_item *witems = malloc(WINDOW_ITEMS * sizeof(*witems));
	struct cdc_plan plan = { 0 };
	e.batches = wbatches;
	if (!ws || !tids || !sk.h || !witems) {
		ipk_err_set(err, IPK_EXIT_OSERR, "encode delta: out of memory");
		goto done;
	}
	for (; nw_ok < nthreads; nw_ok++)
		if (worker_init(&ws[nw_ok], &e) < 0) {
			ipk_err_set(err, IPK_EXIT_OSERR, "encode delta: out of memory");
			goto done;
		}
	/* The base's opaque items by ordinal. */
	if (base) {
		size_t nb;
		const struct ipk_mi_item *bi = ipk_memimg_items(base, &nb);
		for (size_t i = 0; i < nb; i++)
			e.nbase_opaque += bi[i].type == IPK_MI_OPAQUE;
		e.base_opaque = calloc(e.nbase_opaque + 1, sizeof(*e.base_opaque));
		if (!e.base_opaque) {
			ipk_err_set(err, IPK_EXIT_OSERR, "encode delta: out of memory");
			goto done;
		}
		for (size_t i = 0; i < nb; i++)
			if (bi[i].type == IPK_MI_OPAQUE)
				e.base_opaque[bi[i].ord] = &bi[i];
	}

	/* NEW may still be parsed (a followed image): its kind and blocks are
	 * final with its first item; its size may only be known at the end. */
	int state;
	ipk_memimg_follow_wait(nw, 1, &state);
	if (state < 0) {
		ipk_memimg_follow_join(nw, err);
		goto done;
	}
	/* Header, and the block table of QEMU content. */
	struct ipk_img_header hd = { .kind = (uint8_t)ipk_memimg_kind(nw) };
	size_t nraw = 0;
	if (state == 1)
		ipk_memimg_bytes(nw, &nraw);
	else
		hd.flags |= IPK_IMG_FLAG_SIZE_AT_END;
	hd.size = nraw;
	if (base) {
		size_t bl;
		ipk_memimg_bytes(base, &bl);
		hd.flags |= IPK_IMG_FLAG_DELTA;
		hd.base_size = bl;
		ipk_memimg_hash(base, &hd.base_lo, &hd.base_hi);
	}
	uint8_t hb[IPK_IMG_HDR_LEN];
	ipk_img_header_put(&hd, hb);
	XXH3_64bits_reset(sk.h);
	if (sink_write(&sk, hb, sizeof(hb), err) < 0)
		goto done;
	if (opts && opts->meta) {
		size_t ml = strlen(opts->meta);
		if (ml > IPK_IMG_META_MAX) {
			ipk_err_set(err, IPK_EXIT_SOFTWARE, "encode delta: metadata too long");
			goto done;
		}
		struct ipk_img_rec r = { .type = IPK_REC_META, .payload = (uint32_t)ml };
		uint8_t rb[IPK_IMG_REC_LEN];
		ipk_img_rec_put(&r, rb);
		if (sink_write(&sk, rb, sizeof(rb), err) < 0 || sink_write(&sk, opts->meta, ml, err) < 0)
			goto done;
	}
	size_t nblk;
	const struct ipk_mi_block *blk = ipk_memimg_blocks(nw, &nblk);
	if (hd.kind == IPK_MI_QEMU || hd.kind == IPK_MI_LIBVIRT) {
		size_t plen = 4;
		for (size_t i = 0; i < nblk; i++)
			plen += 1 + blk[i].namelen + 16;
		uint8_t *p = malloc(IPK_IMG_REC_LEN + plen);
		if (!p) {
			ipk_err_set(err, IPK_EXIT_OSERR, "encode delta: out of memory");
			goto done;
		}
		struct ipk_img_rec r = { .type = IPK_REC_BLOCKS, .payload = (uint32_t)plen, .count = (uint32_t)nblk };
		ipk_img_rec_put(&r, p);
		uint8_t *q = p + IPK_IMG_REC_LEN;
		q[0] = (uint8_t)nblk;
		q[1] = (uint8_t)(nblk >> 8);
		q[2] = q[3] = 0;
		q += 4;
		for (size_t i = 0; i < nblk; i++) {
			*q++ = blk[i].namelen;
			memcpy(q, blk[i].name, blk[i].namelen);
			q += blk[i].namelen;
			put64(q, blk[i].base);
			put64(q + 8, blk[i].len);
			q += 16;
		}
		int wrc = sink_write(&sk, p, IPK_IMG_REC_LEN + plen, err);
		free(p);
		if (wrc < 0)
			goto done;
	}

	/* Plain content that shifted: content-defined chunks instead of pages,
	 * when they find clearly more of NEW in the base. */
	if (base && !(opts && opts->no_cdc) && hd.kind == IPK_MI_PLAIN && ipk_memimg_kind(base) == IPK_MI_PLAIN &&
	    nraw >= 2 * IPK_CDC_MIN) {
		uint64_t same = same_page_bytes(base, nw);
		if (same < nraw - nraw / 16) {
			if (cdc_plan_make(base, nw, &plan, err) < 0)
				goto done;
			use_cdc = plan.copied > same + same / 8 + IPK_PAGE_SIZE;
		}
	}
	if (use_cdc) {
		double t0 = ipk_mono();
		size_t np;
		ipk_memimg_pages(nw, &np);
		st.pages = np;
		if (cdc_encode(&ws[0], &plan, &sk, &st, err) < 0)
			goto done;
		st.t_encode = ipk_mono() - t0;
		st.batches_main = 1;
		goto end;
	}

	/* Windows of batches, as NEW's items become usable: encode in
	 * parallel, write in order. witems holds items [g, g + have). */
	e.items = witems;
	size_t g = 0, have = 0;
	for (;;) {
		size_t want = g + WINDOW_ITEMS;
		size_t ready = ipk_memimg_follow_wait(nw, want, &state);
		if (state < 0) {
			ipk_memimg_follow_join(nw, err);
			goto done;
		}
		size_t upto = ready < want ? ready : want;
		if (upto - g > have) {
			ipk_memimg_follow_items(nw, g + have, upto, witems + have);
			have = upto - g;
		}
		size_t used, nb = form_batches(&e, witems, have, state == 1 && upto == ready, &used);
		if (nb == 0)
			break; /* every item encoded */
		for (size_t k = 0; k < nb; k++) {
			if (wbatches[k].cap > slotcap[k]) {
				uint8_t *q = realloc(slots[k], wbatches[k].cap);
				if (!q) {
					ipk_err_set(err, IPK_EXIT_OSERR, "encode delta: out of memory");
					goto done;
				}
				slots[k] = q;
				slotcap[k] = wbatches[k].cap;
			}
			wbatches[k].buf = slots[k];
		}
		double t0 = ipk_mono();
		atomic_store(&e.next, 0);
		e.wend = nb;
		int started = 0;
		for (int t = 1; t < nthreads && (size_t)t < nb; t++, started++)
			if (pthread_create(&tids[t], NULL, worker_main, &ws[t]) != 0)
				break;
		worker_main(&ws[0]);
		for (int t = 1; t <= started; t++)
			pthread_join(tids[t], NULL);
		double t1 = ipk_mono();
		st.t_encode += t1 - t0;
		int wrc = 0;
		for (size_t k = 0; k < nb; k++) {
			struct batch *b = &wbatches[k];
			if (wrc == 0)
				wrc = sink_write(&sk, b->buf, b->len, err);
			st.pages += b->st.pages;
			st.pages_same += b->st.pages_same;
			st.pages_zero += b->st.pages_zero;
			st.pages_lz4 += b->st.pages_lz4;
			st.pages_xor += b->st.pages_xor;
			st.pages_dict += b->st.pages_dict;
			st.pages_new += b->st.pages_new;
			st.pages_zstd += b->st.pages_zstd;
			st.zbatches += b->st.zbatches;
			st.zmap_bytes += b->st.zmap_bytes;
			if (b->failed && wrc == 0)
				wrc = ipk_err_set(err, IPK_EXIT_SOFTWARE, "encode delta: zstd failed");
			st.opaque_bytes += b->st.opaque_bytes;
			st.opaque_same += b->st.opaque_same;
			b->buf = NULL;
		}
		st.t_write += ipk_mono() - t1;
		/* Keep the working set to one window of the inputs. */
		ipk_memimg_trim(nw);
		ipk_memimg_trim(base);
		if (wrc < 0)
			goto done;
		memmove(witems, witems + used, (have - used) * sizeof(*witems));
		have -= used;
		g += used;
	}

end:
	if (ipk_memimg_follow_join(nw, err) < 0)
		goto done;
	ipk_memimg_bytes(nw, &nraw);
	if (base) {
		/* Pages the base has and NEW lacks ("removed"). */
		size_t np, hint = 0;
		const struct ipk_mi_page *bpg = ipk_memimg_pages(base, &np);
		for (size_t i = 0; i < np; i++)
			st.pages_removed += ipk_memimg_find(nw, bpg[i].addr, &hint) == NULL;
	}
	/* END: content size and XXH3-128, checksum of everything before the payload. */
	{
		struct ipk_img_rec r = { .type = IPK_REC_END, .payload = 32 };
		uint8_t p[IPK_IMG_REC_LEN + 32];
		ipk_img_rec_put(&r, p);
		if (sink_write(&sk, p, IPK_IMG_REC_LEN, err) < 0)
			goto done;
		uint64_t lo, hi;
		ipk_memimg_hash(nw, &lo, &hi);
		put64(p, nraw);
		put64(p + 8, lo);
		put64(p + 16, hi);
		put64(p + 24, XXH3_64bits_digest(sk.h));
		if (sink_write(&sk, p, 32, err) < 0)
			goto done;
	}
	if (fflush(out) != 0) {
		ipk_err_set(err, IPK_EXIT_IOERR, "write %s: %s", sk.name, strerror(errno));
		goto done;
	}
	st.bytes_in = nraw;
	st.bytes_out = sk.n;
	ipk_memimg_hash(nw, &st.id_lo, &st.id_hi);
	rc = 0;
done:
	for (int t = 0; t < nw_ok; t++) {
		if (t == 0) {
			st.cpu_main = ws[t].cpu;
			st.batches_main = ws[t].nbatch;
		} else {
			st.cpu_helpers += ws[t].cpu;
			st.batches_helpers += ws[t].nbatch;
		}
	}
	if (stp)
		*stp = st;
	for (int t = 0; t < nw_ok; t++)
		worker_free(&ws[t]);
	free(ws);
	free(tids);
	for (size_t k = 0; k < WINDOW_BATCHES; k++)
		free(slots[k]);
	free(witems);
	free(e.base_opaque);
	free(plan.e);
	if (sk.h)
		XXH3_freeState(sk.h);
	return rc;
}

/* ----------------------------------------------------------------- apply */

#define ZFLIGHT 2 /* ZPAGES records decoded at once (the machines have 2 cores) */

struct decoder {
	FILE *in, *out;
	const char *name;
	const char *what; /* for messages: "apply delta" with a base, "read image" without */
	const struct ipk_memimg *base;
	XXH3_state_t *sh, *oh; /* stream checksum, output XXH3-128 */
	uint64_t pos, written, size; /* size: bound when size_at_end */
	int size_at_end;
	struct ipk_mi_block *blocks;
	size_t nblocks;
	int have_blocks, kind;
	const struct ipk_mi_item **base_opaque;
	size_t nbase_opaque;
	uint8_t *cbuf, *dbuf; /* compressed payload, decoded content */
	uint8_t *dict;        /* DICT_MAX bytes of dictionary, then the decoded page */
	uint64_t pages_seen;  /* pages since the base was last trimmed */
	uint64_t span_pages;  /* pages since blo, bhi were reset */
	uint64_t blo, bhi;    /* span of the base's bytes read in the last 1024 pages */
	int version;
	/* ZPAGES records, several at a time: helper threads decode up to
	 * ZFLIGHT of them while the calling thread reads the next ones and
	 * writes the decoded ones in order. */
	struct zdec *zs[ZFLIGHT + 1]; /* buffers, made on first use */
	int zq[ZFLIGHT];              /* slots in flight, oldest first */
	int nzq;
	struct ipk_err *err;
	const uint8_t *bbuf;  /* the base's bytes (NULL without a base) */
	size_t blen;
	/* Pending output (counted in written): pieces of the base, of the
	 * current batch's decoded pages and of harena, written in order by
	 * seg_flush before anything else is and at the end of each batch. */
	struct iovec *iov;
	size_t niov, iov_bytes;
	uint8_t *harena; /* page record headers of the pending output */
	size_t hlen;
};

struct zent {
	uint64_t addr;
	const struct ipk_mi_page *bp;
	uint16_t fl, blk, len;
	uint8_t op, fill;
};

struct zdec {
	pthread_t t;
	int run;        /* t is decoding this slot */
	ZSTD_DCtx *dc;
	uint8_t *in, *map, *pre, *cur;
	struct zent *ent;
	/* one record, as parsed for zdec_decode */
	const struct ipk_memimg *base;
	const uint8_t *frame;
	size_t flen, craw, prelen, mraw;
	uint32_t count;
	uint64_t at;    /* its offset in the delta */
	const char *bad; /* set by zdec_decode: why the record is refused */
};

static int corrupt(struct decoder *d, const char *why)
{
	return ipk_err_set(d->err, IPK_EXIT_DATAERR, "%s '%s': %s at offset %llu", d->what, d->name, why,
			   (unsigned long long)d->pos);
}

static int rd(struct decoder *d, void *p, size_t n)
{
	if (n && fread(p, 1, n, d->in) != n) {
		if (ferror(d->in))
			return ipk_err_set(d->err, IPK_EXIT_IOERR, "%s '%s': %s", d->what, d->name, strerror(errno));
		return ipk_err_set(d->err, IPK_EXIT_DATAERR, "%s '%s': truncated at offset %llu", d->what, d->name,
				   (unsigned long long)d->pos);
	}
	ipk_xxh3_64_update(d->sh, p, n);
	d->pos += n;
	return 0;
}

#define SEG_MAX (2 * ZMAX_ITEMS + 16)        /* pending pieces at most */
#define HARENA_LEN (ZMAX_ITEMS * 300 + 4096) /* their headers' bytes */
#define SEG_DIRECT (64u << 10) /* pending output at least this long bypasses the stream's buffer */

/* Write the pending pieces: to the descriptor with writev, past the
 * stream's buffer (flushed first, so the order stays), when there is one
 * and they are long enough; else through the stream. */
static int seg_flush(struct decoder *d)
{
	if (!d->niov)
		return 0;
	struct iovec *v = d->iov;
	size_t nv = d->niov, total = d->iov_bytes;
	d->niov = d->iov_bytes = d->hlen = 0;
	for (size_t i = 0; i < nv; i++)
		ipk_xxh3_128_update(d->oh, v[i].iov_base, v[i].iov_len);
	int fd = total >= SEG_DIRECT ? fileno(d->out) : -1;
	if (fd < 0) {
		for (size_t i = 0; i < nv; i++)
			if (fwrite(v[i].iov_base, 1, v[i].iov_len, d->out) != v[i].iov_len)
				return ipk_err_set(d->err, IPK_EXIT_IOERR, "%s '%s': write: %s", d->what, d->name,
						   strerror(errno));
		return 0;
	}
	if (fflush(d->out) != 0)
		return ipk_err_set(d->err, IPK_EXIT_IOERR, "%s '%s': write: %s", d->what, d->name, strerror(errno));
	while (nv) {
		ssize_t k = writev(fd, v, nv > IOV_MAX ? IOV_MAX : (int)nv);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return ipk_err_set(d->err, IPK_EXIT_IOERR, "%s '%s': write: %s", d->what, d->name,
					   k < 0 ? strerror(errno) : "nothing written");
		size_t done = (size_t)k;
		while (nv && done >= v->iov_len) {
			done -= v->iov_len;
			v++;
			nv--;
		}
		if (nv) { /* a partial write: the rest of this piece next */
			v->iov_base = (uint8_t *)v->iov_base + done;
			v->iov_len -= done;
		}
	}
	return 0;
}

/* Output n bytes at p, which stay as they are until the end of the current
 * batch (the base's bytes, decoded pages, harena): joined to the previous
 * piece when they follow it, so that unchanged stretches of the base go out
 * as one piece. */
static int seg_add(struct decoder *d, const uint8_t *p, size_t n)
{
	if (n > d->size - d->written)
		return corrupt(d, "more content than the header announces");
	if (!n)
		return 0;
	struct iovec *l = d->niov ? &d->iov[d->niov - 1] : NULL;
	if (l && (const uint8_t *)l->iov_base + l->iov_len == p) {
		l->iov_len += n;
	} else {
		if (d->niov == SEG_MAX && seg_flush(d) < 0)
			return -1;
		d->iov[d->niov++] = (struct iovec){ .iov_base = (void *)p, .iov_len = n };
	}
	d->iov_bytes += n;
	d->written += n;
	return 0;
}

/* seg_add of a copy of n (<= 300) bytes, kept in harena. */
static int seg_add_copy(struct decoder *d, const uint8_t *p, size_t n)
{
	if (d->hlen + n > HARENA_LEN && seg_flush(d) < 0)
		return -1;
	uint8_t *q = d->harena + d->hlen;
	memcpy(q, p, n);
	d->hlen += n;
	return seg_add(d, q, n);
}

static int wr(struct decoder *d, const void *p, size_t n)
{
	if (n > d->size - d->written)
		return corrupt(d, "more content than the header announces");
	if (seg_flush(d) < 0)
		return -1;
	if (n && fwrite(p, 1, n, d->out) != n)
		return ipk_err_set(d->err, IPK_EXIT_IOERR, "%s '%s': write: %s", d->what, d->name, strerror(errno));
	ipk_xxh3_128_update(d->oh, p, n);
	d->written += n;
	return 0;
}

/* Read a coded payload (hash + STORED/LZ4/LZ4_XOR data) into d->dbuf as n
 * bytes of content, XORing with ref (refn bytes, zero-padded) when asked. */
static int read_coded(struct decoder *d, const struct ipk_img_rec *r, size_t n, const uint8_t *ref, size_t refn)
{
	size_t bound = (size_t)LZ4_compressBound((int)n);
	if (r->payload < 8 || r->payload - 8 > (r->coding == IPK_CODE_STORED ? n : bound))
		return corrupt(d, "bad payload length");
	uint8_t hb[8];
	if (rd(d, hb, 8) < 0)
		return -1;
	size_t pl = r->payload - 8;
	if (r->coding == IPK_CODE_STORED) {
		if (pl != n)
			return corrupt(d, "bad payload length");
		if (rd(d, d->dbuf, n) < 0)
			return -1;
	} else {
		if (rd(d, d->cbuf, pl) < 0)
			return -1;
		int got = LZ4_decompress_safe((const char *)d->cbuf, (char *)d->dbuf, (int)pl, (int)n);
		if (got != (int)n)
			return corrupt(d, "undecodable LZ4 block");
		if (r->coding == IPK_CODE_LZ4_XOR) {
			if (!ref)
				return corrupt(d, "XOR against a missing base part");
			size_t k = refn < n ? refn : n;
			xor_into(d->dbuf, d->dbuf, ref, k);
		}
	}
	if (ipk_xxh3_64(d->dbuf, n) != get64(hb))
		return corrupt(d, "content checksum mismatch");
	return 0;
}

/* A page coded LZ4 with the base's page at its address as dictionary. */
static int read_dict_page(struct decoder *d, const struct ipk_img_rec *r, size_t n, const uint8_t *ref, size_t refn)
{
	if (!ref || refn == 0)
		return corrupt(d, "dictionary page where the base has none");
	if (r->payload < 8 || r->payload - 8 > (size_t)LZ4_compressBound((int)n))
		return corrupt(d, "bad payload length");
	uint8_t hb[8];
	size_t pl = r->payload - 8;
	if (rd(d, hb, 8) < 0 || rd(d, d->cbuf, pl) < 0)
		return -1;
	memcpy(d->dict, ref, refn);
	int got = LZ4_decompress_safe_usingDict((const char *)d->cbuf, (char *)d->dict + refn, (int)pl, (int)n,
						(const char *)d->dict, (int)refn);
	if (got != (int)n)
		return corrupt(d, "undecodable LZ4 block");
	memcpy(d->dbuf, d->dict + refn, n);
	if (ipk_xxh3_64(d->dbuf, n) != get64(hb))
		return corrupt(d, "content checksum mismatch");
	return 0;
}

static int do_blocks(struct decoder *d, const struct ipk_img_rec *r)
{
	if (d->have_blocks || (d->kind != IPK_MI_QEMU && d->kind != IPK_MI_LIBVIRT) || r->payload < 4 || r->payload > 4 + 65535u * 272)
		return corrupt(d, "unexpected block table");
	uint8_t *p = malloc(r->payload);
	if (!p)
		return ipk_err_set(d->err, IPK_EXIT_OSERR, "%s '%s': out of memory", d->what, d->name);
	if (rd(d, p, r->payload) < 0) {
		free(p);
		return -1;
	}
	size_t n = (size_t)p[0] | (size_t)p[1] << 8, at = 4;
	d->blocks = calloc(n + 1, sizeof(*d->blocks));
	if (!d->blocks) {
		free(p);
		return ipk_err_set(d->err, IPK_EXIT_OSERR, "%s '%s': out of memory", d->what, d->name);
	}
	for (size_t i = 0; i < n; i++) {
		if (at >= r->payload || at + 1 + p[at] + 16 > r->payload) {
			free(p);
			return corrupt(d, "bad block table");
		}
		struct ipk_mi_block *b = &d->blocks[i];
		b->namelen = p[at];
		memcpy(b->name, p + at + 1, b->namelen);
		b->base = get64(p + at + 1 + b->namelen);
		b->len = get64(p + at + 9 + b->namelen);
		at += 1 + (size_t)b->namelen + 16;
	}
	free(p);
	d->nblocks = n;
	d->have_blocks = 1;
	return 0;
}

static int do_opaque(struct decoder *d, const struct ipk_img_rec *r)
{
	uint64_t n = r->addr;
	if (n == 0 || n > OPAQUE_DEC_MAX || n > d->size - d->written)
		return corrupt(d, "bad opaque length");
	const uint8_t *ref = NULL;
	size_t refn = 0;
	if (r->count != 0xffffffffu) {
		if (!d->base || r->count >= d->nbase_opaque)
			return corrupt(d, "reference to a missing base part");
		size_t bl;
		ref = ipk_memimg_bytes(d->base, &bl) + d->base_opaque[r->count]->off;
		refn = d->base_opaque[r->count]->len;
	}
	if (r->coding == IPK_CODE_COPY) {
		if (!ref || refn != n || r->payload != 0)
			return corrupt(d, "bad copy of a base part");
		return wr(d, ref, n);
	}
	if (r->coding > IPK_CODE_LZ4_XOR)
		return corrupt(d, "bad opaque coding");
	if (read_coded(d, r, n, ref, refn) < 0)
		return -1;
	return wr(d, d->dbuf, n);
}

/* Write one page of NEW at addr (flags fl, block blk, plen bytes of content)
 * in the content's own layout. */
static int put_page(struct decoder *d, uint64_t addr, uint16_t fl, uint16_t blk, size_t plen, const uint8_t *content,
		    const struct ipk_mi_page *from, int stable)
{
	/* from: the base's page when content is a copy of it. Its bytes in the
	 * base (record header included) are used as they are when they are
	 * exactly the bytes to write. stable: content stays as it is until the
	 * end of the batch (decoded pages), so it can be pending output. */
	if (from && d->bbuf && (from->off > d->blen || d->blen - from->off < plen))
		from = NULL;
	if (d->kind == IPK_MI_PLAIN) {
		if ((from && content == d->bbuf + from->off) || stable)
			return seg_add(d, content, plen);
		return wr(d, content, plen);
	}
	if (d->kind == IPK_MI_PROCESS) {
		uint8_t ab[8];
		put64(ab, addr);
		if (plen != IPK_PAGE_SIZE || addr == IPK_PROC_END)
			return corrupt(d, "bad process page record");
		if (wr(d, ab, 8) < 0 || wr(d, content, plen) < 0)
			return -1;
		return 0;
	}
	uint16_t kind = fl & ~IPK_RAM_CONTINUE;
	uint8_t hdr[300];
	int hl = ipk_mi_page_header(d->blocks, d->nblocks, blk, addr, fl, hdr);
	if (hl < 0 || (kind != IPK_RAM_ZERO && kind != IPK_RAM_PAGE) || plen != IPK_PAGE_SIZE)
		return corrupt(d, "bad QEMU page record");
	if (from && d->bbuf && from->off >= (uint64_t)hl) {
		const uint8_t *src = d->bbuf + from->off - hl;
		int same = kind == IPK_RAM_ZERO ? from->record && d->bbuf[from->off] == content[0]
						: !from->record && content == d->bbuf + from->off;
		if (same && !memcmp(src, hdr, (size_t)hl))
			return seg_add(d, src, (size_t)hl + (kind == IPK_RAM_ZERO ? 1 : IPK_PAGE_SIZE));
	}
	if (kind == IPK_RAM_ZERO) { /* header and fill byte */
		hdr[hl] = content[0];
		return d->iov ? seg_add_copy(d, hdr, (size_t)hl + 1) : wr(d, hdr, (size_t)hl + 1);
	}
	if (stable && d->iov)
		return seg_add_copy(d, hdr, (size_t)hl) < 0 ? -1 : seg_add(d, content, IPK_PAGE_SIZE);
	if (wr(d, hdr, (size_t)hl) < 0 || wr(d, content, IPK_PAGE_SIZE) < 0)
		return -1;
	return 0;
}

/* Drop the base's pages read so far every 64 MiB of pages, or every 1024
 * pages when they were spread out (each read may map 64 KiB around it). */
static void base_trim_tick(struct decoder *d, uint64_t count)
{
	if (d->base && (d->span_pages += count) >= 1024) {
		d->pages_seen += d->span_pages;
		if (d->pages_seen >= IPK_MI_TRIM_BYTES / IPK_PAGE_SIZE ||
		    (d->bhi > d->blo && d->bhi - d->blo > SPREAD_BYTES)) {
			ipk_memimg_trim(d->base);
			d->pages_seen = 0;
		}
		d->span_pages = 0;
		d->blo = UINT64_MAX;
		d->bhi = 0;
	}
}

static uint32_t get32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The heavy part of a ZPAGES record: the base's pages as prefix, the zstd
 * frame, the checksum. Touches only z and the base (read-only): runs in a
 * helper thread. Sets z->bad on failure. */
static void zdec_decode(struct zdec *z)
{
	const uint8_t *h = z->in;
	uint8_t scratch[IPK_PAGE_SIZE];
	if (z->craw) {
		uint8_t *pp = z->pre;
		for (uint32_t i = 0; i < z->count; i++) {
			const struct zent *en = &z->ent[i];
			if (en->op == 2 && en->bp) {
				memcpy(pp, ipk_memimg_page_data(z->base, en->bp, scratch), en->bp->len);
				pp += en->bp->len;
			}
		}
		size_t k = ZSTD_DCtx_refPrefix(z->dc, z->pre, z->prelen);
		if (!ZSTD_isError(k))
			k = ZSTD_decompressDCtx(z->dc, z->cur, z->craw, z->frame, z->flen);
		if (ZSTD_isError(k) || k != z->craw) {
			ZSTD_DCtx_reset(z->dc, ZSTD_reset_session_only);
			z->bad = "undecodable zstd frame";
			return;
		}
	}
	if (ipk_xxh3_64_seed(z->cur, z->craw, ipk_xxh3_64(z->map, z->mraw)) != get64(h))
		z->bad = "content checksum mismatch";
}

static void *zdec_thread(void *arg)
{
	zdec_decode(arg);
	return NULL;
}

static void zdec_join(struct zdec *z)
{
	if (z->run) {
		pthread_join(z->t, NULL);
		z->run = 0;
	}
}

/* Write a decoded ZPAGES record, or refuse it. */
static int zdec_write(struct decoder *d, struct zdec *z)
{
	if (z->bad)
		return ipk_err_set(d->err, IPK_EXIT_DATAERR, "%s '%s': %s at offset %llu", d->what, d->name, z->bad,
				   (unsigned long long)z->at);
	uint8_t scratch[IPK_PAGE_SIZE];
	const uint8_t *cp = z->cur;
	for (uint32_t i = 0; i < z->count; i++) {
		const struct zent *en = &z->ent[i];
		size_t plen = en->len ? en->len : IPK_PAGE_SIZE;
		const uint8_t *content;
		if (en->bp && !en->bp->record) {
			d->blo = en->bp->off < d->blo ? en->bp->off : d->blo;
			d->bhi = en->bp->off > d->bhi ? en->bp->off : d->bhi;
		}
		if (en->op == 0) {
			content = ipk_memimg_page_data(d->base, en->bp, scratch);
		} else if (en->op == 1) {
			memset(scratch, en->fill, plen);
			content = scratch;
		} else {
			content = cp;
			cp += plen;
		}
		if (put_page(d, en->addr, en->fl, en->blk, plen, content, en->op == 0 ? en->bp : NULL, en->op == 2) < 0)
			return -1;
	}
	return seg_flush(d); /* z->cur is rewritten by a later record */
}

/* Wait for the oldest record in flight and write it. */
static int zdec_pop(struct decoder *d)
{
	struct zdec *z = d->zs[d->zq[0]];
	zdec_join(z);
	d->nzq--;
	memmove(d->zq, d->zq + 1, (size_t)d->nzq * sizeof(d->zq[0]));
	return zdec_write(d, z);
}

/* Write the records in flight, in order: before any other record. */
static int zdec_drain(struct decoder *d)
{
	while (d->nzq)
		if (zdec_pop(d) < 0)
			return -1;
	return 0;
}

/* Version 3: a ZPAGES record (see zseg_flush). */
static int do_zpages(struct decoder *d, const struct ipk_img_rec *r)
{
	int flat = d->kind == IPK_MI_PLAIN || d->kind == IPK_MI_PROCESS;
	if (d->version < 3 || r->coding != IPK_CODE_ZSTD || r->count == 0 || r->count > ZMAX_ITEMS || r->len ||
	    r->fill || r->rflags1 != r->rflags0 || r->payload < ZHDR_LEN ||
	    r->payload > ZHDR_LEN + ZSTD_compressBound(ZMAX_ITEMS * ZMAP_MAX) + ZSTD_compressBound(ZMAX_ITEMS * IPK_PAGE_SIZE) ||
	    (flat ? (r->rflags0 || r->block) : !d->have_blocks))
		return corrupt(d, "bad page batch record");
	/* Room: the oldest record in flight is written first when all are. */
	if (d->nzq == ZFLIGHT && zdec_pop(d) < 0)
		return -1;
	int slot = 0;
	for (int used = 1; used;) {
		used = 0;
		for (int i = 0; i < d->nzq; i++)
			if (d->zq[i] == slot) {
				used = 1;
				slot++;
			}
	}
	struct zdec **zp = &d->zs[slot];
	if (!*zp) {
		struct zdec *n = *zp = calloc(1, sizeof(**zp));
		if (!n || !(n->dc = ZSTD_createDCtx()) ||
		    !(n->in = malloc(ZHDR_LEN + ZSTD_compressBound(ZMAX_ITEMS * ZMAP_MAX) +
				     ZSTD_compressBound(ZMAX_ITEMS * IPK_PAGE_SIZE))) ||
		    !(n->map = malloc(ZMAX_ITEMS * ZMAP_MAX)) || !(n->pre = malloc(ZMAX_ITEMS * IPK_PAGE_SIZE)) ||
		    !(n->cur = malloc(ZMAX_ITEMS * IPK_PAGE_SIZE)) || !(n->ent = malloc(ZMAX_ITEMS * sizeof(*n->ent))))
			return ipk_err_set(d->err, IPK_EXIT_OSERR, "%s '%s': out of memory", d->what, d->name);
	}
	struct zdec *z = *zp;
	uint64_t at = d->pos;
	if (rd(d, z->in, r->payload) < 0)
		return -1;
	const uint8_t *h = z->in;
	size_t mraw = get32le(h + 8), mst = get32le(h + 12), craw = get32le(h + 16), flen = get32le(h + 20);
	size_t mlen = mst ? mst : mraw;
	if (mraw < r->count || mraw > (size_t)r->count * ZMAP_MAX || craw > (size_t)r->count * IPK_PAGE_SIZE ||
	    mlen > r->payload - ZHDR_LEN || flen != r->payload - ZHDR_LEN - mlen || (craw == 0) != (flen == 0)) {
		d->pos = at;
		return corrupt(d, "bad page batch lengths");
	}
	if (mst) {
		size_t k = ZSTD_decompressDCtx(z->dc, z->map, mraw, h + ZHDR_LEN, mst);
		if (ZSTD_isError(k) || k != mraw)
			return corrupt(d, "undecodable page map");
	} else {
		memcpy(z->map, h + ZHDR_LEN, mraw);
	}
	/* The map: every entry checked before anything is decoded. */
	const uint8_t *m = z->map, *mend = z->map + mraw;
	uint64_t expect = r->addr;
	uint16_t fl = r->rflags0, blk = r->block;
	size_t want = 0, prelen = 0, hint = 0;
	for (uint32_t i = 0; i < r->count; i++) {
		struct zent *en = &z->ent[i];
		if (m >= mend)
			return corrupt(d, "bad page map");
		uint8_t tag = *m++;
		uint64_t addr = expect;
		uint8_t fill = 0;
		size_t plen = IPK_PAGE_SIZE;
		if ((tag & ZTAG_OP) == 3 || (tag & 0x80) || ((tag & ZTAG_FILL) && (tag & ZTAG_OP) != 1))
			return corrupt(d, "bad page map");
		if (tag & ZTAG_ADDR) {
			uint64_t v = 0;
			int sh = 0;
			for (;;) {
				if (m >= mend || sh > 63)
					return corrupt(d, "bad page map");
				uint8_t c = *m++;
				v |= (uint64_t)(c & 0x7f) << sh;
				sh += 7;
				if (!(c & 0x80))
					break;
			}
			int64_t dp = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
			addr = expect + (uint64_t)dp * IPK_PAGE_SIZE;
		}
		size_t extra = (tag & ZTAG_FLAGS ? 2 : 0) + (tag & ZTAG_BLOCK ? 2 : 0) + (tag & ZTAG_FILL ? 1 : 0) +
			       (tag & ZTAG_LEN ? 2 : 0);
		if ((size_t)(mend - m) < extra)
			return corrupt(d, "bad page map");
		if (tag & ZTAG_FLAGS) {
			fl = (uint16_t)(m[0] | m[1] << 8);
			m += 2;
		}
		if (tag & ZTAG_BLOCK) {
			blk = (uint16_t)(m[0] | m[1] << 8);
			m += 2;
		}
		if (tag & ZTAG_FILL)
			fill = *m++;
		if (tag & ZTAG_LEN) {
			plen = (size_t)(m[0] | m[1] << 8);
			m += 2;
			if (plen == 0 || plen >= IPK_PAGE_SIZE)
				return corrupt(d, "bad page map");
		}
		if (addr % IPK_PAGE_SIZE || addr > UINT64_MAX - IPK_PAGE_SIZE || (flat && (fl || blk)))
			return corrupt(d, "bad page map");
		en->addr = addr;
		en->fl = fl;
		en->blk = blk;
		en->op = tag & ZTAG_OP;
		en->fill = fill;
		en->len = (uint16_t)(plen & 0xfff);
		en->bp = d->base ? ipk_memimg_find(d->base, addr, &hint) : NULL;
		if (en->op == 0 && (!en->bp || en->bp->len != plen))
			return corrupt(d, "copy of a page the base lacks");
		if (en->op == 2) {
			want += plen;
			if (en->bp)
				prelen += en->bp->len;
		}
		expect = addr + IPK_PAGE_SIZE;
	}
	if (m != mend || want != craw)
		return corrupt(d, "bad page map");
	base_trim_tick(d, r->count);
	z->base = d->base;
	z->frame = h + ZHDR_LEN + mlen;
	z->flen = flen;
	z->craw = craw;
	z->prelen = prelen;
	z->mraw = mraw;
	z->count = r->count;
	z->at = at;
	z->bad = NULL;
	/* Decoded by a helper thread (inline when none can be started),
	 * written when its turn comes. */
	z->run = pthread_create(&z->t, NULL, zdec_thread, z) == 0;
	if (!z->run)
		zdec_decode(z);
	d->zq[d->nzq++] = slot;
	return 0;
}

static int do_pages(struct decoder *d, const struct ipk_img_rec *r)
{
	size_t plen = r->len ? r->len : IPK_PAGE_SIZE;
	if (plen > IPK_PAGE_SIZE || r->count == 0)
		return corrupt(d, "bad page record");
	if (r->coding == IPK_CODE_COPY || r->coding == IPK_CODE_ZERO) {
		if (r->payload != 0)
			return corrupt(d, "bad page record");
	} else if ((r->coding > IPK_CODE_LZ4_XOR && (r->coding != IPK_CODE_LZ4_DICT || d->version < 2)) ||
		   (r->count != 1 && d->version < 2)) {
		return corrupt(d, "bad page record");
	}
	/* Version 2: a coded record of count N holds N - 1 COPY pages, then the coded page. */
	int coded = r->coding != IPK_CODE_COPY && r->coding != IPK_CODE_ZERO;
	int flat = d->kind == IPK_MI_PLAIN || d->kind == IPK_MI_PROCESS;
	if (flat ? (r->rflags0 || r->rflags1 || r->block) : !d->have_blocks)
		return corrupt(d, "bad page record");
	if (r->addr % IPK_PAGE_SIZE || r->addr + (uint64_t)r->count * IPK_PAGE_SIZE < r->addr)
		return corrupt(d, "bad page address");
	base_trim_tick(d, r->count);
	size_t hint = 0;
	uint8_t scratch[IPK_PAGE_SIZE];
	for (uint32_t i = 0; i < r->count; i++) {
		uint64_t addr = r->addr + (uint64_t)i * IPK_PAGE_SIZE;
		uint16_t fl = i ? r->rflags1 : r->rflags0;
		const uint8_t *content;
		const struct ipk_mi_page *bp = d->base ? ipk_memimg_find(d->base, addr, &hint) : NULL;
		uint8_t coding = coded && i + 1 < r->count ? IPK_CODE_COPY : r->coding;
		if (bp && !bp->record) {
			d->blo = bp->off < d->blo ? bp->off : d->blo;
			d->bhi = bp->off > d->bhi ? bp->off : d->bhi;
		}
		if (coding == IPK_CODE_COPY) {
			if (!bp || bp->len != plen)
				return corrupt(d, "copy of a page the base lacks");
			content = ipk_memimg_page_data(d->base, bp, scratch);
		} else if (coding == IPK_CODE_ZERO) {
			memset(d->dbuf, r->fill, plen);
			content = d->dbuf;
		} else if (coding == IPK_CODE_LZ4_DICT) {
			if (read_dict_page(d, r, plen, bp ? ipk_memimg_page_data(d->base, bp, scratch) : NULL,
					   bp ? bp->len : 0) < 0)
				return -1;
			content = d->dbuf;
		} else {
			if (read_coded(d, r, plen, bp ? ipk_memimg_page_data(d->base, bp, scratch) : NULL,
				       bp ? bp->len : 0) < 0)
				return -1;
			content = d->dbuf;
		}
		if (put_page(d, addr, fl, r->block, plen, content, NULL, 0) < 0)
			return -1;
	}
	return 0;
}

/* Version 2, plain content: a byte range copied from the base or coded. */
static int do_range(struct decoder *d, const struct ipk_img_rec *r)
{
	uint64_t n = r->count;
	if (d->version < 2 || d->kind != IPK_MI_PLAIN || n == 0 || r->block || r->len || r->fill || r->rflags0 ||
	    r->rflags1)
		return corrupt(d, "bad range record");
	if (r->coding == IPK_CODE_COPY) {
		size_t bl;
		const uint8_t *b = d->base ? ipk_memimg_bytes(d->base, &bl) : NULL;
		if (!b || r->payload != 0 || r->addr > bl || n > bl - r->addr)
			return corrupt(d, "copy of a range the base lacks");
		for (uint64_t at = 0; at < n;) {
			uint64_t k = n - at < IPK_MI_TRIM_BYTES ? n - at : IPK_MI_TRIM_BYTES;
			if (wr(d, b + r->addr + at, k) < 0)
				return -1;
			at += k;
			if (k == IPK_MI_TRIM_BYTES)
				ipk_memimg_trim(d->base);
		}
		return 0;
	}
	if ((r->coding != IPK_CODE_LZ4 && r->coding != IPK_CODE_STORED) || n > RANGE_MAX || r->addr)
		return corrupt(d, "bad range record");
	if (read_coded(d, r, n, NULL, 0) < 0)
		return -1;
	return wr(d, d->dbuf, n);
}

static int do_end(struct decoder *d)
{
	uint64_t sum = XXH3_64bits_digest(d->sh);
	uint8_t p[32];
	if (rd(d, p, 32) < 0 || seg_flush(d) < 0)
		return -1;
	XXH128_hash_t h = XXH3_128bits_digest(d->oh);
	if (get64(p) != d->written || (!d->size_at_end && d->written != d->size))
		return corrupt(d, "content size mismatch");
	if (get64(p + 24) != sum)
		return corrupt(d, "stream checksum mismatch");
	if (get64(p + 8) != h.low64 || get64(p + 16) != h.high64)
		return corrupt(d, "content checksum mismatch");
	if (fgetc(d->in) != EOF)
		return corrupt(d, "data after the end record");
	return 0;
}

static int apply_stream(const struct ipk_memimg *base, FILE *in, const char *name, FILE *out, int need_delta,
			struct ipk_delta_stats *st, struct ipk_err *err)
{
	struct decoder d;
	memset(&d, 0, sizeof(d));
	d.blo = UINT64_MAX;
	d.in = in;
	d.out = out;
	d.name = name;
	d.what = base ? "apply delta" : "read image";
	d.err = err;
	d.sh = XXH3_createState();
	d.oh = XXH3_createState();
	d.cbuf = malloc((size_t)LZ4_compressBound(OPAQUE_DEC_MAX) + 16);
	d.iov = malloc(SEG_MAX * sizeof(*d.iov));
	d.harena = malloc(HARENA_LEN);
	d.dbuf = malloc(OPAQUE_DEC_MAX);
	d.dict = malloc(DICT_MAX + IPK_PAGE_SIZE);
	int rc = -1;
	double t0 = ipk_mono();
	if (!d.sh || !d.oh || !d.cbuf || !d.dbuf || !d.dict || !d.iov || !d.harena) {
		ipk_err_set(err, IPK_EXIT_OSERR, "%s '%s': out of memory", d.what, name);
		goto done;
	}
	XXH3_64bits_reset(d.sh);
	XXH3_128bits_reset(d.oh);
	uint8_t hb[IPK_IMG_HDR_LEN];
	struct ipk_img_header h;
	if (rd(&d, hb, sizeof(hb)) < 0 || ipk_img_header_get(&h, hb, name, err) < 0)
		goto done;
	/* a delta of an image encoded while it was written: its size comes at the end */
	d.size_at_end = (h.flags & IPK_IMG_FLAG_SIZE_AT_END) != 0;
	d.size = d.size_at_end ? (uint64_t)1 << 40 : h.size;
	d.kind = h.kind;
	d.version = h.version;
	if (need_delta && !(h.flags & IPK_IMG_FLAG_DELTA)) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "%s '%s': it is an image, not a delta of '%s'", d.what, name,
			    base ? ipk_memimg_name(base) : "a base");
		goto done;
	}
	if (h.flags & IPK_IMG_FLAG_DELTA) {
		if (!base) {
			ipk_err_set(err, IPK_EXIT_DATAERR, "%s '%s': it needs its base", d.what, name);
			goto done;
		}
		uint64_t lo, hi;
		size_t bl;
		ipk_memimg_hash(base, &lo, &hi);
		ipk_memimg_bytes(base, &bl);
		if (bl != h.base_size || lo != h.base_lo || hi != h.base_hi) {
			ipk_err_set(err, IPK_EXIT_DATAERR,
				    "apply delta '%s': wrong base '%s': the delta was made against a base of %llu bytes "
				    "with XXH3-128 %016llx%016llx, this one has %zu bytes and %016llx%016llx",
				    name, ipk_memimg_name(base), (unsigned long long)h.base_size,
				    (unsigned long long)h.base_hi, (unsigned long long)h.base_lo, bl,
				    (unsigned long long)hi, (unsigned long long)lo);
			goto done;
		}
		d.base = base;
		d.bbuf = ipk_memimg_bytes(base, &d.blen);
		size_t nb;
		const struct ipk_mi_item *bi = ipk_memimg_items(base, &nb);
		for (size_t i = 0; i < nb; i++)
			d.nbase_opaque += bi[i].type == IPK_MI_OPAQUE;
		d.base_opaque = calloc(d.nbase_opaque + 1, sizeof(*d.base_opaque));
		if (!d.base_opaque) {
			ipk_err_set(err, IPK_EXIT_OSERR, "%s '%s': out of memory", d.what, name);
			goto done;
		}
		for (size_t i = 0; i < nb; i++)
			if (bi[i].type == IPK_MI_OPAQUE)
				d.base_opaque[bi[i].ord] = &bi[i];
	}
	for (;;) {
		uint8_t rb[IPK_IMG_REC_LEN];
		struct ipk_img_rec r;
		uint64_t at = d.pos;
		if (rd(&d, rb, sizeof(rb)) < 0 || ipk_img_rec_get(&r, rb, name, at, err) < 0)
			goto done;
		if (r.type != IPK_REC_ZPAGES && zdec_drain(&d) < 0)
			goto done;
		int x;
		switch (r.type) {
		case IPK_REC_END:
			if (r.payload != 32) {
				corrupt(&d, "bad end record");
				goto done;
			}
			if (do_end(&d) < 0)
				goto done;
			rc = 0;
			goto done;
		case IPK_REC_META:
			/* Descriptive only; covered by the stream checksum. */
			if (at != IPK_IMG_HDR_LEN || r.payload > IPK_IMG_META_MAX || r.coding) {
				x = corrupt(&d, "bad metadata record");
				break;
			}
			x = rd(&d, d.cbuf, r.payload);
			break;
		case IPK_REC_BLOCKS: x = do_blocks(&d, &r); break;
		case IPK_REC_OPAQUE: x = do_opaque(&d, &r); break;
		case IPK_REC_PAGES: x = do_pages(&d, &r); break;
		case IPK_REC_RANGE: x = do_range(&d, &r); break;
		case IPK_REC_ZPAGES: x = do_zpages(&d, &r); break;
		default: x = corrupt(&d, "unknown record type");
		}
		if (x < 0)
			goto done;
	}
done:
	if (rc == 0 && fflush(out) != 0)
		rc = ipk_err_set(err, IPK_EXIT_IOERR, "%s '%s': write: %s", d.what, name, strerror(errno));
	if (st) {
		memset(st, 0, sizeof(*st));
		st->bytes_in = d.pos;
		st->bytes_out = d.written;
		st->t_encode = ipk_mono() - t0;
		if (rc == 0) {
			XXH128_hash_t hh = XXH3_128bits_digest(d.oh);
			st->id_lo = hh.low64;
			st->id_hi = hh.high64;
		}
	}
	if (d.sh)
		XXH3_freeState(d.sh);
	if (d.oh)
		XXH3_freeState(d.oh);
	free(d.cbuf);
	free(d.dbuf);
	free(d.iov);
	free(d.harena);
	free(d.dict);
	free(d.blocks);
	free(d.base_opaque);
	for (int i = 0; i <= ZFLIGHT; i++) /* no helper left running on failure */
		if (d.zs[i])
			zdec_join(d.zs[i]);
	for (int i = 0; i <= ZFLIGHT; i++)
		if (d.zs[i]) {
			ZSTD_freeDCtx(d.zs[i]->dc);
			free(d.zs[i]->in);
			free(d.zs[i]->map);
			free(d.zs[i]->pre);
			free(d.zs[i]->cur);
			free(d.zs[i]->ent);
			free(d.zs[i]);
		}
	return rc;
}

int ipk_delta_apply(const struct ipk_memimg *base, FILE *in, const char *name, FILE *out,
		    struct ipk_delta_stats *st, struct ipk_err *err)
{
	return apply_stream(base, in, name, out, 0, st, err);
}

int ipk_delta_apply_only(const struct ipk_memimg *base, FILE *in, const char *name, FILE *out,
			 struct ipk_delta_stats *st, struct ipk_err *err)
{
	return apply_stream(base, in, name, out, 1, st, err);
}

int ipk_delta_apply_to_path(const struct ipk_memimg *base, FILE *in, const char *name, const char *path,
			    struct ipk_delta_stats *st, struct ipk_err *err)
{
	struct ipk_outfile o;
	if (ipk_outfile_open(&o, path, err) < 0)
		return -1;
	if (ipk_delta_apply(base, in, name, o.f, st, err) < 0) {
		ipk_outfile_abort(&o);
		return -1;
	}
	return ipk_outfile_commit(&o, err);
}
