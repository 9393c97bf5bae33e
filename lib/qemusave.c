/* qemusave.c - parse libvirt save images and QEMU migration streams into
 * page items (see qemusave.h for the format this relies on). */
#define _GNU_SOURCE
#include "qemusave.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* QEMU_VM_* section types (migration/savevm.h). */
enum {
	SEC_EOF = 0x00,
	SEC_START = 0x01,
	SEC_PART = 0x02,
	SEC_END = 0x03,
	SEC_FULL = 0x04,
	SEC_CONFIGURATION = 0x07,
	SEC_COMMAND = 0x08,
	SEC_FOOTER = 0x7e,
};

struct parser {
	struct ipk_memimg *m;
	const uint8_t *p;
	size_t n, pos;
	size_t qemu_start;  /* offset of the QEMU stream in the bytes */
	size_t op_start;    /* start of the opaque run not yet added */
	int cur_block;      /* block of the previous page record, -1 before any */
	uint64_t total;     /* RAM size announced by the block list */
	struct ipk_err *err;
};

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static int bad(struct parser *ps, size_t at, const char *why)
{
	return ipk_err_set(ps->err, IPK_EXIT_DATAERR, "bad QEMU stream '%s': %s at offset %zu",
			   ipk_memimg_name(ps->m), why, at);
}

/* At least k more bytes at pos? A followed image waits for them. */
static int have(struct parser *ps, size_t k)
{
	if (ps->n - ps->pos < k)
		ps->n = ipk_memimg_more(ps->m, ps->pos + k);
	return ps->n - ps->pos >= k;
}

static int need(struct parser *ps, size_t k)
{
	if (!have(ps, k))
		return bad(ps, ps->n, "truncated");
	return 0;
}

int ipk_qemusave_libvirt_complete(int fd)
{
	char m[16];
	return pread(fd, m, sizeof(m), 0) == (ssize_t)sizeof(m) && !memcmp(m, IPK_LIBVIRT_MAGIC, sizeof(m));
}

int ipk_qemusave_detect(const uint8_t *buf, size_t len)
{
	if (len >= 16 && (!memcmp(buf, IPK_LIBVIRT_MAGIC, 16) || !memcmp(buf, IPK_LIBVIRT_MAGIC_PARTIAL, 16)))
		return IPK_MI_LIBVIRT;
	if (len >= 8 && be32(buf) == IPK_QEMU_MAGIC)
		return IPK_MI_QEMU;
	return 0;
}

/* The block list of a 0x04 record: blocks until their lengths sum to total. */
static int parse_block_list(struct parser *ps, uint64_t total)
{
	struct ipk_memimg *m = ps->m;
	size_t nb;
	ipk_memimg_blocks(m, &nb);
	int redefine = nb > 0;
	uint64_t base = 0;
	size_t idx = 0;
	while (base < total) {
		size_t at = ps->pos;
		if (need(ps, 1) < 0)
			return -1;
		uint8_t l = ps->p[ps->pos];
		if (l == 0)
			return bad(ps, at, "empty RAM block name");
		if (need(ps, 1 + (size_t)l + 8) < 0)
			return -1;
		struct ipk_mi_block b;
		memset(&b, 0, sizeof(b));
		b.namelen = l;
		memcpy(b.name, ps->p + ps->pos + 1, l);
		b.base = base;
		b.len = be64(ps->p + ps->pos + 1 + l);
		ps->pos += 1 + (size_t)l + 8;
		if (b.len == 0 || b.len % IPK_PAGE_SIZE || b.len > total - base)
			return bad(ps, at, "RAM block length does not add up");
		if (redefine) {
			const struct ipk_mi_block *old = ipk_memimg_blocks(m, &nb);
			if (idx >= nb || old[idx].len != b.len || strcmp(old[idx].name, b.name))
				return bad(ps, at, "RAM block list changed within the stream");
		} else if (ipk_memimg_add_block(m, &b, ps->err) < 0) {
			return -1;
		}
		idx++;
		if (idx > 65535)
			return bad(ps, at, "too many RAM blocks");
		base += b.len;
	}
	ps->total = total;
	return 0;
}

