/* memimg.c - the page model of a memory image (see memimg.h). */
#define _GNU_SOURCE
#include "memimg.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>
#include "xxh.h"

#include "qemusave.h"

struct ipk_memimg {
	char name[256];
	int kind;
	const uint8_t *buf;
	size_t len;
	void *owned;     /* malloc'd bytes to free, or NULL */
	void *map;       /* mmap'd bytes to unmap, or NULL */
	size_t maplen;
	XXH3_state_t *hs; /* while parsing: XXH3-128 of the bytes before `hashed` */
	size_t hashed, trimmed; /* bytes hashed; where the last trim happened */
	size_t populated;       /* bytes faulted in ahead of the parse */
	struct ipk_mi_item *items;
	size_t nitems, capitems;
	struct ipk_mi_page *pages;
	size_t npages;
	struct ipk_mi_block *blocks;
	size_t nblocks, capblocks;
	uint32_t nopaque;
	uint64_t hlo, hhi;
	uint64_t zhash; /* XXH3-64 of a zero page */
	int nohash;     /* IPK_MI_NOHASH: page hashes not computed */
};

static const uint8_t zero_page[IPK_PAGE_SIZE];

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14; older kernels refuse it (EINVAL) and pages fault in one by one */
#endif
#define IPK_MI_POPULATE_BYTES (4u << 20)

int ipk_memimg_kind(const struct ipk_memimg *m) { return m->kind; }
const char *ipk_memimg_name(const struct ipk_memimg *m) { return m->name; }
void ipk_memimg_set_kind(struct ipk_memimg *m, int kind) { m->kind = kind; }

const uint8_t *ipk_memimg_bytes(const struct ipk_memimg *m, size_t *len)
{
	*len = m->len;
	return m->buf;
}

const struct ipk_mi_item *ipk_memimg_items(const struct ipk_memimg *m, size_t *n)
{
	*n = m->nitems;
	return m->items;
}

const struct ipk_mi_page *ipk_memimg_pages(const struct ipk_memimg *m, size_t *n)
{
	*n = m->npages;
	return m->pages;
}

const struct ipk_mi_block *ipk_memimg_blocks(const struct ipk_memimg *m, size_t *n)
{
	*n = m->nblocks;
	return m->blocks;
}

void ipk_memimg_hash(const struct ipk_memimg *m, uint64_t *lo, uint64_t *hi)
{
	*lo = m->hlo;
	*hi = m->hhi;
}

void ipk_memimg_free(struct ipk_memimg *m)
{
	if (!m)
		return;
	if (m->map)
		munmap(m->map, m->maplen);
	free(m->owned);
	free(m->items);
	free(m->pages);
	free(m->blocks);
	free(m);
}

void ipk_memimg_trim(const struct ipk_memimg *m)
{
	/* Only read, never written: dropping the pages is safe, also while
	 * another thread reads them (it faults them in again from the file). */
	if (m && m->map)
		madvise(m->map, m->maplen, MADV_DONTNEED);
}

/* Hash the image's bytes up to upto (the parse goes forward), dropping the
 * mapped pages every IPK_MI_TRIM_BYTES. */
static void advance(struct ipk_memimg *m, size_t upto)
{
	if (!m->hs || upto <= m->hashed)
		return;
	if (upto > m->len)
		upto = m->len;
	if (m->map && upto > m->populated) {
		/* Fault the next stretch in with one call, not page by page. */
		size_t from = (m->populated > m->hashed ? m->populated : m->hashed) & ~(size_t)(IPK_PAGE_SIZE - 1);
		size_t n = upto - from > IPK_MI_POPULATE_BYTES ? upto - from : IPK_MI_POPULATE_BYTES;
		if (n > m->len - from)
			n = m->len - from;
		madvise((uint8_t *)m->map + from, n, MADV_POPULATE_READ);
		m->populated = from + n;
	}
	ipk_xxh3_128_update(m->hs, m->buf + m->hashed, upto - m->hashed);
	m->hashed = upto;
	if (m->map && m->hashed - m->trimmed >= IPK_MI_TRIM_BYTES) {
		ipk_memimg_trim(m);
		m->trimmed = m->populated = m->hashed;
	}
}

