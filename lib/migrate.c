/* migrate.c - the migration state machine, both sides (see migrate.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "delta.h"
#include "image.h"
#include "migrate.h"
#include "verify.h"

static const char *const phase_names[IPK_MIG_NPHASES] = {
	"precheck", "capture", "transfer", "apply", "restore", "verify", "release", "done", "rollback",
};

const char *ipk_mig_phase_name(int phase)
{
	return phase >= 0 && phase < IPK_MIG_NPHASES ? phase_names[phase] : "unknown";
}

static void lv_quiet(void *arg, virErrorPtr e)
{
	(void)arg, (void)e;
}

static const char *lv_errtext(void)
{
	virErrorPtr e = virGetLastError();
	return e && e->message ? e->message : "unknown libvirt error";
}

static virConnectPtr lv_open(const char *uri, struct ipk_err *err)
{
	virSetErrorFunc(NULL, lv_quiet);
	virConnectPtr c = virConnectOpen(uri);
	if (!c)
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "connect to libvirt '%s': %s", uri ? uri : "(default)", lv_errtext());
	return c;
}

static int dom_state(virDomainPtr d)
{
	int st = -1, reason;
	if (virDomainGetState(d, &st, &reason, 0) < 0)
		return -1;
	return st;
}

static void nap(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };
	nanosleep(&ts, NULL);
}

/* A JSON control message {"op": op} plus fields added by the caller. */
static cJSON *msg_new(const char *op)
{
	cJSON *j = cJSON_CreateObject();
	if (j && !cJSON_AddStringToObject(j, "op", op)) {
		cJSON_Delete(j);
		return NULL;
	}
	return j;
}

/* Send j (consumed) and wait for the answer {"op": want}; returns the
 * answer (caller frees) or NULL with err. */
static cJSON *request(struct ipk_transport *t, cJSON *j, const char *want, struct ipk_err *err)
{
	if (!j) {
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		return NULL;
	}
	int rc = ipk_transport_send_json(t, IPK_FR_JSON, j, err);
	cJSON_Delete(j);
	if (rc < 0)
		return NULL;
	cJSON *a = ipk_transport_recv_json(t, IPK_FR_JSON, err);
	if (!a)
		return NULL;
	const char *op = cJSON_GetStringValue(cJSON_GetObjectItem(a, "op"));
	if (!op || strcmp(op, want) != 0) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "receiver '%s': answered '%s' where '%s' was expected",
			    ipk_transport_peer(t), op ? op : "?", want);
		cJSON_Delete(a);
		return NULL;
	}
	return a;
}

/* request() for a step that may take up to seconds on the other side. */
static cJSON *request_slow(struct ipk_transport *t, cJSON *j, const char *want, double seconds, struct ipk_err *err)
{
	double old = ipk_transport_timeout(t);
	if (seconds > old)
		ipk_transport_set_timeout(t, seconds);
	cJSON *a = request(t, j, want, err);
	ipk_transport_set_timeout(t, old);
	return a;
}

/* How long we wait for the receiver's answer to a slow step (restores,
 * applies and verifications take time), and it for our next request once
 * the guest runs there (we run the user's checks then). */
static double slow_step(const struct ipk_migrate_opts *o)
{
	double vt = o->verify_timeout > 0 ? o->verify_timeout : 30;
	return 2 * vt + 120;
}

/* ---- sending side ----------------------------------------------------------- */

struct run {
	const struct ipk_migrate_opts *o;
	struct ipk_migrate_result *res;
	struct ipk_transport *t;
	virConnectPtr a;
	virDomainPtr dom;
	int opened;       /* the receiver knows the session */
	int captured;     /* A's final image exists; the guest is off on A */
	int restore_sent; /* B may run the guest */
	int native_done;  /* engine libvirt: the guest moved to B */
	double t_stop;    /* guest stopped on A */
	double phase_t0;
	char name[300];   /* image name on B */
	char base[4096];  /* A's pre-copied base, when B holds it too */
	char base_name[300];
};

static int enter(struct run *r, int phase, struct ipk_err *err)
{
	double now = ipk_mono();
	if (r->res->phase >= 0 && r->res->phase < IPK_MIG_NPHASES)
		r->res->seconds[r->res->phase] += now - r->phase_t0;
	r->phase_t0 = now;
	r->res->phase = phase;
	if (r->o->hook && r->o->hook(r->o->hook_ctx, phase, err) != 0) {
		if (!err->msg[0])
			ipk_err_set(err, IPK_EXIT_SOFTWARE, "phase %s: hook failed", ipk_mig_phase_name(phase));
		return -1;
	}
	return 0;
}

/* The state-transfer step: bring the captured image to B. With a base
 * that B holds, a delta of the final image against it (ip-delta's
 * encoding); otherwise the full image, LZ4-compressed per chunk. Both are
 * resumable transfers. */
