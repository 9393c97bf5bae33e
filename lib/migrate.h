/* migrate.h - move a libvirt guest (a session) from host A to host B,
 * verify it there, and never lose it (ip-migrate(1) documents the states).
 *
 * The sending side (ipk_migrate, run next to A's libvirt) drives a state
 * machine; the receiving side (ipk_migrate_serve, run on B through ssh or
 * as a TCP listener) executes its requests over a struct ipk_transport:
 *
 *   PRECHECK   source running on A, target answers, domain not active on B
 *   CAPTURE    final image of the guest on A (virDomainSaveFlags, or a
 *              live external memory snapshot that halts the guest at its
 *              end, see ipk_capture_mode): the guest stops; its whole state is A's
 *              image file (the "suspend")
 *   TRANSFER   with a base pre-copied to B: a delta against it, encoded
 *              straight into the stream (streamed restore, the default when
 *              B offers it), or with no_stream as a resumable file; without
 *              a base the full image (LZ4), a resumable file
 *   APPLY      B checks the checksum and keeps the image (or rebuilds it
 *              from its base and the delta file, all or nothing, not
 *              synced: A's image stays the session's copy until RELEASE);
 *              streamed: nothing (B applies during TRANSFER/RESTORE)
 *   RESTORE    B restores it through its libvirt (virDomainRestore);
 *              streamed: from a FIFO that B fills by applying the delta as
 *              its frames arrive, all three at once; the guest's downtime
 *              ends here
 *   VERIFY     the guest answers on B with the same frame checksum and a
 *              heartbeat counter that continues A's; B's GPU check (the
 *              "gpucheck" request: B renders it, A judges the result); user
 *              checks
 *   RELEASE    B defines the domain; on A it stays defined but off and the
 *              image is removed unless keep
 * Any failure before VERIFY succeeds rolls back: B destroys what it
 * restored and removes its files (also on its own when the stream breaks),
 * and A restores the guest from its own final image (or resumes it when the
 * capture had not finished). The session's full state therefore exists
 * intact on A (running, or as A's image) until B runs a verified copy.
 *
 * Pre-copy (opts->precopy): a live image of the running guest (libvirt
 * external memory snapshot, the guest keeps running) is written to A's
 * image directory as DOMAIN.base and sent to B, which keeps it as the base
 * for the delta of a later cut-over. Nothing else changes.
 *
 * The engine "libvirt" replaces CAPTURE..RESTORE by libvirt's native live
 * migration (virDomainMigrateToURI3) from A's to B's URI; VERIFY is the
 * same. A failed libvirt migration leaves (or resumes) the guest on A; a
 * verification failing after it is rolled back by a libvirt migration B -> A
 * (B's libvirtd connects to source_uri, data to tcp://its host; the domain
 * is undefined on B unless it was defined there before); when that fails
 * too, the guest stays on B and rollback_failed is set.
 *
 * Ownership: options are borrowed for the call; results are plain structs
 * filled by the call. Nothing returned needs freeing.
 */
#ifndef IPK_MIGRATE_H
#define IPK_MIGRATE_H

#include <stdint.h>

#include "gpucheck.h"
#include "ipk.h"
#include "transport.h"

enum ipk_mig_phase {
	IPK_MIG_PRECHECK,
	IPK_MIG_CAPTURE,
	IPK_MIG_TRANSFER,
	IPK_MIG_APPLY,
	IPK_MIG_RESTORE,
	IPK_MIG_VERIFY,
	IPK_MIG_RELEASE,
	IPK_MIG_DONE,
	IPK_MIG_ROLLBACK,
	IPK_MIG_NPHASES
};

/* "precheck", "capture", ... */
const char *ipk_mig_phase_name(int phase);

enum ipk_mig_engine { IPK_ENGINE_SAVE = 0, IPK_ENGINE_LIBVIRT = 1 };

/* The final image (engine libvirt: the migration): AUTO is live unless
 * ipk_live_capture_domain (snapshot.h) says the source cannot be trusted
 * with one, then SAVE (engine libvirt: a migration with the guest paused
 * throughout); LIVE and SAVE force it. A pre-copy is always live: the delta
 * compares page contents, so a stale page in the base only costs bytes. */
enum ipk_capture_mode { IPK_CAPTURE_AUTO = 0, IPK_CAPTURE_LIVE = 1, IPK_CAPTURE_SAVE = 2 };

/* Called when a phase starts (and with IPK_MIG_ROLLBACK when rolling
 * back); a non-zero return fails the phase (err may be filled). */
typedef int (*ipk_mig_hook)(void *ctx, int phase, struct ipk_err *err);