static int grow(void **p, size_t *cap, size_t need, size_t size, struct ipk_err *err)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap * 2 : 256;
	while (n < need)
		n *= 2;
	void *q = realloc(*p, n * size);
	if (!q)
		return ipk_err_set(err, IPK_EXIT_OSERR, "allocate image index: out of memory");
	*p = q;
	*cap = n;
	return 0;
}

int ipk_memimg_add_opaque(struct ipk_memimg *m, uint64_t off, uint64_t len, struct ipk_err *err)
{
	while (len > 0) {
		uint64_t n = len > IPK_MI_OPAQUE_MAX ? IPK_MI_OPAQUE_MAX : len;
		if (grow((void **)&m->items, &m->capitems, m->nitems + 1, sizeof(*m->items), err) < 0)
			return -1;
		struct ipk_mi_item *it = &m->items[m->nitems++];
		memset(it, 0, sizeof(*it));
		it->type = IPK_MI_OPAQUE;
		it->ord = m->nopaque++;
		it->len = (uint32_t)n;
		it->off = off;
		off += n;
		len -= n;
	}
	return 0;
}

int ipk_memimg_add_page(struct ipk_memimg *m, const struct ipk_mi_item *page, struct ipk_err *err)
{
	if (grow((void **)&m->items, &m->capitems, m->nitems + 1, sizeof(*m->items), err) < 0)
		return -1;
	struct ipk_mi_item *it = &m->items[m->nitems++];
	*it = *page;
	it->type = IPK_MI_PAGE;
	uint8_t scratch[IPK_PAGE_SIZE];
	const uint8_t *d = ipk_memimg_item_data(m, it, scratch);
	if (!m->nohash)
		it->hash = it->zero && it->fill == 0 ? m->zhash : ipk_xxh3_64(d, it->len);
	else /* only the zero-page mark: most pages fail on the first word */
		it->hash = (it->zero && it->fill == 0) ||
				   (!it->zero && it->len == IPK_PAGE_SIZE && !memcmp(d, zero_page, 8) &&
				    !memcmp(d, zero_page, IPK_PAGE_SIZE))
			   ? m->zhash
			   : 0;
	advance(m, it->off + (it->zero ? 1 : it->len));
	return 0;
}

int ipk_memimg_add_block(struct ipk_memimg *m, const struct ipk_mi_block *b, struct ipk_err *err)
{
	if (grow((void **)&m->blocks, &m->capblocks, m->nblocks + 1, sizeof(*m->blocks), err) < 0)
		return -1;
	m->blocks[m->nblocks++] = *b;
	return 0;
}

const uint8_t *ipk_memimg_item_data(const struct ipk_memimg *m, const struct ipk_mi_item *it, uint8_t *scratch)
{
	if (it->type == IPK_MI_PAGE && it->zero) {
		if (it->fill == 0)
			return zero_page;
		memset(scratch, it->fill, IPK_PAGE_SIZE);
		return scratch;
	}
	return m->buf + it->off;
}

const uint8_t *ipk_memimg_page_data(const struct ipk_memimg *m, const struct ipk_mi_page *p, uint8_t *scratch)
{
	return ipk_memimg_item_data(m, &m->items[p->item], scratch);
}

static int cmp_page_ref(const void *a, const void *b)
{
	const struct ipk_mi_item *x = *(const struct ipk_mi_item *const *)a;
	const struct ipk_mi_item *y = *(const struct ipk_mi_item *const *)b;
	if (x->addr != y->addr)
		return x->addr < y->addr ? -1 : 1;
	return x < y ? -1 : x > y; /* layout order: the later record wins */
}