static int send_state(struct run *r, struct ipk_err *err)
{
	struct ipk_xfer_stats st;
	struct ipk_migrate_result *res = r->res;
	if (r->base[0]) {
		char delta[4200];
		snprintf(delta, sizeof(delta), "%s.delta", res->image);
		double t0 = ipk_mono();
		struct ipk_memimg *b = ipk_image_open(r->base, err), *n = b ? ipk_image_open(res->image, err) : NULL;
		FILE *f = n ? fopen(delta, "wb") : NULL;
		if (n && !f)
			ipk_err_set(err, IPK_EXIT_CANTCREAT, "create '%s': %s", delta, strerror(errno));
		struct ipk_delta_opts dop = { .threads = 2 };
		struct ipk_delta_stats ds;
		int rc = f ? ipk_delta_encode(b, n, f, &dop, &ds, err) : -1;
		if (f && fclose(f) != 0 && rc == 0)
			rc = ipk_err_set(err, IPK_EXIT_IOERR, "write '%s': %s", delta, strerror(errno));
		ipk_memimg_free(b);
		ipk_memimg_free(n);
		res->t_delta = ipk_mono() - t0;
		if (rc < 0) {
			unlink(delta);
			return -1;
		}
		struct stat sb;
		res->image_bytes = stat(res->image, &sb) == 0 ? (uint64_t)sb.st_size : 0;
		snprintf(r->name, sizeof(r->name), "%s.delta", r->o->domain);
		rc = ipk_xfer_send(r->t, delta, r->name, 0, &st, err);
		res->delta_bytes = st.size;
		res->bytes_skipped = st.bytes_skipped;
		unlink(delta);
		return rc;
	}
	snprintf(r->name, sizeof(r->name), "%s.save", r->o->domain);
	res->full_image = 1;
	int rc = ipk_xfer_send(r->t, res->image, r->name, 0, &st, err);
	res->image_bytes = st.size;
	res->bytes_skipped = st.bytes_skipped;
	return rc;
}

static int apply_state(struct run *r, struct ipk_err *err)
{
	cJSON *j = msg_new("apply");
	if (j) {
		cJSON_AddStringToObject(j, "name", r->name);
		cJSON_AddStringToObject(j, "mode", r->base[0] ? "delta" : "full");
		if (r->base[0]) {
			cJSON_AddStringToObject(j, "base", r->base_name);
			snprintf(r->name, sizeof(r->name), "%s.save", r->o->domain);
			cJSON_AddStringToObject(j, "out", r->name);
		}
	}
	cJSON *a = request_slow(r->t, j, "applied", slow_step(r->o), err);
	cJSON_Delete(a);
	return a ? 0 : -1;
}

/* Is the guest active on B, asked through B's URI from here? 1 yes, 0 no,
 * -1 cannot tell. Only for URIs naming a remote host. */
static int target_active(const struct ipk_migrate_opts *o, int destroy)
{
	const char *u = o->target_uri;
	const char *h = u ? strstr(u, "://") : NULL;
	if (!h || h[3] == '/' || h[3] == 0)
		return -1;
	struct ipk_err e = { 0 };
	virConnectPtr c = lv_open(u, &e);
	if (!c)
		return -1;
	int rc = 0;
	virDomainPtr d = virDomainLookupByName(c, o->domain);
	if (d) {
		rc = virDomainIsActive(d) == 1;
		if (rc && destroy && virDomainDestroy(d) == 0)
			rc = 0;
		virDomainFree(d);
	}
	virConnectClose(c);
	return rc;
}

static void rollback(struct run *r, struct ipk_err *err)
{
	struct ipk_migrate_result *res = r->res;
	struct ipk_err ign = { 0 };
	int failed_phase = res->phase;
	enter(r, IPK_MIG_ROLLBACK, &ign);
	res->phase = failed_phase;
	if (r->o->engine == IPK_ENGINE_LIBVIRT) {
		if (r->native_done) {
			/* libvirt moved the state: the source holds none any more, so
			 * the copy on the target, unverified, is the only one */
			res->rollback_failed = 1;
			snprintf(res->where, sizeof(res->where), "target");
			char m[sizeof(err->msg)];
			snprintf(m, sizeof(m),
				 "%.600s; not rolled back: after libvirt's migration only the target holds the guest's state, "
				 "it stays there unverified",
				 err->msg);
			snprintf(err->msg, sizeof(err->msg), "%s", m);
			err->code = IPK_EXIT_SOFTWARE;
			return;
		}
		/* libvirt's failed migration leaves the guest on the source */
		int st = r->dom ? dom_state(r->dom) : -1;
		if (st == VIR_DOMAIN_PAUSED && virDomainResume(r->dom) == 0)
			st = VIR_DOMAIN_RUNNING;
		if (st == VIR_DOMAIN_RUNNING) {
			res->rolled_back = 1;
			snprintf(res->where, sizeof(res->where), "source");
		} else {
			res->rollback_failed = 1;
			snprintf(res->where, sizeof(res->where), "unknown");
		}
		return;
	}
	/* 1. B: destroy what it restored, remove its files. */
	int b_clean = 1;
	if (r->opened && r->t && !ipk_transport_broken(r->t)) {
		struct ipk_err e = { 0 };
		cJSON *a = request(r->t, msg_new("abort"), "aborted", &e);
		if (a)
			cJSON_Delete(a);
		else if (r->restore_sent)
			b_clean = target_active(r->o, 1) == 0;
	} else if (r->restore_sent) {
		b_clean = target_active(r->o, 1) == 0;
	}
	/* 2. A: run the guest again. */
	if (!r->captured) {
		int st = r->dom ? dom_state(r->dom) : -1;
		if (st == VIR_DOMAIN_PAUSED)
			virDomainResume(r->dom);
		res->rolled_back = 1;
		snprintf(res->where, sizeof(res->where), "source");
		return;
	}
	if (!b_clean) {
		/* B may still run it: two copies are worse than a stopped one. */
		res->rollback_failed = 1;
		snprintf(res->where, sizeof(res->where), "unknown");
		char m[sizeof(err->msg)];
		snprintf(m, sizeof(m), "%.500s; rollback stopped: the target may still run the guest, its image is '%.300s'",
			 err->msg, res->image);
		snprintf(err->msg, sizeof(err->msg), "%s", m);
		err->code = IPK_EXIT_SOFTWARE;
		return;
	}
	double t0 = ipk_mono();
	if (virDomainRestore(r->a, res->image) == 0) {
		res->rolled_back = 1;
		res->downtime = ipk_mono() - r->t_stop;
		snprintf(res->where, sizeof(res->where), "source");
		if (!r->o->keep)
			unlink(res->image);
	} else {
		res->rollback_failed = 1;
		snprintf(res->where, sizeof(res->where), "source-image");
		char m[sizeof(err->msg)];
		snprintf(m, sizeof(m), "%.400s; rollback failed: restore '%.300s' on the source: %.200s (the session is in that image)",
			 err->msg, res->image, lv_errtext());
		snprintf(err->msg, sizeof(err->msg), "%s", m);
		err->code = IPK_EXIT_SOFTWARE;
	}
	res->seconds[IPK_MIG_ROLLBACK] = ipk_mono() - t0;
}

