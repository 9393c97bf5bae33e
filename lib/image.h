/* image.h - the ipkit image/delta container (format in ipkit-image(5)).
 *
 * One format serves both: an ipkit image is a delta against nothing (every
 * page LZ4-compressed or a zero run), a delta names its base by size and
 * XXH3-128. Both are a 64-byte file header, records (32-byte header +
 * payload) and an END record carrying the content's size and XXH3-128 and
 * an XXH3-64 of every byte before it. All integers are little-endian.
 * Written and read strictly in order, so both work on pipes.
 *
 * This module encodes and checks the fixed-size headers; delta.h makes and
 * applies the records. ipk_image_open loads any input (ipkit image, libvirt
 * save image, QEMU stream, plain file) as a struct ipk_memimg of its raw
 * content.
 */
#ifndef IPK_IMAGE_H
#define IPK_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "ipk.h"
#include "memimg.h"

#define IPK_IMG_MAGIC "IPKITIMG"
#define IPK_IMG_VERSION 3     /* written; versions 1 and 2 are still read (1 lacks coding 5 and range
			       * records, 2 lacks zstd page batches) */
#define IPK_IMG_VERSION_MIN 1
#define IPK_IMG_HDR_LEN 64
#define IPK_IMG_REC_LEN 32
#define IPK_IMG_FLAG_DELTA 0x01
#define IPK_IMG_FLAG_SIZE_AT_END 0x02 /* the content size is 0 here and given by the END record only */
#define IPK_IMG_META_MAX 65536

enum ipk_img_rec_type {
	IPK_REC_BLOCKS = 1, /* QEMU RAM block table of the content */
	IPK_REC_OPAQUE = 2, /* one opaque item */
	IPK_REC_PAGES = 3,  /* one page, or a run of COPY / ZERO pages */
	IPK_REC_END = 4,
	IPK_REC_META = 5,   /* JSON object describing the capture (source, parent, ...) */
	IPK_REC_RANGE = 6,  /* version 2, plain content: a byte range copied from the base or coded */
	IPK_REC_ZPAGES = 7, /* version 3: a batch of pages, compact page map + one zstd frame of the
			     * changed pages with the base's pages at their addresses as prefix */
};

enum ipk_img_coding {
	IPK_CODE_STORED = 0,  /* payload: XXH3-64, raw bytes */
	IPK_CODE_LZ4 = 1,     /* payload: XXH3-64, LZ4 block of the raw bytes */
	IPK_CODE_LZ4_XOR = 2, /* payload: XXH3-64, LZ4 block of raw XOR base (base zero-padded) */
	IPK_CODE_COPY = 3,    /* no payload: same bytes as the base's */
	IPK_CODE_ZERO = 4,    /* no payload: every byte is `fill` */
	IPK_CODE_LZ4_DICT = 5, /* version 2, pages: XXH3-64, LZ4 block with the base's page at the same address as dictionary */
	IPK_CODE_ZSTD = 6,     /* version 3, ZPAGES records only (payload in ipkit-image(5)) */
};

struct ipk_img_header {
	uint8_t kind;           /* enum ipk_mi_kind of the content */
	uint8_t flags;          /* IPK_IMG_FLAG_DELTA */
	uint64_t size;          /* bytes of the content */
	uint64_t base_size;     /* delta: bytes of the base */
	uint64_t base_lo, base_hi; /* delta: XXH3-128 of the base */
	uint16_t version;       /* decoded: the format version read (put always writes IPK_IMG_VERSION) */
};

struct ipk_img_rec {
	uint8_t type, coding;
	uint16_t block;
	uint16_t rflags0, rflags1; /* QEMU flags of the first page / of the others */
	uint32_t count;            /* pages: run length; opaque: base ordinal (0xffffffff: none) */
	uint32_t payload;          /* bytes following the header */
	uint64_t addr;             /* pages: address of the first; opaque: length */
	uint16_t len;              /* pages: content length of each (1..4096, 4096 is 0) */
	uint8_t fill;
};

/* Encode / decode the file header (64 bytes). Decoding checks the magic,
 * version, length and header checksum: returns 0, or -1 with err set
 * (IPK_EXIT_DATAERR, "read image 'NAME': reason"). */
void ipk_img_header_put(const struct ipk_img_header *h, uint8_t out[IPK_IMG_HDR_LEN]);
int ipk_img_header_get(struct ipk_img_header *h, const uint8_t in[IPK_IMG_HDR_LEN], const char *name,
		       struct ipk_err *err);

/* Encode / decode a record header (32 bytes, the last 4 a check of the rest). */
void ipk_img_rec_put(const struct ipk_img_rec *r, uint8_t out[IPK_IMG_REC_LEN]);
int ipk_img_rec_get(struct ipk_img_rec *r, const uint8_t in[IPK_IMG_REC_LEN], const char *name, uint64_t at,
		    struct ipk_err *err);

/* Read the file header and, when the first record is a META record, its
 * JSON text (malloc'd into *meta, NUL-terminated; NULL when absent) from the
 * start of an image or delta in buf. Returns 0, or -1 with err set
 * (IPK_EXIT_DATAERR). */
int ipk_img_read_meta(const uint8_t *buf, size_t len, const char *name, struct ipk_img_header *h, char **meta,
		      struct ipk_err *err);

/* Does buf start like an ipkit image or delta? */
int ipk_img_detect(const uint8_t *buf, size_t len);

/* Load path ("-" for stdin) as a memory image of its raw content: an ipkit
 * image is decoded (and verified) into memory first; a delta is refused
 * (IPK_EXIT_DATAERR). Returns the image (free with ipk_memimg_free) or NULL
 * with err set (see ipk_memimg_from_fd, ipk_delta_apply). */
struct ipk_memimg *ipk_image_open(const char *path, struct ipk_err *err);
/* ipk_image_open with flags (IPK_MI_NOHASH, memimg.h) for raw inputs; an
 * ipkit image is decoded as ipk_image_open does. */
struct ipk_memimg *ipk_image_open_flags(const char *path, int flags, struct ipk_err *err);

#endif
