/* memimg.c - the page model of a memory image (see memimg.h). */
#define _GNU_SOURCE
#include "memimg.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>
#include "xxh.h"

#include "qemusave.h"

/* A followed image (memimg.h): the parse thread and what it shares. */
struct follow {
	int fd;                    /* dup of the file being written */
	size_t reserve;            /* bytes mapped */
	int (*ended)(void *ctx);
	void *ctx;
	pthread_t th;
	int started;
	atomic_int cancel;         /* ipk_memimg_free: stop waiting */
	/* parse thread only */
	size_t avail;              /* bytes known written */
	int writer;                /* 0 writing, 1 done, -1 failed */
	int patched;               /* the partial libvirt magic was replaced */
	char why[256];             /* why the input ended short */
	/* under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t published;          /* items usable by others */
	int state;                 /* 0 parsing, 1 done, -1 failed */
	struct ipk_err err;        /* the failure */
};

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
	struct follow *fl; /* followed: the parse runs in fl->th */
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

void ipk_memimg_id_hex(const struct ipk_memimg *m, char out[33])
{
	ipk_id_hex(m->hhi, m->hlo, out);
}

void ipk_memimg_free(struct ipk_memimg *m)
{
	if (!m)
		return;
	if (m->fl) {
		atomic_store(&m->fl->cancel, 1);
		if (m->fl->started)
			pthread_join(m->fl->th, NULL);
		pthread_mutex_destroy(&m->fl->mu);
		pthread_cond_destroy(&m->fl->cv);
		close(m->fl->fd);
		free(m->fl);
	}
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
	if (m && m->map && m->fl)
		/* the first page holds the replaced magic: a private copy */
		madvise((uint8_t *)m->map + IPK_PAGE_SIZE, m->maplen - IPK_PAGE_SIZE, MADV_DONTNEED);
	else if (m && m->map)
		madvise(m->map, m->maplen, MADV_DONTNEED);
}

/* The bytes a parse may read: all of them, or what a followed file has so far. */
static size_t parse_len(const struct ipk_memimg *m)
{
	return m->fl ? m->fl->avail : m->len;
}

/* A followed libvirt image whose magic is still the partial one: read it
 * as complete (a private copy of the first page), before anything is
 * hashed or parsed, once the first page is written (the file is written
 * in order). */
static void patch_magic(struct ipk_memimg *m)
{
	struct follow *f = m->fl;
	if (f->patched || m->kind != IPK_MI_LIBVIRT || f->avail < IPK_PAGE_SIZE)
		return;
	if (!memcmp(m->buf, IPK_LIBVIRT_MAGIC_PARTIAL, 16))
		memcpy(m->map, IPK_LIBVIRT_MAGIC, 16);
	f->patched = 1;
}

/* Hash the image's bytes up to upto (the parse goes forward), dropping the
 * mapped pages every IPK_MI_TRIM_BYTES. */