/* The final image. Save: the guest pauses, its memory is written, it stops.
 * Live: an external memory snapshot written while the guest runs, which
 * pauses it only at the end and then halts it (SNAPSHOT_CREATE_HALT): the
 * image holds the state at that pause. r->t_stop is when the guest stopped:
 * for live, the end of the call minus the pause libvirt reports for the job;
 * when it reports none, the start of the call (counting the whole write). */
static int capture_final(struct run *r, struct ipk_err *err)
{
	const struct ipk_migrate_opts *o = r->o;
	struct ipk_migrate_result *res = r->res;
	if (!o->capture_live) {
		r->t_stop = ipk_mono();
		if (virDomainSaveFlags(r->dom, res->image, NULL, 0) < 0)
			return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "capture '%s' to '%s': %s", o->domain, res->image,
					   lv_errtext());
		return 0;
	}
	char xml[4400];
	snprintf(xml, sizeof(xml),
		 "<domainsnapshot><name>ipkit-final-%ld</name><memory snapshot='external' file='%.4096s'/></domainsnapshot>",
		 (long)ipk_now(), res->image);
	double t0 = ipk_mono();
	virDomainSnapshotPtr sn = virDomainSnapshotCreateXML(
		r->dom, xml,
		VIR_DOMAIN_SNAPSHOT_CREATE_LIVE | VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA | VIR_DOMAIN_SNAPSHOT_CREATE_HALT);
	double t1 = ipk_mono();
	if (!sn)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "capture '%s' live to '%s': %s", o->domain, res->image,
				   lv_errtext());
	virDomainSnapshotFree(sn);
	r->t_stop = t0;
	int type, n = 0;
	virTypedParameterPtr st = NULL;
	if (virDomainGetJobStats(r->dom, &type, &st, &n, VIR_DOMAIN_JOB_STATS_COMPLETED) == 0) {
		unsigned long long v;
		if (virTypedParamsGetULLong(st, n, VIR_DOMAIN_JOB_DOWNTIME, &v) == 1 && v / 1000.0 < t1 - t0) {
			r->t_stop = t1 - (double)v / 1000;
			res->capture_pause = (double)v / 1000;
		}
		virTypedParamsFree(st, n);
	}
	virResetLastError();
	return 0;
}

static int verify_target(struct run *r, const struct ipk_guest_answer *before, struct ipk_err *err)
{
	const struct ipk_migrate_opts *o = r->o;
	struct ipk_migrate_result *res = r->res;
	if (o->target_sock) {
		cJSON *j = msg_new("verify");
		if (j) {
			const char *want = o->expect_checksum ? o->expect_checksum : before->checksum[0] ? before->checksum : NULL;
			if (want)
				cJSON_AddStringToObject(j, "checksum", want);
			if (o->source_sock) {
				/* the counter counts guest seconds: it may not go back,
				 * nor jump by more than the time that passed */
				cJSON_AddNumberToObject(j, "counter_min", (double)before->counter);
				cJSON_AddNumberToObject(j, "counter_max",
							(double)before->counter + ceil(ipk_mono() - r->t_stop) + 3);
			}
			cJSON_AddNumberToObject(j, "timeout", o->verify_timeout > 0 ? o->verify_timeout : 30);
		}
		cJSON *a = request_slow(r->t, j, "verified", slow_step(o), err);
		if (!a)
			return -1;
		snprintf(res->checksum, sizeof(res->checksum), "%s",
			 cJSON_GetStringValue(cJSON_GetObjectItem(a, "checksum")) ?: "");
		res->counter_after = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(a, "counter"));
		cJSON_Delete(a);
	}
	double vt = o->verify_timeout > 0 ? o->verify_timeout : 30;
	if (o->check_cmd) {
		char e1[300], e2[300], e3[300];
		snprintf(e1, sizeof(e1), "IPKIT_DOMAIN=%s", o->domain);
		snprintf(e2, sizeof(e2), "IPKIT_TARGET_URI=%s", o->target_uri ? o->target_uri : "");
		snprintf(e3, sizeof(e3), "IPKIT_SOURCE_URI=%s", o->source_uri ? o->source_uri : "");
		char *env[] = { e1, e2, e3, NULL };
		if (ipk_check_command(o->check_cmd, env, vt, err) < 0)
			return -1;
	}
	if (o->check_url && ipk_check_url(o->check_url, vt, NULL, err) < 0)
		return -1;
	return 0;
}