/* Build the page map from the page items: the latest record per address. */
static int build_pages(struct ipk_memimg *m, struct ipk_err *err)
{
	size_t n = 0;
	for (size_t i = 0; i < m->nitems; i++)
		n += m->items[i].type == IPK_MI_PAGE;
	if (n == 0)
		return 0;
	const struct ipk_mi_item **refs = malloc(n * sizeof(*refs));
	m->pages = malloc(n * sizeof(*m->pages));
	if (!refs || !m->pages) {
		free(refs);
		return ipk_err_set(err, IPK_EXIT_OSERR, "allocate page map '%s': out of memory", m->name);
	}
	size_t k = 0;
	int sorted = 1;
	for (size_t i = 0; i < m->nitems; i++) {
		if (m->items[i].type != IPK_MI_PAGE)
			continue;
		if (k && m->items[i].addr <= refs[k - 1]->addr)
			sorted = 0;
		refs[k++] = &m->items[i];
	}
	if (!sorted)
		qsort(refs, n, sizeof(*refs), cmp_page_ref);
	uint8_t scratch[IPK_PAGE_SIZE];
	const uint64_t zhash = ipk_xxh3_64(zero_page, IPK_PAGE_SIZE);
	m->npages = 0;
	for (size_t i = 0; i < n; i++) {
		if (i + 1 < n && refs[i + 1]->addr == refs[i]->addr)
			continue; /* superseded by a later record */
		const struct ipk_mi_item *it = refs[i];
		struct ipk_mi_page *p = &m->pages[m->npages++];
		memset(p, 0, sizeof(*p));
		p->addr = it->addr;
		p->len = it->len;
		p->off = it->off;
		p->item = (uint32_t)(it - m->items);
		p->record = it->zero;
		p->fill = it->fill;
		p->hash = it->hash;
		if (it->zero && it->fill == 0) {
			p->zero = 1;
		} else if (p->hash == zhash || it->len < IPK_PAGE_SIZE) {
			const uint8_t *d = ipk_memimg_item_data(m, it, scratch);
			if (it->len == IPK_PAGE_SIZE)
				p->zero = p->hash == zhash && !memcmp(d, zero_page, IPK_PAGE_SIZE);
			else
				p->zero = !memcmp(d, zero_page, it->len);
		}
	}
	free(refs);
	return 0;
}

const struct ipk_mi_page *ipk_memimg_find(const struct ipk_memimg *m, uint64_t addr, size_t *hint)
{
	if (m->npages == 0)
		return NULL;
	if (hint) {
		size_t h = *hint;
		if (h < m->npages && m->pages[h].addr == addr) {
			*hint = h + 1;
			return &m->pages[h];
		}
	}
	size_t lo = 0, hi = m->npages;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->pages[mid].addr < addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < m->npages && m->pages[lo].addr == addr) {
		if (hint)
			*hint = lo + 1;
		return &m->pages[lo];
	}
	return NULL;
}