struct ipk_migrate_opts {
	const char *domain;       /* libvirt domain name (the session's guest) */
	const char *source_uri;   /* A's libvirt URI (NULL: libvirt's default) */
	const char *target_uri;   /* B's libvirt URI as B's side opens it */
	const char *image_dir;    /* A's directory for the final image */
	const char *source_sock;  /* guest control socket on A (for the counter before cut-over) */
	const char *target_sock;  /* guest control socket on B */
	const char *expect_checksum; /* frame checksum the guest must answer */
	double verify_timeout;    /* seconds for each guest answer (<= 0: 30) */
	const char *check_cmd;    /* user check, run on this side after restore */
	const char *check_url;    /* HTTP URL that must answer 2xx */
	int verify_gpu;           /* enum ipk_gpucheck_mode: B renders the GPU check after the restore */
	int keep;                 /* keep A's final image after success */
	int precopy;              /* only pre-copy: live image to B as the base of a later delta */
	int no_delta;             /* send the full image even when B holds the base */
	int capture;              /* enum ipk_capture_mode: how the final image is taken */
	int no_stream;            /* delta: B writes the rebuilt image to a file, then restores it
				   * (default: B applies the delta into a FIFO libvirt restores from) */
	int engine;               /* enum ipk_mig_engine */
	/* engine libvirt: */
	const char *native_uri;   /* migration URI (tcp://HOST) or NULL */
	int compressed, parallel; /* compression; parallel connections (0: off) */
	double max_downtime;      /* seconds, 0: libvirt's default */
	ipk_mig_hook hook;
	void *hook_ctx;
};

struct ipk_migrate_result {
	int phase;                /* the phase reached (failed in, or IPK_MIG_DONE) */
	int capture_live;         /* 1: the final image was a live capture (engine libvirt: a live migration) */
	char capture_why[200];    /* when a live capture cannot be trusted on the source: why
				   * (ipk_live_capture_trusted, snapshot.h); "" otherwise */
	int rolled_back;          /* 1: the session runs on A again */
	int rollback_failed;      /* 1: it could not be restarted on A (see where) */
	int full_image;           /* 1: the full image was sent (no pre-copied base) */
	double t_delta;           /* seconds encoding the delta (part of capture..transfer) */
	double capture_pause;     /* live capture: the pause libvirt reported (0: unknown) */
	double capture_stopped;   /* live capture: seconds the guest was already stopped when the
				   * capture call returned (its last pass and QEMU's exit) */
	int streamed;             /* 1: B applied the delta while libvirt restored from it */
	double target_apply;      /* seconds B spent applying the delta (0: full image) */
	double target_restore;    /* seconds B's virDomainRestore took */
	double target_verify_answer;  /* seconds until B's guest answered the verification (not > 0: not asked) */
	double target_verify_advance; /* then until its heartbeat counter moved on */
	double after_verified;    /* seconds from the verified guest on B to the end (A's capture call, the release) */
	double verified_ts;       /* when the guest was verified on B (seconds since the epoch); 0: it was not */
	uint64_t delta_bytes;     /* size of the delta sent */
	char base_id[33];         /* the pre-copied base's XXH3-128 (precopy, or delta) */
	double seconds[IPK_MIG_NPHASES];
	double downtime;          /* guest stopped on A .. running on B (or on A again) */
	uint64_t bytes_wire;      /* transport bytes, both directions */
	uint64_t image_bytes;     /* size of the captured image */
	uint64_t bytes_skipped;   /* image bytes the target already held */
	uint64_t counter_before, counter_after; /* guest heartbeat counters */
	char checksum[33];        /* verified frame checksum */
	struct ipk_gpucheck_result gpu; /* B's GPU check (status NOT_RUN: not asked) */
	char image[4096];         /* A's final image (kept after a failed rollback) */
	char where[24];           /* "target", "source", "source-unverified", "source-image" or "unknown" */
};

/* Migrate opts->domain to the receiver at the other end of t (already
 * authenticated; NULL with engine libvirt). Returns 0 when the guest runs
 * verified on B, or -1 with err and res->rolled_back / res->where saying
 * where the session is. err->code: that of the first failure (transport
 * codes, IPK_EXIT_UNAVAILABLE for libvirt, IPK_EXIT_FAIL for a failed
 * verification, IPK_EXIT_CANTCREAT for a full target disk, ...), or
 * IPK_EXIT_SOFTWARE when the rollback itself failed (the message names the
 * image that holds the session). */
int ipk_migrate(struct ipk_transport *t, const struct ipk_migrate_opts *o, struct ipk_migrate_result *res,
		struct ipk_err *err);

struct ipk_serve_opts {
	const char *image_dir;    /* where images land on this side */
	const char *default_uri;  /* libvirt URI when the sender gives none */
	int keep;                 /* keep received images after success */
};

struct ipk_serve_result {
	char domain[256];
	int committed;            /* the session now runs here */
	uint64_t bytes_received;
};

/* Serve one sender on t (already authenticated) until it closes. Anything
 * restored here and not committed is destroyed, and received images are
 * removed, when the sender aborts or the stream breaks. Returns 0 when the
 * sender finished (committed or aborted cleanly), or -1 with err. */
int ipk_migrate_serve(struct ipk_transport *t, const struct ipk_serve_opts *o, struct ipk_serve_result *res,
		      struct ipk_err *err);

/* The host named by a libvirt URI or an ip-migrate URL ("qemu+tcp://H/system",
 * "tcp://H:P", "ssh://U@H:P", "tcp://[V6]:P" gives "V6") into out (n bytes);
 * "" when it names none. */
void ipk_url_host(const char *u, char *out, size_t n);

#endif