/* Records of a ram section up to and including the end-of-section word. */
static int parse_ram_body(struct parser *ps)
{
	struct ipk_memimg *m = ps->m;
	for (;;) {
		size_t rec = ps->pos;
		if (need(ps, 8) < 0)
			return -1;
		uint64_t w = be64(ps->p + ps->pos);
		uint16_t flags = (uint16_t)(w & (IPK_PAGE_SIZE - 1));
		uint64_t off = w & ~(uint64_t)(IPK_PAGE_SIZE - 1);
		ps->pos += 8;
		if (flags == IPK_RAM_EOS)
			return 0;
		if (flags == IPK_RAM_MEM_SIZE) {
			if (parse_block_list(ps, off) < 0)
				return -1;
			continue;
		}
		uint16_t kind = flags & ~IPK_RAM_CONTINUE;
		if (kind != IPK_RAM_ZERO && kind != IPK_RAM_PAGE) {
			char why[64];
			snprintf(why, sizeof(why), "unsupported RAM record flags 0x%x", flags);
			return bad(ps, rec, why);
		}
		size_t nb;
		const struct ipk_mi_block *blocks = ipk_memimg_blocks(m, &nb);
		if (!(flags & IPK_RAM_CONTINUE)) {
			if (need(ps, 1) < 0)
				return -1;
			uint8_t l = ps->p[ps->pos];
			if (need(ps, 1 + (size_t)l) < 0)
				return -1;
			int found = -1;
			for (size_t i = 0; i < nb; i++)
				if (blocks[i].namelen == l && !memcmp(blocks[i].name, ps->p + ps->pos + 1, l)) {
					found = (int)i;
					break;
				}
			if (found < 0)
				return bad(ps, rec, "page of an unknown RAM block");
			ps->cur_block = found;
			ps->pos += 1 + (size_t)l;
		} else if (ps->cur_block < 0) {
			return bad(ps, rec, "continued page without a previous block");
		}
		const struct ipk_mi_block *b = &blocks[ps->cur_block];
		if (off >= b->len)
			return bad(ps, rec, "page beyond the end of its RAM block");
		struct ipk_mi_item it;
		memset(&it, 0, sizeof(it));
		it.rflags = flags;
		it.block = (uint16_t)ps->cur_block;
		it.addr = b->base + off;
		it.len = IPK_PAGE_SIZE;
		it.off = ps->pos;
		if (kind == IPK_RAM_ZERO) {
			if (need(ps, 1) < 0)
				return -1;
			it.zero = 1;
			it.fill = ps->p[ps->pos];
			ps->pos += 1;
		} else {
			if (need(ps, IPK_PAGE_SIZE) < 0)
				return -1;
			ps->pos += IPK_PAGE_SIZE;
		}
		/* The bytes before this record's word are opaque (framing, block list). */
		if (rec > ps->op_start && ipk_memimg_add_opaque(m, ps->op_start, rec - ps->op_start, ps->err) < 0)
			return -1;
		if (ipk_memimg_add_page(m, &it, ps->err) < 0)
			return -1;
		ps->op_start = ps->pos;
	}
}

/* Find the ram section's START header from pos on: 0x01, be32 id, 0x03 "ram",
 * be32 instance, be32 version, then a block-list word. Used to step over
 * configuration subsections, whose layout is not described in the stream. */
static size_t find_ram_start_in(const struct parser *ps, size_t from)
{
	static const uint8_t pat[] = { 0x03, 'r', 'a', 'm' };
	size_t i = from;
	while (i + 5 + sizeof(pat) + 8 + 8 <= ps->n) {
		const uint8_t *hit = memmem(ps->p + i + 5, ps->n - i - 5, pat, sizeof(pat));
		if (!hit)
			return 0;
		size_t at = (size_t)(hit - ps->p) - 5;
		if (at + 5 + 4 + 8 + 8 <= ps->n && ps->p[at] == SEC_START &&
		    (be64(ps->p + at + 5 + 4 + 8) & (IPK_PAGE_SIZE - 1)) == IPK_RAM_MEM_SIZE)
			return at;
		i = at + 1;
	}
	return 0;
}

/* find_ram_start_in, on a followed image over more of it as it comes:
 * the section is near the stream's start. */
static size_t find_ram_start(struct parser *ps, size_t from)
{
	for (;;) {
		size_t at = find_ram_start_in(ps, from);
		if (at || !have(ps, ps->n - ps->pos + (64u << 10)))
			return at ? at : find_ram_start_in(ps, from);
	}
}

