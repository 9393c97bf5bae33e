/* snapshot.c - libvirt memory capture (see snapshot.h). */
#define _GNU_SOURCE
#include "snapshot.h"
#include "memimg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

static void quiet(void *opaque, virErrorPtr e)
{
	(void)opaque;
	(void)e;
}

static const char *lv_msg(void)
{
	const char *m = virGetLastErrorMessage();
	return m ? m : "unknown libvirt error";
}

/* XML-escape s into out (size n); returns -1 when it does not fit. */
static int xml_escape(const char *s, char *out, size_t n)
{
	size_t k = 0;
	for (; *s; s++) {
		const char *rep = NULL;
		switch (*s) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '\'': rep = "&apos;"; break;
		case '"': rep = "&quot;"; break;
		}
		size_t l = rep ? strlen(rep) : 1;
		if (k + l + 1 > n)
			return -1;
		if (rep)
			memcpy(out + k, rep, l);
		else
			out[k] = *s;
		k += l;
	}
	out[k] = 0;
	return 0;
}

int ipk_snapshot_libvirt(const struct ipk_snap_libvirt *o, struct ipk_err *err)
{
	if (!o->path || o->path[0] != '/')
		return ipk_err_set(err, IPK_EXIT_USAGE, "capture domain '%s': the image path must be absolute",
				   o->domain);
	virSetErrorFunc(NULL, quiet);
	virConnectPtr c = virConnectOpen(o->uri);
	if (!c)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "connect to libvirt '%s': %s", o->uri ? o->uri : "default",
				   lv_msg());
	virConnSetErrorFunc(c, NULL, quiet);
	int rc = -1;
	virDomainPtr d = virDomainLookupByName(c, o->domain);
	if (!d) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "find domain '%s': %s", o->domain, lv_msg());
		goto out;
	}
	if (o->live) {
		char path[8192], xml[8400];
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		if (xml_escape(o->path, path, sizeof(path)) < 0) {
			ipk_err_set(err, IPK_EXIT_USAGE, "capture domain '%s': image path too long", o->domain);
			goto out;
		}
		snprintf(xml, sizeof(xml),
			 "<domainsnapshot><name>ipkit-%lld-%09ld</name>"
			 "<memory snapshot='external' file='%s'/></domainsnapshot>",
			 (long long)ts.tv_sec, ts.tv_nsec, path);
		virDomainSnapshotPtr s = virDomainSnapshotCreateXML(
			d, xml, VIR_DOMAIN_SNAPSHOT_CREATE_LIVE | VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA);
		if (!s) {
			ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "live snapshot of domain '%s': %s", o->domain, lv_msg());
			goto out;
		}
		virDomainSnapshotFree(s);
	} else if (virDomainSave(d, o->path) < 0) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "save domain '%s': %s", o->domain, lv_msg());
		goto out;
	}
	rc = 0;
out:
	if (d)
		virDomainFree(d);
	virConnectClose(c);
	return rc;
}

/* The value of attribute name in the first tag called tag ("<domain",
 * "<type") of xml, into out; "" when absent. */
static void xml_attr(const char *xml, const char *tag, const char *name, char *out, size_t n)
{
	out[0] = 0;
	const char *t = xml;
	size_t tl = strlen(tag);
	while ((t = strstr(t, tag)) && t[tl] != ' ' && t[tl] != '>')
		t += tl;
	if (!t)
		return;
	const char *end = strchr(t, '>');
	size_t nl = strlen(name);
	for (const char *a = t + tl; end && a < end; a++) {
		if (a[-1] == ' ' && !strncmp(a, name, nl) && a[nl] == '=' && (a[nl + 1] == '\'' || a[nl + 1] == '"')) {
			const char *v = a + nl + 2, *q = strchr(v, a[nl + 1]);
			if (q && q < end)
				snprintf(out, n, "%.*s", (int)(q - v), v);
			return;
		}
	}
}

