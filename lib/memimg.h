/* memimg.h - the in-memory model of a memory image: its pages by address.
 *
 * A memory image is the raw content of a plain file, of a QEMU migration
 * stream, or of a libvirt save image (which wraps such a stream). The model
 * keeps two views of the same bytes:
 *
 *  - items: the image as it is laid out, in order. An item is either opaque
 *    bytes (everything that is not page content: libvirt header, domain XML,
 *    QEMU section framing, device state; split into pieces of at most
 *    IPK_MI_OPAQUE_MAX bytes) or one page record (address, flags, where its
 *    content lies). Writing the items in order gives back the original bytes
 *    exactly (ipk_memimg_write), superseded page versions included.
 *  - pages: the page map, one entry per page address, sorted by address: the
 *    latest version of that page (a later record for the same address
 *    supersedes an earlier one), with its XXH3-64 hash and zero flag.
 *
 * Addresses: for plain files the file offset; for QEMU streams a linear
 * address made from the RAM block table (block base + offset in the block,
 * blocks laid out one after another in the order QEMU lists them); for
 * process dumps the virtual address.
 *
 * Building: ipk_memimg_from_fd reads its input sequentially, never seeking
 * (a pipe works): a regular file is mapped; anything else is copied to an
 * unlinked temporary file ($TMPDIR, else /var/tmp) which is mapped. Parsing
 * works on those bytes, so the image's bytes stay available (items and pages
 * point into them by offset) until ipk_memimg_free. A mapped image is never
 * resident as a whole: the parse is one sequential pass that hashes each
 * page as it is added and the whole image (XXH3-128) as it goes, dropping
 * what it read every IPK_MI_TRIM_BYTES; users that walk the image later (the
 * delta encoder, apply) call ipk_memimg_trim as they go.
 *
 * Ownership: a struct ipk_memimg is created by ipk_memimg_from_* and freed by
 * ipk_memimg_free (NULL accepted), which also releases the bytes it read or
 * was given. Arrays returned by the accessors belong to the image.
 */
#ifndef IPK_MEMIMG_H
#define IPK_MEMIMG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ipk.h"

#define IPK_PAGE_SIZE 4096u
#define IPK_MI_OPAQUE_MAX (1u << 20) /* opaque items are split at this size */
#define IPK_MI_TRIM_BYTES (64u << 20) /* a mapped image drops its resident pages after this much reading */

enum ipk_mi_kind {
	IPK_MI_PLAIN = 1,   /* any file: fixed 4 KiB pages by file offset */
	IPK_MI_QEMU = 2,    /* a raw QEMU migration stream */
	IPK_MI_LIBVIRT = 3, /* a libvirt save image (QEMU stream after a header and XML) */
	IPK_MI_PROCESS = 4, /* an ipkit process dump (ip-snapshot --pid): pages by virtual address */
};

/* The ipkit process dump: "IPKPROC1", le32 pid, le32 length of the maps
 * text, the text of /proc/PID/maps, then per captured page its le64
 * virtual address and 4096 bytes, then le64 0xffffffffffffffff. */
#define IPK_PROC_MAGIC "IPKPROC1"
#define IPK_PROC_END UINT64_MAX

enum ipk_mi_type { IPK_MI_OPAQUE = 1, IPK_MI_PAGE = 2 };

/* One item of the image's layout. */
struct ipk_mi_item {
	uint8_t type;    /* enum ipk_mi_type */
	uint8_t zero;    /* page: a QEMU zero-page record (content: 4096 bytes of fill) */
	uint8_t fill;    /* page: the fill byte of a zero-page record */
	uint8_t pad;
	uint16_t rflags; /* page: QEMU record flags as written (low 12 bits of the header word); 0 for plain */
	uint16_t block;  /* page: index in the RAM block table (QEMU) */
	uint32_t ord;    /* opaque: ordinal among the opaque items */
	uint32_t len;    /* page: content length (4096; a plain file's last page may be shorter); opaque: length */
	uint64_t addr;   /* page: address */
	uint64_t off;    /* offset in the image bytes of the page content (zero page: of its fill byte) or of the opaque bytes */
	uint64_t hash;   /* page: XXH3-64 of the content (len bytes), set by ipk_memimg_add_page */
};

/* One entry of the page map: the latest version of the page at addr. */
struct ipk_mi_page {
	uint64_t addr;
	uint64_t hash;  /* XXH3-64 of the page content (len bytes) */
	uint64_t off;   /* location: offset of the content in the image bytes (unused for zero records) */
	uint32_t len;   /* content length */
	uint32_t item;  /* index of the item holding this version */
	uint8_t zero;   /* the content is all zero bytes */
	uint8_t record; /* it is a QEMU zero-page record (content = 4096 bytes of item's fill) */
	uint8_t fill;
};