static int parse_plain(struct ipk_memimg *m, struct ipk_err *err)
{
	struct ipk_mi_item it;
	memset(&it, 0, sizeof(it));
	for (uint64_t off = 0; off < m->len; off += IPK_PAGE_SIZE) {
		it.addr = it.off = off;
		it.len = (uint32_t)(m->len - off < IPK_PAGE_SIZE ? m->len - off : IPK_PAGE_SIZE);
		if (ipk_memimg_add_page(m, &it, err) < 0)
			return -1;
	}
	return 0;
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* An ipkit process dump (see memimg.h). */
static int parse_process(struct ipk_memimg *m, struct ipk_err *err)
{
	const uint8_t *p = m->buf;
	size_t n = m->len;
	if (n < 16 || memcmp(p, IPK_PROC_MAGIC, 8))
		return ipk_err_set(err, IPK_EXIT_DATAERR, "bad process dump '%s': no magic", m->name);
	uint32_t ml = (uint32_t)p[12] | (uint32_t)p[13] << 8 | (uint32_t)p[14] << 16 | (uint32_t)p[15] << 24;
	if (ml > n - 16)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "bad process dump '%s': truncated maps", m->name);
	size_t pos = 16 + (size_t)ml;
	if (ipk_memimg_add_opaque(m, 0, pos, err) < 0)
		return -1;
	struct ipk_mi_item it;
	memset(&it, 0, sizeof(it));
	it.len = IPK_PAGE_SIZE;
	for (;;) {
		if (n - pos < 8)
			return ipk_err_set(err, IPK_EXIT_DATAERR, "bad process dump '%s': truncated at offset %zu", m->name, n);
		uint64_t a = le64(p + pos);
		if (a == IPK_PROC_END) {
			if (pos + 8 != n)
				return ipk_err_set(err, IPK_EXIT_DATAERR, "bad process dump '%s': data after the end", m->name);
			return ipk_memimg_add_opaque(m, pos, 8, err);
		}
		if (a % IPK_PAGE_SIZE || n - pos - 8 < IPK_PAGE_SIZE)
			return ipk_err_set(err, IPK_EXIT_DATAERR, "bad process dump '%s': bad page at offset %zu", m->name, pos);
		it.addr = a;
		it.off = pos + 8;
		if (ipk_memimg_add_page(m, &it, err) < 0)
			return -1;
		pos += 8 + IPK_PAGE_SIZE;
	}
}

/* Build the model over buf; own: free it (malloc'd); map: unmap it (mmap'd,
 * len bytes), also on failure. */
static struct ipk_memimg *from_mem(const void *buf, size_t len, int own, void *map, int kind, int flags,
				   const char *name, struct ipk_err *err)
{
	struct ipk_memimg *m = calloc(1, sizeof(*m));
	XXH3_state_t *hs = XXH3_createState();
	if (!m || !hs) {
		if (own)
			free((void *)buf);
		if (map)
			munmap(map, len);
		free(m);
		XXH3_freeState(hs);
		ipk_err_set(err, IPK_EXIT_OSERR, "read image '%s': out of memory", name);
		return NULL;
	}
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->buf = len ? buf : zero_page;
	m->len = len;
	if (own)
		m->owned = (void *)buf;
	if (map) {
		m->map = map;
		m->maplen = len;
	}
	m->zhash = ipk_xxh3_64(zero_page, IPK_PAGE_SIZE);
	m->nohash = (flags & IPK_MI_NOHASH) != 0;
	/* The image's identity is hashed as the parse goes (advance). */
	m->hs = hs;
	XXH3_128bits_reset(hs);
	if (kind == 0 && len >= 16 && !memcmp(m->buf, IPK_PROC_MAGIC, 8))
		kind = IPK_MI_PROCESS;
	if (kind == 0)
		kind = ipk_qemusave_detect(m->buf, len);
	m->kind = kind ? kind : IPK_MI_PLAIN;
	int rc = m->kind == IPK_MI_PLAIN     ? parse_plain(m, err) :
		 m->kind == IPK_MI_PROCESS ? parse_process(m, err) :
					     ipk_qemusave_parse(m, err);
	if (rc == 0)
		advance(m, len);
	XXH128_hash_t h = XXH3_128bits_digest(hs);
	XXH3_freeState(hs);
	m->hs = NULL;
	m->hlo = h.low64;
	m->hhi = h.high64;
	if (rc < 0 || build_pages(m, err) < 0) {
		ipk_memimg_free(m);
		return NULL;
	}
	ipk_memimg_trim(m);
	return m;
}

struct ipk_memimg *ipk_memimg_from_mem(const void *buf, size_t len, int own, int kind,
				       const char *name, struct ipk_err *err)
{
	return from_mem(buf, len, own, NULL, kind, 0, name, err);
}