int ipk_live_capture_trusted(unsigned long long hv_version, const char *domain_xml, char *why, size_t n)
{
	char type[32], machine[64];
	xml_attr(domain_xml, "<domain", "type", type, sizeof(type));
	xml_attr(domain_xml, "<type", "machine", machine, sizeof(machine));
	if (strcmp(type, "qemu") != 0) {
		snprintf(why, n, "domain type '%s', not QEMU's TCG", type);
		return 1;
	}
	/* versioned machine types end in -MAJOR.MINOR (pc-i440fx-7.2, pc-q35-10.0) */
	unsigned long long mver = 0;
	const char *dash = strrchr(machine, '-');
	unsigned maj, min;
	char tail;
	if (dash && sscanf(dash + 1, "%u.%u%c", &maj, &min, &tail) == 2)
		mver = maj * 1000000ULL + min * 1000ULL;
	unsigned long long v = hv_version > mver ? hv_version : mver;
	if (v >= 9000000ULL) {
		snprintf(why, n, "QEMU %llu.%llu under TCG tracks dirty pages correctly (9.0 or later)", v / 1000000,
			 v / 1000 % 1000);
		return 1;
	}
	if (v)
		snprintf(why, n,
			 "QEMU %llu.%llu.%llu under TCG loses guest writes during a live capture (fixed in QEMU 9.0, "
			 "commit 03bfc2188f)",
			 v / 1000000, v / 1000 % 1000, v % 1000);
	else
		snprintf(why, n, "QEMU of unknown version under TCG may lose guest writes during a live capture "
				 "(fixed in QEMU 9.0, commit 03bfc2188f)");
	return 0;
}

int ipk_live_capture_domain(virConnectPtr c, virDomainPtr d, char *why, size_t n)
{
	unsigned long hv = 0;
	if (virConnectGetVersion(c, &hv) < 0)
		hv = 0;
	char *xml = virDomainGetXMLDesc(d, 0);
	if (!xml) {
		snprintf(why, n, "cannot read the domain's XML: %s", lv_msg());
		return 0;
	}
	int ok = ipk_live_capture_trusted(hv, xml, why, n);
	free(xml);
	return ok;
}

int ipk_live_capture_check(const char *uri, const char *domain, char *why, size_t n, struct ipk_err *err)
{
	virSetErrorFunc(NULL, quiet);
	virConnectPtr c = virConnectOpen(uri);
	if (!c)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "connect to libvirt '%s': %s", uri ? uri : "default",
				   lv_msg());
	virConnSetErrorFunc(c, NULL, quiet);
	int rc;
	virDomainPtr d = virDomainLookupByName(c, domain);
	if (!d) {
		rc = ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "find domain '%s': %s", domain, lv_msg());
	} else {
		rc = ipk_live_capture_domain(c, d, why, n);
		virDomainFree(d);
	}
	virConnectClose(c);
	return rc;
}

/* ---- processes ---------------------------------------------------------- */

#define MAX_THREADS 4096

static void detach_all(const int *tids, int n)
{
	for (int i = 0; i < n; i++)
		ptrace(PTRACE_DETACH, tids[i], 0, 0);
}

/* Seize and stop every thread of pid (threads started meanwhile are found
 * by rescanning until no new one appears). Returns the count or -1. */
static int stop_all(int pid, int *tids, struct ipk_err *err)
{
	int n = 0, added;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	do {
		added = 0;
		DIR *d = opendir(path);
		if (!d) {
			detach_all(tids, n);
			return ipk_err_set(err, errno == ENOENT ? IPK_EXIT_NOINPUT : IPK_EXIT_UNAVAILABLE,
					   "read threads of process %d: %s", pid, strerror(errno));
		}
		for (struct dirent *de; (de = readdir(d));) {
			int tid = atoi(de->d_name);
			if (tid <= 0)
				continue;
			int seen = 0;
			for (int i = 0; i < n && !seen; i++)
				seen = tids[i] == tid;
			if (seen)
				continue;
			if (n == MAX_THREADS) {
				closedir(d);
				detach_all(tids, n);
				return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "stop process %d: more than %d threads", pid,
						   MAX_THREADS);
			}
			if (ptrace(PTRACE_SEIZE, tid, 0, 0) < 0) {
				if (errno == ESRCH)
					continue; /* the thread ended */
				int e = errno;
				closedir(d);
				detach_all(tids, n);
				return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "attach to process %d (thread %d): %s", pid, tid,
						   strerror(e));
			}
			tids[n++] = tid;
			added = 1;
			ptrace(PTRACE_INTERRUPT, tid, 0, 0);
			int status;
			while (waitpid(tid, &status, __WALL) < 0 && errno == EINTR)
				;
		}
		closedir(d);
	} while (added);
	return n;
}