static int native_move(struct run *r, struct ipk_err *err)
{
	const struct ipk_migrate_opts *o = r->o;
	virTypedParameterPtr params = NULL;
	int np = 0, maxp = 0;
	unsigned long flags = VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PERSIST_DEST;
	if (o->native_uri)
		virTypedParamsAddString(&params, &np, &maxp, VIR_MIGRATE_PARAM_URI, o->native_uri);
	if (o->compressed)
		flags |= VIR_MIGRATE_COMPRESSED;
	if (o->parallel > 0) {
		flags |= VIR_MIGRATE_PARALLEL;
		virTypedParamsAddInt(&params, &np, &maxp, VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS, o->parallel);
	}
	if (o->max_downtime > 0 && virDomainMigrateSetMaxDowntime(r->dom, (unsigned long long)(o->max_downtime * 1000), 0) < 0) {
		virTypedParamsFree(params, np);
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "set maximum downtime of '%s': %s", o->domain, lv_errtext());
	}
	double t0 = ipk_mono();
	int rc = virDomainMigrateToURI3(r->dom, o->target_uri, params, (unsigned)np, flags);
	virTypedParamsFree(params, np);
	if (rc < 0)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "migrate '%s' to '%s' (libvirt): %s", o->domain,
				   o->target_uri, lv_errtext());
	r->native_done = 1;
	r->t_stop = t0;
	/* libvirt's own measure of the pause and of the bytes it sent */
	int type, n = 0;
	virTypedParameterPtr st = NULL;
	if (virDomainGetJobStats(r->dom, &type, &st, &n, VIR_DOMAIN_JOB_STATS_COMPLETED) == 0) {
		unsigned long long v;
		if (virTypedParamsGetULLong(st, n, VIR_DOMAIN_JOB_DOWNTIME, &v) == 1)
			r->res->downtime = (double)v / 1000;
		if (virTypedParamsGetULLong(st, n, VIR_DOMAIN_JOB_DATA_PROCESSED, &v) == 1)
			r->res->bytes_wire = v;
		virTypedParamsFree(st, n);
	}
	virResetLastError();
	return 0;
}

int ipk_migrate(struct ipk_transport *t, const struct ipk_migrate_opts *o, struct ipk_migrate_result *res,
		struct ipk_err *err)
{
	memset(res, 0, sizeof(*res));
	res->phase = -1;
	snprintf(res->where, sizeof(res->where), "source");
	struct run r = { .o = o, .res = res, .t = t, .phase_t0 = ipk_mono() };
	struct ipk_guest_answer before = { 0 };
	int rc = -1;
	uint64_t wire0 = t ? ipk_transport_sent(t) + ipk_transport_received(t) : 0;

