/* image.c - headers of the ipkit image/delta container, and loading any
 * input as a memory image (see image.h, ipkit-image(5)). */
#define _GNU_SOURCE
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "delta.h"

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

void ipk_img_header_put(const struct ipk_img_header *h, uint8_t out[IPK_IMG_HDR_LEN])
{
	memset(out, 0, IPK_IMG_HDR_LEN);
	memcpy(out, IPK_IMG_MAGIC, 8);
	put16(out + 8, IPK_IMG_VERSION);
	put16(out + 10, IPK_IMG_HDR_LEN);
	out[12] = h->kind;
	out[13] = h->flags;
	put16(out + 14, 12); /* log2 of the page size */
	put64(out + 16, h->size);
	put64(out + 24, h->base_size);
	put64(out + 32, h->base_lo);
	put64(out + 40, h->base_hi);
	put64(out + 56, XXH3_64bits(out, 56));
}

int ipk_img_header_get(struct ipk_img_header *h, const uint8_t in[IPK_IMG_HDR_LEN], const char *name,
		       struct ipk_err *err)
{
	if (memcmp(in, IPK_IMG_MAGIC, 8))
		return ipk_err_set(err, IPK_EXIT_DATAERR, "read image '%s': not an ipkit image or delta", name);
	if (get16(in + 8) < IPK_IMG_VERSION_MIN || get16(in + 8) > IPK_IMG_VERSION)
		return ipk_err_set(err, IPK_EXIT_DATAERR,
				   "read image '%s': format version %u is not supported (this build reads versions %u to %u%s)",
				   name, get16(in + 8), IPK_IMG_VERSION_MIN, IPK_IMG_VERSION,
				   get16(in + 8) > IPK_IMG_VERSION ? "; it was written by a newer ipkit" : "");
	if (get64(in + 56) != XXH3_64bits(in, 56))
		return ipk_err_set(err, IPK_EXIT_DATAERR, "read image '%s': header checksum mismatch", name);
	if (get16(in + 10) != IPK_IMG_HDR_LEN || get16(in + 14) != 12 || in[12] < IPK_MI_PLAIN ||
	    in[12] > IPK_MI_PROCESS || (in[13] & ~(IPK_IMG_FLAG_DELTA | IPK_IMG_FLAG_SIZE_AT_END)) ||
	    ((in[13] & IPK_IMG_FLAG_SIZE_AT_END) && get64(in + 16)))
		return ipk_err_set(err, IPK_EXIT_DATAERR, "read image '%s': unsupported header fields", name);
	memset(h, 0, sizeof(*h));
	h->kind = in[12];
	h->flags = in[13];
	h->size = get64(in + 16);
	h->base_size = get64(in + 24);
	h->base_lo = get64(in + 32);
	h->base_hi = get64(in + 40);
	h->version = get16(in + 8);
	return 0;
}

void ipk_img_rec_put(const struct ipk_img_rec *r, uint8_t out[IPK_IMG_REC_LEN])
{
	out[0] = r->type;
	out[1] = r->coding;
	put16(out + 2, r->block);
	put16(out + 4, r->rflags0);
	put16(out + 6, r->rflags1);
	put32(out + 8, r->count);
	put32(out + 12, r->payload);
	put64(out + 16, r->addr);
	put16(out + 24, r->len);
	out[26] = r->fill;
	out[27] = 0;
	put32(out + 28, (uint32_t)XXH3_64bits(out, 28));
}

int ipk_img_rec_get(struct ipk_img_rec *r, const uint8_t in[IPK_IMG_REC_LEN], const char *name, uint64_t at,
		    struct ipk_err *err)
{
	if (get32(in + 28) != (uint32_t)XXH3_64bits(in, 28) || in[27] != 0)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "read '%s': corrupted record header at offset %llu",
				   name, (unsigned long long)at);
	r->type = in[0];
	r->coding = in[1];
	r->block = get16(in + 2);
	r->rflags0 = get16(in + 4);
	r->rflags1 = get16(in + 6);
	r->count = get32(in + 8);
	r->payload = get32(in + 12);
	r->addr = get64(in + 16);
	r->len = get16(in + 24);
	r->fill = in[26];
	return 0;
}