/* Does this kernel track soft-dirty pages? A page we have just written in a
 * fresh mapping must show bit 55 in our own pagemap; kernels built without
 * CONFIG_MEM_SOFT_DIRTY accept clear_refs "4" but never set the bit. */
static int soft_dirty_works(void)
{
	long ps = sysconf(_SC_PAGESIZE);
	volatile char *p = mmap(NULL, (size_t)ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 0;
	p[0] = 1;
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	int ok = fd >= 0 && pread(fd, &e, sizeof(e), (off_t)((uintptr_t)p / (uintptr_t)ps * sizeof(e))) == sizeof(e);
	if (fd >= 0)
		close(fd);
	munmap((void *)p, (size_t)ps);
	return ok && (e >> 55 & 1);
}

static int put_le(FILE *out, uint64_t v, int nbytes)
{
	uint8_t b[8];
	for (int i = 0; i < nbytes; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	return fwrite(b, 1, (size_t)nbytes, out) == (size_t)nbytes ? 0 : -1;
}

int ipk_snapshot_process(int pid, const struct ipk_memimg *parent, FILE *out, struct ipk_snap_proc_stats *st,
			 struct ipk_err *err)
{
	struct ipk_snap_proc_stats s0;
	memset(&s0, 0, sizeof(s0));
	if (pid <= 0)
		return ipk_err_set(err, IPK_EXIT_USAGE, "capture process %d: not a process id", pid);
	int *tids = malloc(MAX_THREADS * sizeof(*tids));
	enum { CHUNK = 1 << 20 };
	uint8_t *buf = malloc(CHUNK);
	char *maps = NULL;
	size_t mapslen = 0;
	int memfd = -1, pmfd = -1, n = 0, rc = -1;
	uint64_t *pm = malloc((CHUNK / IPK_PAGE_SIZE) * sizeof(*pm));
	uint8_t scratch[IPK_PAGE_SIZE];
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (parent) {
		size_t plen;
		const uint8_t *pb = ipk_memimg_bytes(parent, &plen);
		if (ipk_memimg_kind(parent) != IPK_MI_PROCESS || plen < 16 ||
		    (uint32_t)(pb[8] | pb[9] << 8 | pb[10] << 16 | (uint32_t)pb[11] << 24) != (uint32_t)pid)
			return free(tids), free(buf), free(pm),
			       ipk_err_set(err, IPK_EXIT_DATAERR, "capture process %d: the parent '%s' is not a capture of it",
					   pid, ipk_memimg_name(parent));
	}
	if (!tids || !buf || !pm) {
		ipk_err_set(err, IPK_EXIT_OSERR, "capture process %d: out of memory", pid);
		goto out;
	}
	if ((n = stop_all(pid, tids, err)) < 0) {
		n = 0;
		goto out;
	}
	s0.threads = n;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *mf = fopen(path, "r");
	FILE *ms = open_memstream(&maps, &mapslen);
	if (!mf || !ms) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "read '%s': %s", path, strerror(errno));
		if (mf)
			fclose(mf);
		if (ms)
			fclose(ms);
		goto out;
	}
	size_t r;
	while ((r = fread(buf, 1, CHUNK, mf)) > 0)
		fwrite(buf, 1, r, ms);
	fclose(mf);
	fclose(ms);
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	if ((memfd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "open '%s': %s", path, strerror(errno));
		goto out;
	}
	int sd = soft_dirty_works();
	if (parent && sd) {
		snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
		if ((pmfd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "open '%s': %s", path, strerror(errno));
			goto out;
		}
	}
	if (fwrite(IPK_PROC_MAGIC, 1, 8, out) != 8 || put_le(out, (uint64_t)pid, 4) < 0 ||
	    put_le(out, mapslen, 4) < 0 || fwrite(maps, 1, mapslen, out) != mapslen)
		goto werr;
	for (char *line = maps; line && *line;) {
		char *nl = strchr(line, '\n');
		unsigned long lo, hi;
		char perms[8] = "";
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && perms[0] == 'r') {
			for (unsigned long a = lo; a < hi;) {
				size_t want = hi - a < CHUNK ? hi - a : CHUNK;
				size_t np = want / IPK_PAGE_SIZE;
				/* Pagemap entries: bit 55 is soft-dirty (written since the
				 * last clear_refs). Without them every page is read. */
				int have_pm = pmfd >= 0 &&
					      pread(pmfd, pm, np * sizeof(*pm), (off_t)(a / IPK_PAGE_SIZE * sizeof(*pm))) ==
						      (ssize_t)(np * sizeof(*pm));
				size_t k = 0;
				while (k < np) {
					uint64_t pa = a + k * IPK_PAGE_SIZE;
					const struct ipk_mi_page *pp = NULL;
					if (have_pm && !(pm[k] >> 55 & 1))
						pp = ipk_memimg_find(parent, pa, NULL);
					if (pp && pp->len == IPK_PAGE_SIZE) {
						if (put_le(out, pa, 8) < 0 ||
						    fwrite(ipk_memimg_page_data(parent, pp, scratch), 1, IPK_PAGE_SIZE, out) !=
							    IPK_PAGE_SIZE)
							goto werr;
						s0.pages_parent++;
						s0.pages++;
						k++;
						continue;
					}
					/* A run of pages to read. */
					size_t e = k + 1;
					while (e < np && !(have_pm && !(pm[e] >> 55 & 1)))
						e++;
					ssize_t got = pread(memfd, buf, (e - k) * IPK_PAGE_SIZE, (off_t)pa);
					if (got <= 0) { /* unreadable: skip one page */
						s0.unreadable++;
						k++;
						continue;
					}
					size_t pages = (size_t)got / IPK_PAGE_SIZE;
					for (size_t j = 0; j < pages; j++)
						if (put_le(out, pa + j * IPK_PAGE_SIZE, 8) < 0 ||
						    fwrite(buf + j * IPK_PAGE_SIZE, 1, IPK_PAGE_SIZE, out) != IPK_PAGE_SIZE)
							goto werr;
					s0.pages += pages;
					s0.pages_read += pages;
					k += pages ? pages : 1;
				}
				a += np * IPK_PAGE_SIZE;
			}
		}
		line = nl ? nl + 1 : NULL;
	}
	if (put_le(out, IPK_PROC_END, 8) < 0 || fflush(out) != 0)
		goto werr;
	/* Start tracking writes for the next, incremental capture. */
	snprintf(path, sizeof(path), "/proc/%d/clear_refs", pid);
	int cr = open(path, O_WRONLY | O_CLOEXEC);
	s0.tracking = cr >= 0 && write(cr, "4", 1) == 1 && sd;
	if (cr >= 0)
		close(cr);
	rc = 0;
	goto out;
werr:
	ipk_err_set(err, IPK_EXIT_IOERR, "write process dump of %d: %s", pid, strerror(errno));
out:
	detach_all(tids, n);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s0.stopped_s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (st)
		*st = s0;
	if (memfd >= 0)
		close(memfd);
	if (pmfd >= 0)
		close(pmfd);
	free(pm);
	free(maps);
	free(buf);
	free(tids);
	return rc;
}