	if (enter(&r, IPK_MIG_PRECHECK, err) < 0)
		goto fail;
	if (!(r.a = lv_open(o->source_uri, err)))
		goto fail;
	if (!(r.dom = virDomainLookupByName(r.a, o->domain))) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "find domain '%s' on '%s': %s", o->domain,
			    o->source_uri ? o->source_uri : "(default)", lv_errtext());
		goto fail;
	}
	if (dom_state(r.dom) != VIR_DOMAIN_RUNNING) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "migrate domain '%s': not running on the source", o->domain);
		goto fail;
	}
	if (o->source_sock && ipk_guest_verify(o->source_sock, o->verify_timeout > 0 ? o->verify_timeout : 30, &before,
					       err) < 0) {
		char m[sizeof(err->msg)];
		snprintf(m, sizeof(m), "guest not healthy on the source, not migrating: %.900s", err->msg);
		snprintf(err->msg, sizeof(err->msg), "%s", m);
		goto fail;
	}
	res->counter_before = before.counter;

	if (o->engine == IPK_ENGINE_LIBVIRT) {
		res->downtime = NAN; /* unless libvirt reports it */
		if (enter(&r, IPK_MIG_TRANSFER, err) < 0 || native_move(&r, err) < 0)
			goto fail;
		if (enter(&r, IPK_MIG_VERIFY, err) < 0)
			goto fail;
		if (o->target_sock) {
			struct ipk_guest_answer a1, a2;
			double vt = o->verify_timeout > 0 ? o->verify_timeout : 30;
			if (ipk_guest_verify(o->target_sock, vt, &a1, err) < 0)
				goto fail;
			nap(1.2);
			if (ipk_guest_verify(o->target_sock, vt, &a2, err) < 0)
				goto fail;
			const char *want = o->expect_checksum ? o->expect_checksum : before.checksum[0] ? before.checksum : NULL;
			if (want && strcmp(a1.checksum, want) != 0) {
				ipk_err_set(err, IPK_EXIT_FAIL, "verify '%s' on the target: checksum %s, expected %s", o->domain,
					    a1.checksum, want);
				goto fail;
			}
			if ((o->source_sock && a1.counter < before.counter) || a2.counter <= a1.counter) {
				ipk_err_set(err, IPK_EXIT_FAIL,
					    "verify '%s' on the target: heartbeat does not continue (%llu before, %llu then %llu)",
					    o->domain, (unsigned long long)before.counter, (unsigned long long)a1.counter,
					    (unsigned long long)a2.counter);
				goto fail;
			}
			snprintf(res->checksum, sizeof(res->checksum), "%s", a1.checksum);
			res->counter_after = a1.counter;
		}
		struct run r2 = r;
		struct ipk_migrate_opts o2 = *o;
		o2.target_sock = NULL; /* done above */
		r2.o = &o2;
		if (verify_target(&r2, &before, err) < 0)
			goto fail;
		enter(&r, IPK_MIG_DONE, err);
		snprintf(res->where, sizeof(res->where), "target");
		rc = 0;
		goto out;
	}

	/* the receiver: open the session, check the target and its base */
	char basepath[4096], basehash[33] = "";
	if ((size_t)snprintf(basepath, sizeof(basepath), "%s/%s.base", o->image_dir ? o->image_dir : ".", o->domain) >=
	    sizeof(basepath)) {
		ipk_err_set(err, IPK_EXIT_CANTCREAT, "image path for '%s' too long", o->domain);
		goto fail;
	}
	if (!o->precopy && !o->no_delta && access(basepath, R_OK) == 0) {
		struct ipk_err e = { 0 };
		if (ipk_file_hash(basepath, basehash, NULL, &e) < 0)
			basehash[0] = 0;
	}
	cJSON *j = msg_new("open");
	if (j) {
		cJSON_AddStringToObject(j, "domain", o->domain);
		if (o->target_uri)
			cJSON_AddStringToObject(j, "uri", o->target_uri);
		if (o->target_sock)
			cJSON_AddStringToObject(j, "sock", o->target_sock);
		cJSON_AddNumberToObject(j, "wait", slow_step(o));
		if (basehash[0]) {
			snprintf(r.base_name, sizeof(r.base_name), "%s.base", o->domain);
			cJSON_AddStringToObject(j, "base", r.base_name);
			cJSON_AddStringToObject(j, "base_hash", basehash);
		}
	}
	cJSON *a = request(t, j, "ready", err);
	if (!a)
		goto fail;
	if (basehash[0] && cJSON_IsTrue(cJSON_GetObjectItem(a, "have_base"))) {
		snprintf(r.base, sizeof(r.base), "%s", basepath);
		snprintf(res->base_id, sizeof(res->base_id), "%s", basehash);
	}
	cJSON_Delete(a);
	r.opened = 1;

	if (o->precopy) {
		/* a live image; the guest keeps running on A */
		if (enter(&r, IPK_MIG_CAPTURE, err) < 0)
			goto fail;
		snprintf(res->image, sizeof(res->image), "%s", basepath);
		unlink(basepath);
		char xml[4600];
		snprintf(xml, sizeof(xml),
			 "<domainsnapshot><name>ipkit-precopy-%ld</name><memory snapshot='external' file='%s'/></domainsnapshot>",
			 (long)ipk_now(), basepath);
		virDomainSnapshotPtr sn = virDomainSnapshotCreateXML(
			r.dom, xml, VIR_DOMAIN_SNAPSHOT_CREATE_LIVE | VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA);
		if (!sn) {
			ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "live image of '%s' to '%s': %s", o->domain, basepath,
				    lv_errtext());
			goto fail;
		}
		virDomainSnapshotFree(sn);
		if (enter(&r, IPK_MIG_TRANSFER, err) < 0)
			goto fail;
		struct ipk_xfer_stats st;
		snprintf(r.name, sizeof(r.name), "%s.base", o->domain);
		if (ipk_xfer_send(t, basepath, r.name, 0, &st, err) < 0)
			goto fail;
		res->image_bytes = st.size;
		res->bytes_skipped = st.bytes_skipped;
		snprintf(res->base_id, sizeof(res->base_id), "%s", st.hash);
		j = msg_new("keep");
		if (j)
			cJSON_AddStringToObject(j, "name", r.name);
		if (!(a = request(t, j, "kept", err)))
			goto fail;
		cJSON_Delete(a);
		res->image[0] = 0;
		enter(&r, IPK_MIG_DONE, err);
		snprintf(res->where, sizeof(res->where), "source");
		rc = 0;
		goto out;
	}

	if (enter(&r, IPK_MIG_CAPTURE, err) < 0)
		goto fail;
	if ((size_t)snprintf(res->image, sizeof(res->image), "%s/%s.save", o->image_dir ? o->image_dir : ".", o->domain) >=
	    sizeof(res->image)) {
		ipk_err_set(err, IPK_EXIT_CANTCREAT, "capture '%s': image path too long", o->domain);
		goto fail;
	}
	unlink(res->image);
	if (capture_final(&r, err) < 0) {
		if (dom_state(r.dom) == VIR_DOMAIN_SHUTOFF && access(res->image, R_OK) == 0)
			r.captured = 1;
		goto fail;
	}
	r.captured = 1;
	snprintf(res->where, sizeof(res->where), "source-image");

	if (enter(&r, IPK_MIG_TRANSFER, err) < 0 || send_state(&r, err) < 0)
		goto fail;
	if (enter(&r, IPK_MIG_APPLY, err) < 0 || apply_state(&r, err) < 0)
		goto fail;
	if (enter(&r, IPK_MIG_RESTORE, err) < 0)
		goto fail;
	j = msg_new("restore");
	if (j)
		cJSON_AddStringToObject(j, "name", r.name);
	r.restore_sent = 1;
	if (!(a = request_slow(t, j, "restored", slow_step(o), err)))
		goto fail;
	cJSON_Delete(a);
	res->downtime = ipk_mono() - r.t_stop;
	if (enter(&r, IPK_MIG_VERIFY, err) < 0 || verify_target(&r, &before, err) < 0)
		goto fail;
	if (enter(&r, IPK_MIG_RELEASE, err) < 0)
		goto fail;
	if (!(a = request(t, msg_new("commit"), "committed", err)))
		goto fail;
	cJSON_Delete(a);
	snprintf(res->where, sizeof(res->where), "target");
	if (!o->keep) {
		unlink(res->image);
		if (r.base[0])
			unlink(r.base);
	}
	enter(&r, IPK_MIG_DONE, err);
	rc = 0;
	goto out;