int ipk_memimg_tmpfile(const char *name, struct ipk_err *err)
{
	const char *dirs[2] = { getenv("TMPDIR"), "/var/tmp" };
	for (int i = 0; i < 2; i++) {
		if (!dirs[i] || !*dirs[i])
			continue;
		int fd = open(dirs[i], O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (fd >= 0)
			return fd;
	}
	return ipk_err_set(err, IPK_EXIT_CANTCREAT, "spool image '%s': no temporary file in $TMPDIR or /var/tmp: %s",
			   name, strerror(errno));
}

struct ipk_memimg *ipk_memimg_map(int fd, int kind, const char *name, struct ipk_err *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		ipk_err_set(err, IPK_EXIT_IOERR, "map image '%s': %s", name, strerror(errno));
		return NULL;
	}
	if (st.st_size == 0)
		return from_mem(zero_page, 0, 0, NULL, kind, 0, name, err);
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		ipk_err_set(err, IPK_EXIT_OSERR, "map image '%s': %s", name, strerror(errno));
		return NULL;
	}
	return from_mem(p, (size_t)st.st_size, 0, p, kind, 0, name, err);
}

static struct ipk_memimg *map_fd(int fd, size_t len, int kind, int flags, const char *name, struct ipk_err *err)
{
	void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED)
		return NULL;
	return from_mem(p, len, 0, p, kind, flags, name, err);
}

static struct ipk_memimg *spool(FILE *in, int kind, int flags, const char *name, struct ipk_err *err)
{
	int fd = ipk_memimg_tmpfile(name, err);
	if (fd < 0)
		return NULL;
	enum { CHUNK = 1 << 20 };
	uint8_t *buf = malloc(CHUNK);
	size_t len = 0;
	struct ipk_memimg *m = NULL;
	if (!buf) {
		ipk_err_set(err, IPK_EXIT_OSERR, "spool image '%s': out of memory", name);
		goto done;
	}
	for (;;) {
		size_t r = fread(buf, 1, CHUNK, in);
		if (r == 0) {
			if (ferror(in)) {
				ipk_err_set(err, IPK_EXIT_IOERR, "read image '%s': %s", name, strerror(errno));
				goto done;
			}
			break;
		}
		for (size_t w = 0; w < r;) {
			ssize_t k = write(fd, buf + w, r - w);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0) {
				ipk_err_set(err, IPK_EXIT_IOERR, "spool image '%s': %s", name, strerror(errno));
				goto done;
			}
			w += (size_t)k;
		}
		len += r;
	}
	if (len == 0) {
		m = from_mem(zero_page, 0, 0, NULL, kind, flags, name, err);
		goto done;
	}
	m = map_fd(fd, len, kind, flags, name, err);
	if (!m && !err->code)
		ipk_err_set(err, IPK_EXIT_OSERR, "map image '%s': %s", name, strerror(errno));
done:
	free(buf);
	close(fd);
	return m;
}

struct ipk_memimg *ipk_memimg_spool(FILE *in, int kind, const char *name, struct ipk_err *err)
{
	return spool(in, kind, 0, name, err);
}

int ipk_memimg_page_hashes(const struct ipk_memimg *m)
{
	return !m->nohash;
}

struct ipk_memimg *ipk_memimg_from_fd(int fd, const char *name, struct ipk_err *err)
{
	return ipk_memimg_from_fd_flags(fd, name, 0, err);
}

struct ipk_memimg *ipk_memimg_from_fd_flags(int fd, const char *name, int flags, struct ipk_err *err)
{
	struct stat st;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
		/* Mapped, not read: only what is touched is resident, and it is
		 * dropped again as the parse and the encoder move on. */
		struct ipk_memimg *m = map_fd(fd, (size_t)st.st_size, 0, flags, name, err);
		if (m || err->code)
			return m;
	}
	/* A pipe (or an unmappable file): copied to an unlinked temporary file
	 * and mapped, never held in memory as a whole. */
	int dfd = dup(fd);
	FILE *in = dfd >= 0 ? fdopen(dfd, "r") : NULL;
	if (!in) {
		if (dfd >= 0)
			close(dfd);
		ipk_err_set(err, IPK_EXIT_OSERR, "read image '%s': %s", name, strerror(errno));
		return NULL;
	}
	struct ipk_memimg *m = spool(in, 0, flags, name, err);
	fclose(in);
	return m;
}