int ipk_qemusave_parse(struct ipk_memimg *m, struct ipk_err *err)
{
	struct parser ps = { .m = m, .cur_block = -1, .err = err };
	ps.p = ipk_memimg_bytes(m, &ps.n);
	ps.n = ipk_memimg_more(m, IPK_LIBVIRT_HEADER_LEN);
	int kind = ipk_qemusave_detect(ps.p, ps.n);
	if (kind == IPK_MI_LIBVIRT) {
		if (!have(&ps, IPK_LIBVIRT_HEADER_LEN))
			return bad(&ps, ps.n, "truncated libvirt header");
		/* virQEMUSaveHeader: magic[16], version, data_len, was_running,
		 * compressed, cookieOffset, unused[14], all uint32 in host order. */
		uint32_t f[5];
		memcpy(f, ps.p + 16, sizeof(f));
		if (f[0] > 0xffff) /* written on a host of the other byte order */
			for (int i = 0; i < 5; i++)
				f[i] = __builtin_bswap32(f[i]);
		if (f[3] != 0)
			return ipk_err_set(err, IPK_EXIT_DATAERR,
					   "read libvirt save image '%s': compressed images (format %u) are not supported",
					   ipk_memimg_name(m), f[3]);
		if (!have(&ps, IPK_LIBVIRT_HEADER_LEN + (size_t)f[1]))
			return bad(&ps, 20, "domain XML length beyond the end");
		ps.pos = IPK_LIBVIRT_HEADER_LEN + f[1];
	} else if (kind != IPK_MI_QEMU) {
		return bad(&ps, 0, "no QEMU or libvirt magic");
	}
	ipk_memimg_set_kind(m, kind);
	ps.qemu_start = ps.pos;
	if (need(&ps, 8) < 0)
		return -1;
	if (be32(ps.p + ps.pos) != IPK_QEMU_MAGIC)
		return bad(&ps, ps.pos, "no QEMU stream magic");
	if (be32(ps.p + ps.pos + 4) != 3)
		return bad(&ps, ps.pos + 4, "unsupported QEMU stream version");
	ps.pos += 8;
	/* The configuration section: 0x07, be32 length, machine name. */
	if (have(&ps, 1) && ps.p[ps.pos] == SEC_CONFIGURATION) {
		if (need(&ps, 5) < 0)
			return -1;
		uint32_t l = be32(ps.p + ps.pos + 1);
		ps.pos += 5;
		if (need(&ps, l) < 0)
			return -1;
		ps.pos += l;
	}
	uint32_t ram_id = 0;
	int have_ram = 0, ram_done = 0;
	while (!ram_done && have(&ps, 1)) {
		uint8_t t = ps.p[ps.pos];
		if (!have_ram && t != SEC_START) {
			/* Subsections of the configuration (or anything else before RAM). */
			size_t s = find_ram_start(&ps, ps.pos);
			if (!s)
				break;
			ps.pos = s;
			continue;
		}
		if (t == SEC_START || t == SEC_FULL) {
			if (need(&ps, 6) < 0)
				return -1;
			uint32_t id = be32(ps.p + ps.pos + 1);
			uint8_t l = ps.p[ps.pos + 5];
			if (need(&ps, 6 + (size_t)l + 8) < 0)
				return -1;
			int is_ram = t == SEC_START && l == 3 && !memcmp(ps.p + ps.pos + 6, "ram", 3);
			if (!is_ram || have_ram) {
				if (!have_ram) {
					size_t s = find_ram_start(&ps, ps.pos + 1);
					if (!s)
						break;
					ps.pos = s;
					continue;
				}
				break; /* device state and the rest: opaque */
			}
			have_ram = 1;
			ram_id = id;
			ps.pos += 6 + (size_t)l + 8;
		} else if (t == SEC_PART || t == SEC_END) {
			if (need(&ps, 5) < 0)
				return -1;
			if (be32(ps.p + ps.pos + 1) != ram_id)
				break; /* another iterative device: not interpreted */
			ps.pos += 5;
			ram_done = t == SEC_END;
		} else if (t == SEC_COMMAND && have_ram) {
			/* be16 command, be16 length, data: QEMU 10 puts its
			 * switchover-start (11, no data) between the RAM parts and
			 * the last one; opaque, and the RAM goes on after it */
			if (need(&ps, 5) < 0)
				return -1;
			size_t l = (size_t)ps.p[ps.pos + 3] << 8 | ps.p[ps.pos + 4];
			if (need(&ps, 5 + l) < 0)
				return -1;
			ps.pos += 5 + l;
			continue;
		} else {
			break;
		}
		if (parse_ram_body(&ps) < 0)
			return -1;
		if (have(&ps, 5) && ps.p[ps.pos] == SEC_FOOTER && be32(ps.p + ps.pos + 1) == ram_id)
			ps.pos += 5;
	}
	if (!have_ram)
		return bad(&ps, ps.qemu_start, "no RAM section");
	ps.n = ipk_memimg_more(m, SIZE_MAX); /* the rest, to the end */
	return ipk_memimg_add_opaque(m, ps.op_start, ps.n - ps.op_start, err);
}