fail:
	if (!err->code)
		err->code = IPK_EXIT_SOFTWARE;
	if (res->phase > IPK_MIG_PRECHECK || r.opened)
		rollback(&r, err);
	else
		res->rolled_back = 0;
out:
	if (t)
		res->bytes_wire = ipk_transport_sent(t) + ipk_transport_received(t) - wire0;
	if (isnan(res->downtime))
		res->downtime = 0;
	if (r.dom)
		virDomainFree(r.dom);
	if (r.a)
		virConnectClose(r.a);
	return rc;
}

/* ---- receiving side --------------------------------------------------------- */

struct srv {
	const struct ipk_serve_opts *o;
	struct ipk_transport *t;
	virConnectPtr c;
	virDomainPtr restored;
	int was_defined, committed;
	char domain[256], sock[4096];
	char base[PATH_MAX]; /* the pre-copied base here, when the sender uses it */
	double wait;         /* after the restore, the sender may run its checks this long */
	char files[4][PATH_MAX];
	int nfiles;
};

static void srv_cleanup(struct srv *s)
{
	if (s->restored && !s->committed) {
		virDomainDestroy(s->restored);
		if (!s->was_defined)
			virDomainUndefine(s->restored);
	}
	if (s->restored)
		virDomainFree(s->restored);
	s->restored = NULL;
	for (int i = 0; i < s->nfiles; i++)
		if (!s->committed || !s->o->keep)
			unlink(s->files[i]);
	s->nfiles = 0;
}

static int srv_fail(struct srv *s, struct ipk_err *err)
{
	ipk_transport_send_error(s->t, err);
	return -1;
}

static int srv_reply(struct srv *s, cJSON *j, struct ipk_err *err)
{
	if (!j)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	int rc = ipk_transport_send_json(s->t, IPK_FR_JSON, j, err);
	cJSON_Delete(j);
	return rc;
}

static int srv_file(struct srv *s, const char *name, char *path, size_t n, struct ipk_err *err)
{
	if (!name || !*name || strchr(name, '/') || *name == '.')
		return ipk_err_set(err, IPK_EXIT_DATAERR, "bad image name '%s'", name ? name : "");
	snprintf(path, n, "%s/%s", s->o->image_dir, name);
	if (access(path, R_OK) < 0)
		return ipk_err_set(err, IPK_EXIT_NOINPUT, "image '%s': %s", path, strerror(errno));
	return 0;
}

/* Ask the guest twice, 1.2 s apart: same checksum, counter in range and
 * moving. */
static int srv_verify(struct srv *s, const cJSON *req, cJSON *reply, struct ipk_err *err)
{
	if (!s->sock[0])
		return ipk_err_set(err, IPK_EXIT_USAGE, "verify '%s': no guest socket given", s->domain);
	double timeout = cJSON_GetNumberValue(cJSON_GetObjectItem(req, "timeout"));
	if (!(timeout > 0))
		timeout = 30;
	const char *want = cJSON_GetStringValue(cJSON_GetObjectItem(req, "checksum"));
	const cJSON *mn = cJSON_GetObjectItem(req, "counter_min"), *mx = cJSON_GetObjectItem(req, "counter_max");
	struct ipk_guest_answer a1, a2;
	if (ipk_guest_verify(s->sock, timeout, &a1, err) < 0)
		return -1;
	nap(1.2);
	if (ipk_guest_verify(s->sock, timeout, &a2, err) < 0)
		return -1;
	if (want && strcmp(want, a1.checksum) != 0)
		return ipk_err_set(err, IPK_EXIT_FAIL, "verify '%s': frame checksum %s, expected %s", s->domain, a1.checksum,
				   want);
	if ((cJSON_IsNumber(mn) && (double)a1.counter < mn->valuedouble) ||
	    (cJSON_IsNumber(mx) && (double)a1.counter > mx->valuedouble))
		return ipk_err_set(err, IPK_EXIT_FAIL,
				   "verify '%s': heartbeat counter %llu does not continue the source's (%.0f..%.0f)",
				   s->domain, (unsigned long long)a1.counter, cJSON_IsNumber(mn) ? mn->valuedouble : 0,
				   cJSON_IsNumber(mx) ? mx->valuedouble : 0);
	if (a2.counter <= a1.counter)
		return ipk_err_set(err, IPK_EXIT_FAIL, "verify '%s': heartbeat counter stuck at %llu", s->domain,
				   (unsigned long long)a1.counter);
	cJSON_AddStringToObject(reply, "checksum", a1.checksum);
	cJSON_AddNumberToObject(reply, "counter", (double)a1.counter);
	cJSON_AddNumberToObject(reply, "counter2", (double)a2.counter);
	return 0;
}