int ipk_img_read_meta(const uint8_t *buf, size_t len, const char *name, struct ipk_img_header *h, char **meta,
		      struct ipk_err *err)
{
	*meta = NULL;
	if (len < IPK_IMG_HDR_LEN)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "read image '%s': truncated header", name);
	if (ipk_img_header_get(h, buf, name, err) < 0)
		return -1;
	struct ipk_img_rec r;
	if (len < IPK_IMG_HDR_LEN + IPK_IMG_REC_LEN ||
	    ipk_img_rec_get(&r, buf + IPK_IMG_HDR_LEN, name, IPK_IMG_HDR_LEN, err) < 0)
		return -1;
	if (r.type != IPK_REC_META)
		return 0;
	if (r.payload > len - IPK_IMG_HDR_LEN - IPK_IMG_REC_LEN || r.payload > IPK_IMG_META_MAX)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "read image '%s': bad metadata record", name);
	*meta = malloc((size_t)r.payload + 1);
	if (!*meta)
		return ipk_err_set(err, IPK_EXIT_OSERR, "read image '%s': out of memory", name);
	memcpy(*meta, buf + IPK_IMG_HDR_LEN + IPK_IMG_REC_LEN, r.payload);
	(*meta)[r.payload] = 0;
	return 0;
}

int ipk_img_detect(const uint8_t *buf, size_t len)
{
	return len >= 8 && !memcmp(buf, IPK_IMG_MAGIC, 8);
}

struct ipk_memimg *ipk_image_open(const char *path, struct ipk_err *err)
{
	return ipk_image_open_flags(path, 0, err);
}

struct ipk_memimg *ipk_image_open_flags(const char *path, int flags, struct ipk_err *err)
{
	int is_stdin = !strcmp(path, "-");
	int fd = is_stdin ? 0 : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ipk_err_set(err, errno == ENOENT ? IPK_EXIT_NOINPUT : IPK_EXIT_IOERR, "open image '%s': %s", path,
			    strerror(errno));
		return NULL;
	}
	const char *name = is_stdin ? "stdin" : path;
	struct ipk_memimg *m = ipk_memimg_from_fd_flags(fd, name, flags, err);
	if (!is_stdin)
		close(fd);
	if (!m)
		return NULL;
	size_t len;
	const uint8_t *b = ipk_memimg_bytes(m, &len);
	if (!ipk_img_detect(b, len))
		return m;
	/* An ipkit image: decode its content into memory, then model that. */
	struct ipk_img_header h;
	if (len < IPK_IMG_HDR_LEN) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "read image '%s': truncated header", name);
		goto fail;
	}
	if (ipk_img_header_get(&h, b, name, err) < 0)
		goto fail;
	if (h.flags & IPK_IMG_FLAG_DELTA) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "read image '%s': this is a delta, not an image (apply it to its base)",
			    name);
		goto fail;
	}
	if (h.size > (uint64_t)1 << 40) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "read image '%s': implausible size %llu", name,
			    (unsigned long long)h.size);
		goto fail;
	}
	/* Decoded into an unlinked temporary file, which is then mapped: the
	 * content is never held in memory as a whole. A path is read again
	 * from the file; stdin from its spooled copy. */
	int tfd = ipk_memimg_tmpfile(name, err);
	if (tfd < 0)
		goto fail;
	int dfd = dup(tfd);
	FILE *in = is_stdin ? fmemopen((void *)b, len, "r") : fopen(path, "r");
	FILE *out = dfd >= 0 ? fdopen(dfd, "w") : NULL;
	int rc = -1;
	if (!in || !out)
		ipk_err_set(err, IPK_EXIT_OSERR, "read image '%s': %s", name, strerror(errno));
	else
		rc = ipk_delta_apply(NULL, in, name, out, NULL, err);
	if (in)
		fclose(in);
	if (out) {
		if (fclose(out) != 0 && rc == 0)
			rc = ipk_err_set(err, IPK_EXIT_IOERR, "read image '%s': decode: %s", name, strerror(errno));
	} else if (dfd >= 0) {
		close(dfd);
	}
	struct ipk_memimg *dec = rc < 0 ? NULL : ipk_memimg_map(tfd, h.kind, name, err);
	close(tfd);
	if (!dec)
		goto fail;
	ipk_memimg_free(m);
	return dec;
fail:
	ipk_memimg_free(m);
	return NULL;
}