static void advance(struct ipk_memimg *m, size_t upto)
{
	if (!m->hs || upto <= m->hashed)
		return;
	size_t lim = parse_len(m);
	if (upto > lim)
		upto = lim;
	if (m->map && upto > m->populated) {
		/* Fault the next stretch in with one call, not page by page. */
		size_t from = (m->populated > m->hashed ? m->populated : m->hashed) & ~(size_t)(IPK_PAGE_SIZE - 1);
		size_t n = upto - from > IPK_MI_POPULATE_BYTES ? upto - from : IPK_MI_POPULATE_BYTES;
		if (n > lim - from)
			n = lim - from;
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

/* Room for one more item; a followed image's items move only under its
 * lock (ipk_memimg_follow_items copies them under it). */
static int grow_items(struct ipk_memimg *m, struct ipk_err *err)
{
	if (m->nitems < m->capitems)
		return 0;
	if (!m->fl)
		return grow((void **)&m->items, &m->capitems, m->nitems + 1, sizeof(*m->items), err);
	pthread_mutex_lock(&m->fl->mu);
	int rc = grow((void **)&m->items, &m->capitems, m->nitems + 1, sizeof(*m->items), err);
	pthread_mutex_unlock(&m->fl->mu);
	return rc;
}

/* Make the items so far usable by others (every 256 and at the end). */
static void publish(struct ipk_memimg *m)
{
	struct follow *f = m->fl;
	pthread_mutex_lock(&f->mu);
	f->published = m->nitems;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

int ipk_memimg_add_opaque(struct ipk_memimg *m, uint64_t off, uint64_t len, struct ipk_err *err)
{
	while (len > 0) {
		uint64_t n = len > IPK_MI_OPAQUE_MAX ? IPK_MI_OPAQUE_MAX : len;
		if (grow_items(m, err) < 0)
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
	if (grow_items(m, err) < 0)
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
	if (m->fl && m->nitems - m->fl->published >= 256)
		publish(m);
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

/* A model over buf, not parsed yet; own: free it (malloc'd); map: unmap
 * it (mmap'd, maplen bytes), also on failure. */
static struct ipk_memimg *model_new(const void *buf, size_t len, int own, void *map, size_t maplen, int flags,
				    const char *name, struct ipk_err *err)
{
	struct ipk_memimg *m = calloc(1, sizeof(*m));
	XXH3_state_t *hs = XXH3_createState();
	if (!m || !hs) {
		if (own)
			free((void *)buf);
		if (map)
			munmap(map, maplen);
		free(m);
		XXH3_freeState(hs);
		ipk_err_set(err, IPK_EXIT_OSERR, "read image '%s': out of memory", name);
		return NULL;
	}
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->buf = len || map ? buf : zero_page;
	m->len = len;
	if (own)
		m->owned = (void *)buf;
	if (map) {
		m->map = map;
		m->maplen = maplen;
	}
	m->zhash = ipk_xxh3_64(zero_page, IPK_PAGE_SIZE);
	m->nohash = (flags & IPK_MI_NOHASH) != 0;
	/* The image's identity is hashed as the parse goes (advance). */
	m->hs = hs;
	XXH3_128bits_reset(hs);
	return m;
}

/* After the parse (rc): hash the rest, the identity, the page map. */
static int model_finish(struct ipk_memimg *m, int rc, struct ipk_err *err)
{
	if (rc == 0)
		advance(m, m->len);
	XXH128_hash_t h = XXH3_128bits_digest(m->hs);
	XXH3_freeState(m->hs);
	m->hs = NULL;
	m->hlo = h.low64;
	m->hhi = h.high64;
	if (rc < 0 || build_pages(m, err) < 0)
		return -1;
	ipk_memimg_trim(m);
	return 0;
}

/* Build the model over buf (see model_new). */
static struct ipk_memimg *from_mem(const void *buf, size_t len, int own, void *map, int kind, int flags,
				   const char *name, struct ipk_err *err)
{
	struct ipk_memimg *m = model_new(buf, len, own, map, len, flags, name, err);
	if (!m)
		return NULL;
	if (kind == 0 && len >= 16 && !memcmp(m->buf, IPK_PROC_MAGIC, 8))
		kind = IPK_MI_PROCESS;
	if (kind == 0)
		kind = ipk_qemusave_detect(m->buf, len);
	m->kind = kind ? kind : IPK_MI_PLAIN;
	int rc = m->kind == IPK_MI_PLAIN     ? parse_plain(m, err) :
		 m->kind == IPK_MI_PROCESS ? parse_process(m, err) :
					     ipk_qemusave_parse(m, err);
	if (model_finish(m, rc, err) < 0) {
		ipk_memimg_free(m);
		return NULL;
	}
	return m;
}

size_t ipk_memimg_more(struct ipk_memimg *m, size_t want)
{
	struct follow *f = m->fl;
	if (!f)
		return m->len;
	while (f->avail < want && !f->writer && !atomic_load(&f->cancel)) {
		/* the end first, then the size: a size read after the end is final */
		int w = f->ended ? f->ended(f->ctx) : 0;
		if (w == 0 && m->kind == IPK_MI_LIBVIRT && ipk_qemusave_libvirt_complete(f->fd))
			w = 1;
		struct stat st;
		if (fstat(f->fd, &st) < 0) {
			snprintf(f->why, sizeof(f->why), "%s", strerror(errno));
			f->writer = -1;
			break;
		}
		if ((size_t)st.st_size > f->reserve) {
			snprintf(f->why, sizeof(f->why), "it grew beyond %zu bytes", f->reserve);
			f->writer = -1;
			break;
		}
		if ((size_t)st.st_size > f->avail)
			f->avail = (size_t)st.st_size;
		if (w < 0)
			snprintf(f->why, sizeof(f->why), "its writer failed before it was complete");
		if (w) {
			f->writer = w;
			break;
		}
		if (f->avail >= want)
			break;
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	if (atomic_load(&f->cancel) && !f->why[0])
		snprintf(f->why, sizeof(f->why), "stopped");
	return f->avail;
}

static void *follow_run(void *arg)
{
	struct ipk_memimg *m = arg;
	struct follow *f = m->fl;
	struct ipk_err e = { 0 };
	/* the first page (libvirt's header) before anything is parsed */
	size_t n = ipk_memimg_more(m, IPK_PAGE_SIZE);
	int rc = -1;
	m->kind = ipk_qemusave_detect(m->buf, n);
	if (!m->kind) {
		if (!f->why[0])
			ipk_err_set(&e, IPK_EXIT_DATAERR, "follow image '%s': not a libvirt save image or QEMU stream",
				    m->name);
	} else {
		patch_magic(m);
		rc = ipk_qemusave_parse(m, &e);
	}
	if (f->why[0] || f->writer < 0 || atomic_load(&f->cancel))
		rc = ipk_err_set(&e, IPK_EXIT_IOERR, "follow image '%s': %s", m->name, f->why[0] ? f->why : "stopped");
	uint8_t hd[IPK_LIBVIRT_HEADER_LEN];
	if (rc == 0 && m->kind == IPK_MI_LIBVIRT &&
	    (f->avail < sizeof(hd) || pread(f->fd, hd, sizeof(hd), 0) != (ssize_t)sizeof(hd) ||
	     memcmp(hd, m->buf, sizeof(hd))))
		rc = ipk_err_set(&e, IPK_EXIT_IOERR,
				 "follow image '%s': its libvirt header changed while it was written (not only the magic)",
				 m->name);
	m->len = f->avail;
	rc = model_finish(m, rc, &e);
	pthread_mutex_lock(&f->mu);
	f->published = m->nitems;
	f->state = rc == 0 ? 1 : -1;
	f->err = e;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

struct ipk_memimg *ipk_memimg_follow(int fd, const char *name, int flags, size_t reserve, int (*ended)(void *ctx),
				     void *ctx, struct ipk_err *err)
{
	reserve = (reserve + IPK_PAGE_SIZE - 1) & ~(size_t)(IPK_PAGE_SIZE - 1);
	if (reserve < IPK_PAGE_SIZE)
		reserve = IPK_PAGE_SIZE;
	struct follow *f = calloc(1, sizeof(*f));
	int dfd = f ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
	/* writable private mapping: only the first page is ever written (the magic) */
	void *p = dfd >= 0 ? mmap(NULL, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, dfd, 0)
			   : MAP_FAILED;
	if (p == MAP_FAILED) {
		ipk_err_set(err, IPK_EXIT_OSERR, "follow image '%s': %s", name, strerror(errno));
		if (dfd >= 0)
			close(dfd);
		free(f);
		return NULL;
	}
	struct ipk_memimg *m = model_new(p, 0, 0, p, reserve, flags, name, err);
	if (!m) {
		close(dfd);
		free(f);
		return NULL;
	}
	f->fd = dfd;
	f->reserve = reserve;
	f->ended = ended;
	f->ctx = ctx;
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	m->fl = f;
	int te = pthread_create(&f->th, NULL, follow_run, m);
	if (te != 0) {
		ipk_err_set(err, IPK_EXIT_OSERR, "follow image '%s': %s", name, strerror(te));
		ipk_memimg_free(m);
		return NULL;
	}
	f->started = 1;
	return m;
}

size_t ipk_memimg_follow_wait(const struct ipk_memimg *m, size_t want, int *state)
{
	struct follow *f = m->fl;
	if (!f) {
		*state = 1;
		return m->nitems;
	}
	pthread_mutex_lock(&f->mu);
	while (f->published < want && !f->state)
		pthread_cond_wait(&f->cv, &f->mu);
	size_t n = f->published;
	*state = f->state;
	pthread_mutex_unlock(&f->mu);
	return n;
}

void ipk_memimg_follow_items(const struct ipk_memimg *m, size_t from, size_t to, struct ipk_mi_item *out)
{
	if (m->fl)
		pthread_mutex_lock(&m->fl->mu);
	memcpy(out, m->items + from, (to - from) * sizeof(*out));
	if (m->fl)
		pthread_mutex_unlock(&m->fl->mu);
}

int ipk_memimg_follow_join(const struct ipk_memimg *m, struct ipk_err *err)
{
	struct follow *f = m->fl;
	if (!f || !f->started)
		return 0;
	pthread_join(f->th, NULL);
	f->started = 0;
	if (f->state < 0) {
		*err = f->err;
		return -1;
	}
	return 0;
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