/* A QEMU RAM block, from the stream's block list. */
struct ipk_mi_block {
	char name[256]; /* NUL-terminated idstr */
	uint8_t namelen;
	uint64_t base;  /* linear address of its first byte */
	uint64_t len;   /* used_length */
};

struct ipk_memimg;

/* Read all of fd (without seeking; name is used in messages) and build the
 * model, detecting the kind from the content (libvirt save, QEMU stream,
 * else plain). The fd stays open and owned by the caller. Returns the image,
 * or NULL with err set: IPK_EXIT_IOERR on a read error, IPK_EXIT_DATAERR on a
 * malformed or unsupported QEMU/libvirt image, IPK_EXIT_OSERR on no memory. */
struct ipk_memimg *ipk_memimg_from_fd(int fd, const char *name, struct ipk_err *err);

/* Options of ipk_memimg_from_fd_flags. IPK_MI_NOHASH: do not compute the
 * pages' XXH3-64 (items' and pages' hash fields then only mark all-zero
 * pages: the XXH3-64 of a zero page there, 0 elsewhere); the image's
 * XXH3-128 identity is computed as always. For users that compare pages
 * byte by byte (the zstd delta codec, apply). */
#define IPK_MI_NOHASH 1

/* ipk_memimg_from_fd with flags (IPK_MI_*); same returns. */
struct ipk_memimg *ipk_memimg_from_fd_flags(int fd, const char *name, int flags, struct ipk_err *err);

/* 1 when the image's page hashes are XXH3-64 of their content, 0 when it
 * was built with IPK_MI_NOHASH. */
int ipk_memimg_page_hashes(const struct ipk_memimg *m);

/* Same as ipk_memimg_from_fd on a path ("-" is stdin); a missing file is
 * IPK_EXIT_NOINPUT. */
struct ipk_memimg *ipk_memimg_open(const char *path, struct ipk_err *err);

/* Build the model over len bytes at buf. With own set the image takes buf
 * (malloc'd) and frees it, also on failure; otherwise buf must outlive the
 * image. kind 0 detects the kind; IPK_MI_PLAIN forces plain pages. Returns
 * the image or NULL with err set (as ipk_memimg_from_fd). */
struct ipk_memimg *ipk_memimg_from_mem(const void *buf, size_t len, int own, int kind,
				       const char *name, struct ipk_err *err);

/* Read all of in (name in messages) into an unlinked temporary file and
 * model it as ipk_memimg_from_mem would (kind 0 detects). Returns the image
 * or NULL with err set: IPK_EXIT_CANTCREAT (no temporary file),
 * IPK_EXIT_IOERR, IPK_EXIT_DATAERR, IPK_EXIT_OSERR. */
struct ipk_memimg *ipk_memimg_spool(FILE *in, int kind, const char *name, struct ipk_err *err);

/* An unlinked temporary file ($TMPDIR, else /var/tmp) opened read-write:
 * returns its fd, or -1 with err set (IPK_EXIT_CANTCREAT). name is for the
 * message. */
int ipk_memimg_tmpfile(const char *name, struct ipk_err *err);

/* Map the whole regular file fd (which stays the caller's) and model it
 * (kind as for ipk_memimg_from_mem). Returns the image or NULL with err set. */
struct ipk_memimg *ipk_memimg_map(int fd, int kind, const char *name, struct ipk_err *err);

void ipk_memimg_free(struct ipk_memimg *m);

/* Drop a mapped image's pages from this process's resident memory (they
 * are read again from the file when touched; the content does not change).
 * No effect on images held in memory. Safe while other threads read it. */
void ipk_memimg_trim(const struct ipk_memimg *m);

/* Accessors; the pointers stay valid until ipk_memimg_free. */
int ipk_memimg_kind(const struct ipk_memimg *m);
const char *ipk_memimg_name(const struct ipk_memimg *m);
const uint8_t *ipk_memimg_bytes(const struct ipk_memimg *m, size_t *len);
const struct ipk_mi_item *ipk_memimg_items(const struct ipk_memimg *m, size_t *n);
const struct ipk_mi_page *ipk_memimg_pages(const struct ipk_memimg *m, size_t *n);
const struct ipk_mi_block *ipk_memimg_blocks(const struct ipk_memimg *m, size_t *n);
/* XXH3-128 of all the image's bytes (the image's identity), as low, high. */
void ipk_memimg_hash(const struct ipk_memimg *m, uint64_t *lo, uint64_t *hi);
/* The same identity as 32 hex digits, high half first (as ipk_file_hash
 * writes a file's). */
void ipk_memimg_id_hex(const struct ipk_memimg *m, char out[33]);

/* The page map entry for addr, or NULL when the image has no page there.
 * hint (may be NULL) speeds up ascending lookups: pass the same variable,
 * initialised to 0, for every lookup of one pass. */
const struct ipk_mi_page *ipk_memimg_find(const struct ipk_memimg *m, uint64_t addr, size_t *hint);