struct ipk_memimg *ipk_memimg_open(const char *path, struct ipk_err *err)
{
	if (!strcmp(path, "-"))
		return ipk_memimg_from_fd(0, "stdin", err);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ipk_err_set(err, errno == ENOENT ? IPK_EXIT_NOINPUT : IPK_EXIT_IOERR, "open image '%s': %s", path,
			    strerror(errno));
		return NULL;
	}
	struct ipk_memimg *m = ipk_memimg_from_fd(fd, path, err);
	close(fd);
	return m;
}

void ipk_memimg_stats(const struct ipk_memimg *m, struct ipk_memimg_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->bytes = m->len;
	st->pages = m->npages;
	for (size_t i = 0; i < m->nitems; i++) {
		if (m->items[i].type == IPK_MI_PAGE)
			st->records++;
		else
			st->opaque_bytes += m->items[i].len;
	}
	for (size_t i = 0; i < m->npages; i++)
		st->zero_pages += m->pages[i].zero;
}

int ipk_mi_page_header(const struct ipk_mi_block *blocks, size_t nblocks, uint16_t block, uint64_t addr,
		       uint16_t rflags, uint8_t *out)
{
	if (block >= nblocks || addr < blocks[block].base || addr - blocks[block].base >= blocks[block].len)
		return -1;
	uint64_t w = (addr - blocks[block].base) | rflags;
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(w >> (56 - 8 * i));
	if (rflags & IPK_RAM_CONTINUE)
		return 8;
	out[8] = blocks[block].namelen;
	memcpy(out + 9, blocks[block].name, blocks[block].namelen);
	return 9 + blocks[block].namelen;
}

static int write_all(int fd, const void *p, size_t n, const char *name, struct ipk_err *err)
{
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return ipk_err_set(err, IPK_EXIT_IOERR, "write image '%s': %s", name, strerror(errno));
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

int ipk_memimg_write(const struct ipk_memimg *m, int fd, struct ipk_err *err)
{
	/* Gather into a buffer so that small page headers do not cost a write each. */
	enum { BUFSZ = 1 << 20 };
	uint8_t *out = malloc(BUFSZ);
	if (!out)
		return ipk_err_set(err, IPK_EXIT_OSERR, "write image '%s': out of memory", m->name);
	size_t n = 0;
	int rc = 0;
	for (size_t i = 0; i < m->nitems && rc == 0; i++) {
		const struct ipk_mi_item *it = &m->items[i];
		size_t need = 300 + (it->len > IPK_PAGE_SIZE ? it->len : IPK_PAGE_SIZE);
		if (n + need > BUFSZ) {
			rc = write_all(fd, out, n, m->name, err);
			n = 0;
		}
		if (rc)
			break;
		if (it->type == IPK_MI_OPAQUE) {
			if (it->len > BUFSZ / 2)
				rc = write_all(fd, m->buf + it->off, it->len, m->name, err);
			else {
				memcpy(out + n, m->buf + it->off, it->len);
				n += it->len;
			}
			continue;
		}
		if (m->kind == IPK_MI_PROCESS) {
			for (int k = 0; k < 8; k++)
				out[n + k] = (uint8_t)(it->addr >> (8 * k));
			n += 8;
		} else if (m->kind != IPK_MI_PLAIN) {
			int h = ipk_mi_page_header(m->blocks, m->nblocks, it->block, it->addr, it->rflags, out + n);
			if (h < 0) {
				rc = ipk_err_set(err, IPK_EXIT_SOFTWARE, "write image '%s': page outside its block", m->name);
				break;
			}
			n += (size_t)h;
		}
		size_t dl = it->zero ? 1 : it->len;
		memcpy(out + n, m->buf + it->off, dl);
		n += dl;
	}
	if (rc == 0)
		rc = write_all(fd, out, n, m->name, err);
	free(out);
	return rc;
}