static int srv_op(struct srv *s, const cJSON *j, int *finished, struct ipk_err *err)
{
	const char *op = cJSON_GetStringValue(cJSON_GetObjectItem(j, "op"));
	char path[PATH_MAX];
	if (!op)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "message without 'op'");
	if (!strcmp(op, "open")) {
		const char *d = cJSON_GetStringValue(cJSON_GetObjectItem(j, "domain"));
		const char *u = cJSON_GetStringValue(cJSON_GetObjectItem(j, "uri"));
		const char *sk = cJSON_GetStringValue(cJSON_GetObjectItem(j, "sock"));
		if (!d || !*d || strlen(d) >= sizeof(s->domain) || s->c)
			return ipk_err_set(err, IPK_EXIT_DATAERR, "bad 'open' request");
		snprintf(s->domain, sizeof(s->domain), "%s", d);
		snprintf(s->sock, sizeof(s->sock), "%s", sk ? sk : "");
		const char *bn = cJSON_GetStringValue(cJSON_GetObjectItem(j, "base"));
		const char *bh = cJSON_GetStringValue(cJSON_GetObjectItem(j, "base_hash"));
		int have_base = 0;
		if (bn && bh && srv_file(s, bn, path, sizeof(path), err) == 0) {
			char h[33];
			struct ipk_err e = { 0 };
			if (ipk_file_hash(path, h, NULL, &e) == 0 && !strcmp(h, bh)) {
				have_base = 1;
				snprintf(s->base, sizeof(s->base), "%s", path);
			}
		}
		memset(err, 0, sizeof(*err));
		s->wait = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "wait"));
		if (!(s->c = lv_open(u ? u : s->o->default_uri, err)))
			return -1;
		virDomainPtr dom = virDomainLookupByName(s->c, d);
		if (dom) {
			int active = virDomainIsActive(dom);
			virDomainFree(dom);
			if (active == 1)
				return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "domain '%s' is already running on the target", d);
			s->was_defined = 1;
		}
		cJSON *r = msg_new("ready");
		if (r)
			cJSON_AddBoolToObject(r, "have_base", have_base);
		return srv_reply(s, r, err);
	}
	if (!s->c)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "'%s' before 'open'", op);
	if (!strcmp(op, "apply")) {
		if (srv_file(s, cJSON_GetStringValue(cJSON_GetObjectItem(j, "name")), path, sizeof(path), err) < 0)
			return -1;
		const char *mode = cJSON_GetStringValue(cJSON_GetObjectItem(j, "mode"));
		if (mode && !strcmp(mode, "delta")) {
			const char *outn = cJSON_GetStringValue(cJSON_GetObjectItem(j, "out"));
			char outp[PATH_MAX];
			if (!s->base[0])
				return ipk_err_set(err, IPK_EXIT_DATAERR, "apply delta '%s': no base here", path);
			if (!outn || !*outn || strchr(outn, '/') || *outn == '.')
				return ipk_err_set(err, IPK_EXIT_DATAERR, "apply delta '%s': bad output name", path);
			snprintf(outp, sizeof(outp), "%s/%s", s->o->image_dir, outn);
			struct ipk_memimg *b = ipk_image_open(s->base, err);
			if (!b)
				return -1;
			FILE *in = fopen(path, "rb");
			if (!in) {
				ipk_memimg_free(b);
				return ipk_err_set(err, IPK_EXIT_NOINPUT, "open '%s': %s", path, strerror(errno));
			}
			struct ipk_delta_stats ds;
			int rc = ipk_delta_apply_to_path(b, in, path, outp, &ds, err);
			fclose(in);
			ipk_memimg_free(b);
			if (rc < 0)
				return -1;
			if (s->nfiles < 4)
				snprintf(s->files[s->nfiles++], PATH_MAX, "%s", outp);
		}
		return srv_reply(s, msg_new("applied"), err);
	}
	if (!strcmp(op, "keep")) {
		/* a pre-copied base: it stays when the session ends */
		const char *n = cJSON_GetStringValue(cJSON_GetObjectItem(j, "name"));
		if (srv_file(s, n, path, sizeof(path), err) < 0)
			return -1;
		for (int i = 0; i < s->nfiles; i++)
			if (!strcmp(s->files[i], path))
				memmove(s->files[i], s->files[s->nfiles - 1], PATH_MAX), s->nfiles--, i--;
		*finished = 1;
		return srv_reply(s, msg_new("kept"), err);
	}
	if (!strcmp(op, "restore")) {
		if (srv_file(s, cJSON_GetStringValue(cJSON_GetObjectItem(j, "name")), path, sizeof(path), err) < 0)
			return -1;
		double t0 = ipk_mono();
		if (virDomainRestore(s->c, path) < 0) {
			ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "restore '%s' on the target: %s", path, lv_errtext());
			/* a half-started guest must not stay */
			virDomainPtr dom = virDomainLookupByName(s->c, s->domain);
			if (dom) {
				if (virDomainIsActive(dom) == 1)
					virDomainDestroy(dom);
				virDomainFree(dom);
			}
			return -1;
		}
		s->restored = virDomainLookupByName(s->c, s->domain);
		if (!s->restored)
			return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "find '%s' after restore: %s", s->domain, lv_errtext());
		/* the sender now runs its own checks between two requests */
		if (s->wait > ipk_transport_timeout(s->t) && s->wait < 3600)
			ipk_transport_set_timeout(s->t, s->wait);
		cJSON *r = msg_new("restored");
		if (r)
			cJSON_AddNumberToObject(r, "seconds", ipk_mono() - t0);
		return srv_reply(s, r, err);
	}
	if (!strcmp(op, "verify")) {
		cJSON *r = msg_new("verified");
		if (!r)
			return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		if (srv_verify(s, j, r, err) < 0) {
			cJSON_Delete(r);
			return -1;
		}
		return srv_reply(s, r, err);
	}
	if (!strcmp(op, "commit")) {
		if (!s->restored)
			return ipk_err_set(err, IPK_EXIT_DATAERR, "commit before restore");
		char *xml = virDomainGetXMLDesc(s->restored, VIR_DOMAIN_XML_SECURE);
		virDomainPtr def = xml ? virDomainDefineXML(s->c, xml) : NULL;
		free(xml);
		if (!def)
			return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "define '%s' on the target: %s", s->domain, lv_errtext());
		virDomainFree(def);
		s->committed = 1;
		if (!s->o->keep) {
			for (int i = 0; i < s->nfiles; i++)
				unlink(s->files[i]);
			if (s->base[0])
				unlink(s->base); /* the session left the state it was based on */
		}
		s->nfiles = 0;
		*finished = 1;
		return srv_reply(s, msg_new("committed"), err);
	}
	if (!strcmp(op, "abort")) {
		srv_cleanup(s);
		*finished = 1;
		return srv_reply(s, msg_new("aborted"), err);
	}
	return ipk_err_set(err, IPK_EXIT_DATAERR, "unknown request '%s'", op);
}