/* The content of a page-map entry or of a page item: a pointer into the
 * image's bytes, or to a static page of the fill byte for zero records
 * (filled into scratch, which must hold IPK_PAGE_SIZE bytes). */
const uint8_t *ipk_memimg_page_data(const struct ipk_memimg *m, const struct ipk_mi_page *p, uint8_t *scratch);
const uint8_t *ipk_memimg_item_data(const struct ipk_memimg *m, const struct ipk_mi_item *it, uint8_t *scratch);

/* Counters of the model: page records in the layout, distinct page
 * addresses, zero pages among them, opaque bytes. */
struct ipk_memimg_stats {
	uint64_t records, pages, zero_pages, opaque_bytes, bytes;
};
void ipk_memimg_stats(const struct ipk_memimg *m, struct ipk_memimg_stats *st);

/* The header bytes that precede a page's content in a QEMU stream: the
 * big-endian word (offset in block | rflags), then, without the continue
 * flag, the block's name with its length byte. Writes at most 264 bytes to
 * out; returns their number, or -1 when the block index or the address does
 * not fit the table. */
int ipk_mi_page_header(const struct ipk_mi_block *blocks, size_t nblocks, uint16_t block, uint64_t addr,
		       uint16_t rflags, uint8_t *out);

/* Render the image back into its original bytes on fd (sequential writes).
 * Returns 0, or -1 with err set (IPK_EXIT_IOERR). */
int ipk_memimg_write(const struct ipk_memimg *m, int fd, struct ipk_err *err);

/* Following an image that is still being written.
 *
 * ipk_memimg_follow models a regular file that another process writes from
 * start to end while it is read (libvirt writing a save image or a live
 * snapshot): the parse runs in its own thread and waits for the bytes it
 * needs, so that a user (the delta encoder) can work on the first items
 * while the rest is written. The file is mapped at `reserve` bytes; growing
 * past that fails the parse. The writer's end is learnt from ended(ctx)
 * (called from the parse thread while it waits: 0 still writing, 1 done,
 * -1 failed) and, for a libvirt image, from libvirt rewriting the header's
 * magic from "LibvirtQemudPart" to "LibvirtQemudSave", which it does last.
 * The partial magic is read as the complete one; at the end the file's
 * libvirt header must equal the one parsed, else the parse fails. Only
 * libvirt save images and QEMU streams are followed.
 *
 * While the parse runs, use only ipk_memimg_follow_wait,
 * ipk_memimg_follow_items, ipk_memimg_item_data (of items obtained so),
 * ipk_memimg_trim and, once an item is usable, ipk_memimg_kind and
 * ipk_memimg_blocks (both final by then). After ipk_memimg_follow_join
 * returned 0 the image is what ipk_memimg_from_fd would have built from
 * the complete file. ipk_memimg_free stops a parse still running. */

/* Start following fd (dup'd; the caller keeps its own). Returns the image,
 * or NULL with err set (IPK_EXIT_OSERR). */
struct ipk_memimg *ipk_memimg_follow(int fd, const char *name, int flags, size_t reserve, int (*ended)(void *ctx),
				     void *ctx, struct ipk_err *err);

/* Wait until at least want items are usable or the parse ended. Returns
 * the number of usable items (items below it never change); *state is 0
 * while parsing, 1 when all items are there, -1 when the parse failed (see
 * ipk_memimg_follow_join for why). On an image not followed: all items, 1. */
size_t ipk_memimg_follow_wait(const struct ipk_memimg *m, size_t want, int *state);

/* Copy the usable items [from, to) into out. */
void ipk_memimg_follow_items(const struct ipk_memimg *m, size_t from, size_t to, struct ipk_mi_item *out);

/* Wait for the parse to end. Returns 0 (the image complete, its page map
 * built), or -1 with err set: the parse's error, IPK_EXIT_IOERR ("the
 * writer failed", "grew beyond", "header changed"). No effect (0) on an image
 * not followed. */
int ipk_memimg_follow_join(const struct ipk_memimg *m, struct ipk_err *err);

/* For format parsers (qemusave.c): add items and blocks while parsing, in
 * the order of the bytes (pages are hashed as they are added, and with them
 * the image up to their end). An opaque range longer than IPK_MI_OPAQUE_MAX
 * becomes several items. Return 0 or -1 with err set (IPK_EXIT_OSERR). */
int ipk_memimg_add_opaque(struct ipk_memimg *m, uint64_t off, uint64_t len, struct ipk_err *err);
int ipk_memimg_add_page(struct ipk_memimg *m, const struct ipk_mi_item *page, struct ipk_err *err);
int ipk_memimg_add_block(struct ipk_memimg *m, const struct ipk_mi_block *b, struct ipk_err *err);
void ipk_memimg_set_kind(struct ipk_memimg *m, int kind);
/* Bytes of the input available to parse: at least want, or fewer when the
 * input ends before (a followed image waits for its writer). */
size_t ipk_memimg_more(struct ipk_memimg *m, size_t want);

#endif
