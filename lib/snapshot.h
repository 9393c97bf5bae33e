/* snapshot.h - capture memory: a libvirt domain into a save image, a
 * process into an ipkit process dump (memimg.h).
 *
 * ipk_snapshot_libvirt asks libvirt (any connection URI) for the domain's
 * memory in libvirt's save-image format at path: with live set, an external
 * memory snapshot without metadata (the guest keeps running; libvirt needs
 * the domain to have no disks or disks it can snapshot with their default
 * settings); otherwise virDomainSave (the guest stops and is left shut off,
 * to be restored from the image). path is interpreted by the libvirt host:
 * reading the file afterwards needs the same machine or shared storage.
 *
 * libvirt's errors are returned in err, never printed. Nothing to free.
 */
#ifndef IPK_SNAPSHOT_H
#define IPK_SNAPSHOT_H

#include <stdint.h>
#include <stdio.h>

#include <libvirt/libvirt.h>

#include "ipk.h"

struct ipk_snap_libvirt {
	const char *uri;    /* NULL: libvirt's default */
	const char *domain; /* name */
	const char *path;   /* absolute path of the save image to write */
	int live;
};

/* Returns 0, or -1 with err set: IPK_EXIT_UNAVAILABLE (cannot connect, no
 * such domain, libvirt refused the snapshot or save; libvirt's message
 * appended), IPK_EXIT_USAGE (path not absolute), IPK_EXIT_OSERR. */
int ipk_snapshot_libvirt(const struct ipk_snap_libvirt *o, struct ipk_err *err);

/* Can a live capture of this domain be trusted to hold every page the guest
 * wrote while it ran? A live image (and libvirt's live migration) relies on
 * QEMU tracking those writes. QEMU before 9.0 under TCG (libvirt domain type
 * "qemu": no KVM) loses some: its dirty-bitmap sync clears 64 pages at a
 * time without re-arming TCG's write tracking for them, so a page written
 * again through a cached TLB entry after it was sent is not sent again
 * (fixed by QEMU commit 03bfc2188f, "physmem: Fix migration dirty bitmap
 * coherency with TCG memory access", in 9.0). A guest restored from such an
 * image can crash. KVM tracks dirty pages in the kernel: not affected.
 *
 * ipk_live_capture_trusted decides from what libvirt reports: hv_version is
 * virConnectGetVersion's (major * 1000000 + minor * 1000 + micro, 0 when
 * unknown) and domain_xml the domain's XML (its type, and the version of its
 * machine type, a lower bound on the QEMU actually running it: pc-q35-10.0
 * exists only from QEMU 10.0 on). Returns 1 when a live image can be
 * trusted, 0 when not, with the reason (one line) in why (size n). */
int ipk_live_capture_trusted(unsigned long long hv_version, const char *domain_xml, char *why, size_t n);

/* The same for domain d of connection c, asking libvirt; when libvirt
 * cannot say, 0 (not trusted) with libvirt's message in why. */
int ipk_live_capture_domain(virConnectPtr c, virDomainPtr d, char *why, size_t n);

/* The same for a domain on uri (NULL: libvirt's default). Returns 1 or 0 as
 * above, or -1 with err set (IPK_EXIT_UNAVAILABLE: cannot connect, no such
 * domain). */
int ipk_live_capture_check(const char *uri, const char *domain, char *why, size_t n, struct ipk_err *err);

struct ipk_snap_proc_stats {
	uint64_t pages;      /* pages written */
	uint64_t pages_read; /* of which read from the process */
	uint64_t pages_parent; /* of which taken from the parent (not soft-dirty) */
	int tracking;        /* the kernel tracks soft-dirty pages and they were cleared after the capture */
	uint64_t unreadable; /* pages of readable mappings that could not be read */
	int threads;         /* threads stopped */
	double stopped_s;    /* how long the process was stopped */
};

/* Write the memory of process pid to out as an ipkit process dump. Every
 * thread of the process is stopped (ptrace seize + interrupt) while its
 * readable mappings are read through /proc/PID/mem, then resumed (detached),
 * also on failure. Pages that cannot be read ([vvar], device mappings) are
 * left out and counted. Before resuming, the process's soft-dirty bits are
 * cleared (/proc/PID/clear_refs), so that a later capture with this one as
 * parent reads only the pages written since: with parent (the previous
 * capture of the same process, as a memory image), a page whose soft-dirty
 * bit is clear and that the parent has is taken from the parent instead of
 * being read. On a kernel that does not track soft-dirty pages (probed:
 * st->tracking is 0) every page is read, so the result is always complete.
 * st may be NULL. Returns 0, or -1 with err set:
 * IPK_EXIT_NOINPUT (no such process), IPK_EXIT_UNAVAILABLE (cannot attach:
 * permissions, already traced; no pagemap for an incremental capture),
 * IPK_EXIT_DATAERR (parent is not a dump of this process), IPK_EXIT_IOERR
 * (writing out). */
struct ipk_memimg;
int ipk_snapshot_process(int pid, const struct ipk_memimg *parent, FILE *out, struct ipk_snap_proc_stats *st,
			 struct ipk_err *err);

#endif