int ipk_migrate_serve(struct ipk_transport *t, const struct ipk_serve_opts *o, struct ipk_serve_result *res,
		      struct ipk_err *err)
{
	struct srv s = { .o = o, .t = t };
	memset(res, 0, sizeof(*res));
	int rc = -1, finished = 0;
	while (!finished) {
		int type;
		const uint8_t *p;
		size_t n;
		if (ipk_transport_recv(t, &type, &p, &n, err) < 0)
			break;
		if (type == IPK_FR_PUT) {
			cJSON *put = cJSON_ParseWithLength((const char *)p, n);
			char path[PATH_MAX];
			struct ipk_xfer_stats st;
			int xrc = put ? ipk_xfer_recv(t, put, o->image_dir, path, sizeof(path), &st, err)
				      : (ipk_err_set(err, IPK_EXIT_DATAERR, "malformed offer"), srv_fail(&s, err));
			cJSON_Delete(put);
			if (xrc < 0) {
				if (err->code == IPK_EXIT_TEMPFAIL || err->code == IPK_EXIT_DATAERR)
					break; /* the stream itself failed */
				continue;  /* the sender heard the error; it will abort */
			}
			if (s.nfiles < 4)
				snprintf(s.files[s.nfiles++], PATH_MAX, "%s", path);
			continue;
		}
		if (type == IPK_FR_ERROR) {
			ipk_err_set(err, IPK_EXIT_FAIL, "the sender gave up");
			break;
		}
		if (type != IPK_FR_JSON) {
			ipk_err_set(err, IPK_EXIT_DATAERR, "unexpected frame type %d", type);
			srv_fail(&s, err);
			break;
		}
		cJSON *j = cJSON_ParseWithLength((const char *)p, n);
		if (!j) {
			ipk_err_set(err, IPK_EXIT_DATAERR, "malformed request");
			srv_fail(&s, err);
			break;
		}
		struct ipk_err e = { 0 };
		if (srv_op(&s, j, &finished, &e) < 0) {
			*err = e;
			srv_fail(&s, &e);
		}
		cJSON_Delete(j);
	}
	if (finished)
		rc = 0;
	else if (err->code == IPK_EXIT_DATAERR)
		ipk_transport_abandon(t, err, 5); /* a bad frame: tell the sender why */
	res->committed = s.committed;
	res->bytes_received = ipk_transport_received(t);
	snprintf(res->domain, sizeof(res->domain), "%s", s.domain);
	srv_cleanup(&s);
	if (s.c)
		virConnectClose(s.c);
	return rc;
}
