/* delta.h - encode a memory image against a base, and apply such deltas.
 *
 * ipk_delta_encode writes NEW as records of the ipkit container (image.h,
 * ipkit-image(5)) in NEW's own layout order. With the zstd codec (the
 * default with a base) the page items of each batch between opaque items go
 * into one ZPAGES record: a compact page map (COPY / ZERO / changed per page,
 * addresses and flags only where they break the expected sequence) and one
 * zstd frame of the changed pages, coded with the base's pages at the same
 * addresses as its prefix (one reused ZSTD_CCtx per thread). With the LZ4
 * codec (the default without a base: images) each page is either the same as
 * the base's page at its address (COPY, in runs), uniform (ZERO, in runs),
 * or LZ4 of the page, of the page XOR the base's page, or of the page with
 * the base's page as LZ4 dictionary, whichever is smallest (STORED when
 * none compresses; a page with no 8-byte word left at its place is tried
 * alone first); a coded page takes the run of COPY pages right before it
 * into its record. Opaque items are COPY of, LZ4 XOR against, or plain LZ4
 * independent of the base's opaque item of the same ordinal. Plain files
 * whose content shifted are coded as byte ranges copied from the base or
 * LZ4-coded, found by content-defined chunks (cdc.h), when those find
 * clearly more of NEW in the base than same-offset pages. Without a base the
 * result is an ipkit image. Pages are split into fixed batches
 * encoded by a pool of threads; the output does not depend on the number of
 * threads: a batch's records do not depend on what its thread coded before
 * (each LZ4 block starts from a fully reset state).
 *
 * ipk_delta_apply reads such a stream in order, checks every record header,
 * the base's identity (before writing anything), every page and opaque
 * hash, and at the end the content's size and XXH3-128 and the checksum of
 * the whole stream. ZPAGES records are decoded by helper threads, two at a
 * time, and written in order; runs of the base's bytes that are exactly
 * what is to be written are written from the base (with writev, past the
 * FILE's buffer, when out has a descriptor). The base may have been read
 * with IPK_MI_NOHASH: apply uses no page hashes of the base. The encoder
 * compares pages byte by byte when either image was read so. ipk_delta_apply_to_path writes a temporary file in the
 * target's directory, fsyncs it and renames it into place only when all of
 * that passed; on any failure the temporary file is removed.
 *
 * Ownership: the caller owns the images, FILE streams and stats.
 */
#ifndef IPK_DELTA_H
#define IPK_DELTA_H

#include <stdint.h>
#include <stdio.h>

#include "ipk.h"
#include "memimg.h"

struct ipk_delta_opts {
	int threads;      /* workers for encoding; <= 0: 1 */
	int acceleration; /* LZ4 acceleration; <= 0: 1 */
	int no_xor;       /* never try page XOR base */
	const char *meta; /* JSON text stored in a META record after the header, or NULL */
	int no_dict;      /* never try LZ4 with the base's page as dictionary */
	int no_cdc;       /* plain files: never try content-defined chunks against the base */
	int codec;        /* enum ipk_delta_codec; 0 (AUTO): zstd with a base, LZ4 without */
	int zlevel;       /* zstd level; 0: IPK_DELTA_ZLEVEL */
	const char *out_name; /* the output's name in write errors, or NULL ("the delta" / "the image") */
};

#define IPK_DELTA_ZLEVEL 3

enum ipk_delta_codec {
	IPK_DELTA_CODEC_AUTO = 0,
	IPK_DELTA_CODEC_LZ4 = 1,  /* per-page LZ4 / LZ4 XOR / LZ4 dictionary records (format 2 records) */
	IPK_DELTA_CODEC_ZSTD = 2, /* ZPAGES records: batches of pages, one zstd frame per batch */
};

struct ipk_delta_stats {
	uint64_t bytes_in;      /* bytes of NEW (encode) / of the delta (apply) */
	uint64_t bytes_out;     /* bytes of the delta (encode) / of the output (apply) */
	uint64_t pages;         /* page records in NEW */
	uint64_t pages_same;    /* coded COPY */
	uint64_t pages_zero;    /* coded ZERO */
	uint64_t pages_lz4;     /* coded LZ4 or STORED */
	uint64_t pages_xor;     /* coded LZ4 XOR base */
	uint64_t pages_new;     /* changed pages whose address the base lacks */
	uint64_t pages_removed; /* base page addresses NEW lacks */
	uint64_t opaque_bytes;  /* opaque bytes in NEW */
	uint64_t opaque_same;   /* of which copied from the base */
	uint64_t id_lo, id_hi;  /* XXH3-128 of the content (NEW), set on success */
	double t_encode, t_write; /* seconds (apply: t_encode is the whole apply) */
	double cpu_main, cpu_helpers;          /* encode: thread CPU seconds of the calling thread / the others */
	uint64_t batches_main, batches_helpers; /* encode: batches each encoded */
	uint64_t pages_dict;    /* coded LZ4 with the base's page as dictionary */
	uint64_t cdc_chunks, cdc_copied; /* plain files coded by chunks: chunks, of which copied from the base */
	uint64_t cdc_copied_bytes;
	uint64_t pages_zstd;    /* changed pages coded in zstd batches */
	uint64_t zbatches;      /* ZPAGES records */
	uint64_t zmap_bytes;    /* bytes of their page maps, as stored */
};

/* Encode new (against base, or an image when base is NULL) to out.
 * Returns 0, or -1 with err set (IPK_EXIT_IOERR on a write error,
 * IPK_EXIT_OSERR on no memory or no thread). */
int ipk_delta_encode(const struct ipk_memimg *base, const struct ipk_memimg *new_img, FILE *out,
		     const struct ipk_delta_opts *opts, struct ipk_delta_stats *st, struct ipk_err *err);

/* Apply the delta (or decode the image) read from in, named name in
 * messages, writing the content to out. base may be NULL for an image; a
 * delta needs the base it was made against. On failure, what was written to
 * out must be discarded. Returns 0, or -1 with err set: IPK_EXIT_DATAERR for
 * a corrupted, truncated or wrong-base stream ("apply delta 'NAME': ..."),
 * IPK_EXIT_IOERR, IPK_EXIT_OSERR. */
int ipk_delta_apply(const struct ipk_memimg *base, FILE *in, const char *name, FILE *out,
		    struct ipk_delta_stats *st, struct ipk_err *err);

/* ipk_delta_apply for a caller that was given a delta: a stream that is an
 * image (which would decode without its base) is refused with
 * IPK_EXIT_DATAERR before anything is written. */
int ipk_delta_apply_only(const struct ipk_memimg *base, FILE *in, const char *name, FILE *out,
			 struct ipk_delta_stats *st, struct ipk_err *err);

/* ipk_delta_apply into path, all or nothing: temp file beside path, fsync,
 * rename; the temp file is unlinked on failure. A path that exists and is
 * not a regular file (a device, a FIFO) is written in place instead. Same returns, plus
 * IPK_EXIT_CANTCREAT when the temp file cannot be made. */
int ipk_delta_apply_to_path(const struct ipk_memimg *base, FILE *in, const char *name, const char *path,
			    struct ipk_delta_stats *st, struct ipk_err *err);

#endif
