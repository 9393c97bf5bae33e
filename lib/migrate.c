/* migrate.c - the migration state machine, both sides (see migrate.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
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
#include "qemusave.h"
#include "snapshot.h"
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

static cJSON *await_reply(struct ipk_transport *t, const char *want, struct ipk_err *err);

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
	return await_reply(t, want, err);
}

/* Receive the answer {"op": want}; returns it (caller frees) or NULL with
 * err. */
static cJSON *await_reply(struct ipk_transport *t, const char *want, struct ipk_err *err)
{
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

/* The guest's timer check: a GUEST_TIMER_MS timer must fire within
 * GUEST_TIMER_LIMIT seconds. */
#define GUEST_TIMER_MS 50
#define GUEST_TIMER_LIMIT 3.0

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
	int stream_ok;    /* the receiver can restore while it applies the delta */
	int reply_pending; /* a streamed restore was sent; its answer is still due */
	int cap_running;  /* the capture call still runs in cap_th */
	pthread_t cap_th;
	atomic_int cap_done; /* it returned: cap_rc, cap_err are set */
	atomic_int guest_stopped; /* the capture's watcher saw the guest stop on A, */
	double t_seen;            /* at this time (written before guest_stopped) */
	int cap_rc;
	struct ipk_err cap_err;
	struct ipk_memimg *base_img; /* the base, opened before the capture (streamed delta) */
	struct ipk_memimg *nw;       /* streamed: the final image, followed while libvirt writes it */
	int b_defined;    /* engine libvirt: the domain was defined on B before */
	double t_stop;    /* guest stopped on A */
	double phase_t0;
	char name[300];   /* image name on B */
	char base[4096];  /* A's pre-copied base, when B holds it too */
	char base_name[300];
	struct ipk_guest_answer before; /* the source guest's answer before the cut-over */
};

static int capture_wait(struct run *r, struct ipk_err *err);
static int image_complete(const char *path);

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

/* Streamed cut-over: ask B to restore from a delta that follows as DATA
 * frames, and encode it straight into the transport (an encoder thread
 * writes into a pipe that this thread sends from). B applies it as it
 * arrives into the FIFO its libvirt restores from. Not resumable: a retry
 * after a failure captures a new image anyway. On success the answer
 * ("restored") is still due (r->reply_pending). */
struct encoder_job {
	const struct ipk_memimg *base, *nw;
	FILE *out;
	int rc;
	double seconds;
	struct ipk_err err;
};

static void *encoder_run(void *arg)
{
	struct encoder_job *e = arg;
	double t0 = ipk_mono();
	sigset_t ss, old;
	sigemptyset(&ss);
	sigaddset(&ss, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &ss, &old); /* a closed pipe fails the write (EPIPE) */
	/* LZ4: the fastest to encode and to apply; the guest is down meanwhile */
	struct ipk_delta_opts dop = { .threads = 2, .codec = IPK_DELTA_CODEC_LZ4 };
	struct ipk_delta_stats ds;
	e->rc = ipk_delta_encode(e->base, e->nw, e->out, &dop, &ds, &e->err);
	if (fclose(e->out) != 0 && e->rc == 0)
		e->rc = ipk_err_set(&e->err, IPK_EXIT_IOERR, "encode the delta into the stream: %s", strerror(errno));
	e->seconds = ipk_mono() - t0;
	struct timespec zero = { 0, 0 };
	sigset_t pend;
	if (sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE))
		sigtimedwait(&ss, NULL, &zero);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return NULL;
}

static int send_stream(struct run *r, struct ipk_err *err)
{
	struct ipk_migrate_result *res = r->res;
	struct encoder_job e = { .base = r->base_img, .nw = r->nw };
	int pp[2], rc = -1;
	uint8_t *buf = malloc((1 << 20) + (64 << 10));
	if (!buf || pipe2(pp, O_CLOEXEC) < 0) {
		free(buf);
		return ipk_err_set(err, IPK_EXIT_OSERR, "pipe for the delta: %s", strerror(errno));
	}
	if (!(e.out = fdopen(pp[1], "wb"))) {
		close(pp[0]);
		close(pp[1]);
		free(buf);
		return ipk_err_set(err, IPK_EXIT_OSERR, "pipe for the delta: %s", strerror(errno));
	}
	setvbuf(e.out, NULL, _IOFBF, 1 << 20);
	cJSON *j = msg_new("restore");
	if (j) {
		snprintf(r->name, sizeof(r->name), "%s.delta", r->o->domain);
		cJSON_AddStringToObject(j, "name", r->name);
		cJSON_AddBoolToObject(j, "stream", 1);
	}
	r->restore_sent = 1;
	int jrc = j ? ipk_transport_send_json(r->t, IPK_FR_JSON, j, err)
		    : ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	cJSON_Delete(j);
	pthread_t th;
	int started = 0;
	if (jrc == 0) {
		int te = pthread_create(&th, NULL, encoder_run, &e);
		started = te == 0;
		if (!started)
			ipk_err_set(err, IPK_EXIT_OSERR, "start the encoder: %s", strerror(te));
	}
	if (!started) {
		fclose(e.out);
		close(pp[0]);
		free(buf);
		return -1;
	}
	/* The last HOLD bytes (the delta's end, with the end of QEMU's stream,
	 * without which B's guest cannot start) are sent only once the capture
	 * call on A has succeeded: never two running copies. */
	enum { CHUNK = 1 << 20, HOLD = 64 << 10 };
	size_t have = 0;
	int srcfail = 0, capfail = 0;
	/* What the encoder has made goes at least every 50 ms, so that B
	 * applies and loads it while A's capture still runs; with nothing to
	 * send for 0.5 s an empty frame goes, so that a broken link shows
	 * before the capture is complete (when it can still be cancelled). */
	double last = ipk_mono();
	for (;;) {
		struct pollfd pf = { .fd = pp[0], .events = POLLIN };
		int pr = poll(&pf, 1, 50);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr > 0) {
			ssize_t n = read(pp[0], buf + have, CHUNK + HOLD - have);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			have += (size_t)n;
			res->delta_bytes += (uint64_t)n;
		}
		double now = ipk_mono();
		size_t out = have == CHUNK + HOLD ? CHUNK : have > HOLD && now - last >= 0.05 ? have - HOLD : 0;
		if (!out && now - last < 0.5)
			continue;
		if (ipk_transport_send(r->t, IPK_FR_DATA, buf, out, err) < 0) {
			srcfail = 1;
			break;
		}
		last = now;
		memmove(buf, buf + out, have - out);
		have -= out;
	}
	close(pp[0]); /* the encoder, if still writing, fails (EPIPE) and ends */
	pthread_join(th, NULL);
	res->t_delta = e.seconds;
	/* The image is complete (the encoder saw libvirt's final magic). Once
	 * the guest was seen stopped too, all the capture call has left to do
	 * is stop QEMU, which takes seconds; the snapshot is memory-only, so no
	 * later step can resume the guest on A, and the tail goes now. */
	if (!srcfail && e.rc == 0) {
		for (int i = 0; i < 10 && !atomic_load(&r->cap_done) && !atomic_load(&r->guest_stopped); i++)
			nap(0.01);
		int early = !atomic_load(&r->cap_done) && atomic_load(&r->guest_stopped);
		if (!early && capture_wait(r, err) < 0) {
			capfail = 1;
		} else {
			r->captured = 1;
			snprintf(res->where, sizeof(res->where), "source-image");
			struct stat sb;
			res->image_bytes = stat(res->image, &sb) == 0 ? (uint64_t)sb.st_size : 0;
			if (have && ipk_transport_send(r->t, IPK_FR_DATA, buf, have, err) < 0)
				srcfail = 1;
		}
	} else if (!srcfail && r->cap_running && capture_wait(r, err) < 0) {
		capfail = 1; /* the encoder failed because the capture did: say why */
	}
	if (srcfail) {
		rc = -1;
	} else if (capfail) {
		ipk_transport_send_error(r->t, err);
		r->reply_pending = 1;
		rc = -1;
	} else if (e.rc < 0) {
		*err = e.err;
		ipk_transport_send_error(r->t, err);
		r->reply_pending = 1; /* B answers the broken stream with an error */
		rc = -1;
	} else {
		cJSON *d = cJSON_CreateObject();
		rc = d ? ipk_transport_send_json(r->t, IPK_FR_DONE, d, err) : ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		cJSON_Delete(d);
		if (rc == 0)
			r->reply_pending = 1;
	}
	free(buf);
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
	if (a)
		r->res->target_apply = cJSON_GetNumberValue(cJSON_GetObjectItem(a, "seconds"));
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

void ipk_url_host(const char *u, char *out, size_t n)
{
	out[0] = 0;
	const char *p = u ? strstr(u, "://") : NULL;
	if (!p)
		return;
	p += 3;
	const char *at = strchr(p, '@'), *end = p + strcspn(p, "/?");
	if (at && at < end)
		p = at + 1;
	if (*p == '[') {
		const char *rb = strchr(p, ']');
		if (rb && rb < end) {
			snprintf(out, n, "%.*s", (int)(rb - p - 1), p + 1);
			return;
		}
	}
	const char *colon = memchr(p, ':', (size_t)(end - p));
	if (colon)
		end = colon;
	snprintf(out, n, "%.*s", (int)(end - p), p);
}

/* Whether to capture (or migrate) domain d of connection c live, by
 * o->capture; why gets the reason when a live capture cannot be trusted
 * there, "" otherwise. */
static int capture_live(const struct ipk_migrate_opts *o, virConnectPtr c, virDomainPtr d, char *why, size_t n)
{
	if (ipk_live_capture_domain(c, d, why, n))
		return why[0] = 0, o->capture != IPK_CAPTURE_SAVE;
	return o->capture == IPK_CAPTURE_LIVE;
}

/* Engine libvirt, verification failed on B after libvirt moved the guest:
 * live-migrate it back (B's libvirtd connects to A's URI, the data goes to
 * A's host), undefining it on B when it was not defined there before.
 * Returns 0 when it runs on A again, -1 with why filled. */
static int native_back(struct run *r, char *why, size_t n)
{
	const struct ipk_migrate_opts *o = r->o;
	char host[256];
	ipk_url_host(o->source_uri, host, sizeof(host));
	if (!host[0]) {
		snprintf(why, n, "the source URI '%s' names no host the target can reach", o->source_uri ? o->source_uri : "(default)");
		return -1;
	}
	struct ipk_err e = { 0 };
	virConnectPtr b = lv_open(o->target_uri, &e);
	if (!b) {
		snprintf(why, n, "%.300s", e.msg);
		return -1;
	}
	int rc = -1;
	virDomainPtr d = virDomainLookupByName(b, o->domain);
	if (!d) {
		snprintf(why, n, "find '%s' on the target: %s", o->domain, lv_errtext());
		goto out;
	}
	virTypedParameterPtr params = NULL;
	int np = 0, maxp = 0;
	char duri[300];
	int v6 = strchr(host, ':') != NULL; /* an IPv6 address goes in brackets */
	snprintf(duri, sizeof(duri), "tcp://%s%s%s", v6 ? "[" : "", host, v6 ? "]" : "");
	virTypedParamsAddString(&params, &np, &maxp, VIR_MIGRATE_PARAM_URI, duri);
	char untrusted[200];
	unsigned long flags = VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PERSIST_DEST;
	if (capture_live(o, b, d, untrusted, sizeof(untrusted)))
		flags |= VIR_MIGRATE_LIVE;
	if (!r->b_defined)
		flags |= VIR_MIGRATE_UNDEFINE_SOURCE;
	if (virDomainMigrateToURI3(d, o->source_uri, params, (unsigned)np, flags) < 0)
		snprintf(why, n, "migrate '%s' back to '%s' (libvirt): %s", o->domain, o->source_uri, lv_errtext());
	else if (r->dom && dom_state(r->dom) == VIR_DOMAIN_RUNNING)
		rc = 0;
	else
		snprintf(why, n, "'%s' does not run on the source after migrating back", o->domain);
	virTypedParamsFree(params, np);
	virDomainFree(d);
out:
	virConnectClose(b);
	return rc;
}

/* Is the domain defined on B (asked through B's URI)? 1 yes or cannot
 * tell (then nothing is undefined there), 0 no. */
static int target_defined(const struct ipk_migrate_opts *o)
{
	struct ipk_err e = { 0 };
	virConnectPtr c = lv_open(o->target_uri, &e);
	if (!c)
		return 1;
	virDomainPtr d = virDomainLookupByName(c, o->domain);
	int rc = d ? 1 : virGetLastErrorCode() == VIR_ERR_NO_DOMAIN ? 0 : 1;
	if (d)
		virDomainFree(d);
	virResetLastError();
	virConnectClose(c);
	return rc;
}

/* The guest restored on A by a rollback: same checksum as before the
 * cut-over, a counter not behind the one read then, and timers that run. */
static int verify_source(struct run *r, struct ipk_err *err)
{
	const struct ipk_migrate_opts *o = r->o;
	double vt = o->verify_timeout > 0 ? o->verify_timeout : 30;
	struct ipk_guest_answer a1, a2;
	if (ipk_guest_verify(o->source_sock, vt, &a1, err) < 0)
		return -1;
	const char *want = o->expect_checksum ? o->expect_checksum : r->before.checksum[0] ? r->before.checksum : NULL;
	if (want && strcmp(a1.checksum, want) != 0)
		return ipk_err_set(err, IPK_EXIT_FAIL, "verify '%s' on the source: checksum %s, expected %s", o->domain,
				   a1.checksum, want);
	if (a1.counter < r->before.counter)
		return ipk_err_set(err, IPK_EXIT_FAIL, "verify '%s' on the source: heartbeat counter %llu, behind %llu",
				   o->domain, (unsigned long long)a1.counter, (unsigned long long)r->before.counter);
	return ipk_guest_timer(o->source_sock, GUEST_TIMER_LIMIT, GUEST_TIMER_MS, &a1, &a2, err);
}

/* The rollback could not bring the session back safely: record where it
 * is, append "; " and the reason (printf-style) to err's message, and make
 * it IPK_EXIT_SOFTWARE. */
static void rollback_fail(struct ipk_migrate_result *res, struct ipk_err *err, const char *where, const char *fmt, ...)
{
	char why[700];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	res->rollback_failed = 1;
	snprintf(res->where, sizeof(res->where), "%s", where);
	char m[sizeof(err->msg)];
	snprintf(m, sizeof(m), "%.300s; %s", err->msg, why);
	snprintf(err->msg, sizeof(err->msg), "%s", m);
	err->code = IPK_EXIT_SOFTWARE;
}

static void rollback(struct run *r, struct ipk_err *err)
{
	struct ipk_migrate_result *res = r->res;
	struct ipk_err ign = { 0 };
	int failed_phase = res->phase;
	if (r->cap_running) {
		/* a live capture still writing its image is cancelled (the guest
		 * runs on); one whose image is complete only stops QEMU */
		if (!image_complete(res->image))
			virDomainAbortJob(r->dom);
		if (capture_wait(r, &ign) == 0)
			r->captured = 1;
		else /* libvirt left the guest on A as it could (running, paused or off) */
			r->captured = r->dom && dom_state(r->dom) == VIR_DOMAIN_SHUTOFF;
		virResetLastError();
	}
	enter(r, IPK_MIG_ROLLBACK, &ign);
	res->phase = failed_phase;
	if (r->o->engine == IPK_ENGINE_LIBVIRT) {
		if (r->native_done) {
			/* libvirt moved the state: the source holds none any more, so
			 * the way back is the same kind of migration, B -> A */
			char why[400] = "";
			double t0 = ipk_mono();
			if (native_back(r, why, sizeof(why)) == 0) {
				res->rolled_back = 1;
				snprintf(res->where, sizeof(res->where), "source");
				res->seconds[IPK_MIG_ROLLBACK] = ipk_mono() - t0;
				return;
			}
			rollback_fail(res, err, "target",
				      "not rolled back: migrating it back failed (%.300s); only the target holds the guest's "
				      "state, it stays there unverified",
				      why);
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
	if (r->reply_pending && r->t && !ipk_transport_broken(r->t)) {
		/* the streamed restore's answer comes first */
		struct ipk_err e = { 0 };
		double old = ipk_transport_timeout(r->t);
		ipk_transport_set_timeout(r->t, slow_step(r->o));
		cJSON_Delete(ipk_transport_recv_json(r->t, IPK_FR_JSON, &e));
		ipk_transport_set_timeout(r->t, old);
		r->reply_pending = 0;
	}
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
		if (res->image[0] && !image_complete(res->image))
			unlink(res->image); /* a cancelled capture's partial image */
		int st = r->dom ? dom_state(r->dom) : -1;
		if (st == VIR_DOMAIN_PAUSED)
			virDomainResume(r->dom);
		res->rolled_back = 1;
		snprintf(res->where, sizeof(res->where), "source");
		return;
	}
	if (!b_clean) {
		/* B may still run it: two copies are worse than a stopped one. */
		rollback_fail(res, err, "unknown", "rollback stopped: the target may still run the guest, its image is '%.300s'",
			      res->image);
		return;
	}
	double t0 = ipk_mono();
	if (virDomainRestore(r->a, res->image) == 0) {
		res->downtime = ipk_mono() - r->t_stop;
		struct ipk_err ve = { 0 };
		if (r->o->source_sock && verify_source(r, &ve) < 0) {
			/* the image restored but the guest in it does not pass:
			 * "runs on the source" would be a claim nobody checked */
			rollback_fail(res, err, "source-unverified",
				      "rollback failed: the guest restored on the source does not pass verification (%.300s); "
				      "its image '%.200s' is kept",
				      ve.msg, res->image);
			res->seconds[IPK_MIG_ROLLBACK] = ipk_mono() - t0;
			return;
		}
		res->rolled_back = 1;
		snprintf(res->where, sizeof(res->where), "source");
		if (!r->o->keep)
			unlink(res->image);
	} else {
		rollback_fail(res, err, "source-image",
			      "rollback failed: restore '%.300s' on the source: %.200s (the session is in that image)", res->image,
			      lv_errtext());
	}
	res->seconds[IPK_MIG_ROLLBACK] = ipk_mono() - t0;
}

/* Watch a domain from a second connection during a live capture and note
 * when it stops running: libvirt pauses it for the snapshot's last pass,
 * and with HALT then stops it and waits for QEMU to exit before the call
 * returns, so "end of the call minus the pause the job reports" would miss
 * the time after the pause. Polled every 10 ms. */
struct stopwatch {
	const char *uri, *domain;
	atomic_int done;
	double t_stop; /* 0: not seen */
	double *t_seen;      /* when seen, */
	atomic_int *stopped; /* then set */
};

static void *stopwatch_run(void *arg)
{
	struct stopwatch *w = arg;
	struct ipk_err e = { 0 };
	virConnectPtr c = lv_open(w->uri, &e);
	virDomainPtr d = c ? virDomainLookupByName(c, w->domain) : NULL;
	while (d && !atomic_load(&w->done)) {
		int st = dom_state(d);
		if (st >= 0 && st != VIR_DOMAIN_RUNNING) {
			w->t_stop = *w->t_seen = ipk_mono();
			atomic_store(w->stopped, 1);
			break;
		}
		poll(NULL, 0, 10);
	}
	if (d)
		virDomainFree(d);
	if (c)
		virConnectClose(c);
	return NULL;
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
	if (!res->capture_live) {
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
	struct stopwatch w = { .uri = o->source_uri, .domain = o->domain, .t_seen = &r->t_seen,
				 .stopped = &r->guest_stopped };
	pthread_t th;
	int watching = pthread_create(&th, NULL, stopwatch_run, &w) == 0;
	double t0 = ipk_mono();
	virDomainSnapshotPtr sn = virDomainSnapshotCreateXML(
		r->dom, xml,
		VIR_DOMAIN_SNAPSHOT_CREATE_LIVE | VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA | VIR_DOMAIN_SNAPSHOT_CREATE_HALT);
	double t1 = ipk_mono();
	if (watching) {
		atomic_store(&w.done, 1);
		pthread_join(th, NULL);
	}
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
	/* the earlier of the two: downtime is never under-counted */
	if (w.t_stop > 0 && w.t_stop < r->t_stop)
		r->t_stop = w.t_stop;
	res->capture_stopped = t1 - r->t_stop;
	return 0;
}

/* The capture in a thread, so that the delta is encoded from its image while
 * libvirt writes it (ipk_memimg_follow). */
static void *capture_run(void *arg)
{
	struct run *r = arg;
	r->cap_rc = capture_final(r, &r->cap_err);
	atomic_store(&r->cap_done, 1);
	return NULL;
}

/* The followed image's writer is the capture call: 1 when it succeeded, -1
 * when it failed, 0 while it runs. libvirt's final magic tells the end
 * earlier (memimg.h). */
static int capture_ended(void *ctx)
{
	struct run *r = ctx;
	if (!atomic_load(&r->cap_done))
		return 0;
	return r->cap_rc == 0 ? 1 : -1;
}

static int image_complete(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	int done = ipk_qemusave_libvirt_complete(fd);
	close(fd);
	return done;
}

/* When the guest stopped on A: while the capture call still runs (the
 * stream's tail went early), what its watcher saw; then the call's own
 * figure (capture_final). */
static double stop_time(const struct run *r)
{
	return r->cap_running ? r->t_seen : r->t_stop;
}

/* Wait for the capture thread (started by capture_start). Returns its
 * result: 0, or -1 with err. */
static int capture_wait(struct run *r, struct ipk_err *err)
{
	if (!r->cap_running)
		return 0;
	pthread_join(r->cap_th, NULL);
	r->cap_running = 0;
	if (r->cap_rc < 0) {
		*err = r->cap_err;
		return -1;
	}
	return 0;
}

/* Start the capture in a thread and follow its image as libvirt writes it
 * (r->nw). Returns 0 once the image file exists, or -1 with err when the
 * capture failed before (or the image cannot be followed; the capture may
 * then still run: r->cap_running). */
static int capture_start(struct run *r, struct ipk_err *err)
{
	int te = pthread_create(&r->cap_th, NULL, capture_run, r);
	if (te != 0)
		return ipk_err_set(err, IPK_EXIT_OSERR, "start the capture: %s", strerror(te));
	r->cap_running = 1;
	int fd;
	while ((fd = open(r->res->image, O_RDONLY | O_CLOEXEC)) < 0) {
		if (atomic_load(&r->cap_done)) {
			if (capture_wait(r, err) < 0)
				return -1;
			if ((fd = open(r->res->image, O_RDONLY | O_CLOEXEC)) >= 0)
				break;
			return ipk_err_set(err, IPK_EXIT_SOFTWARE, "capture '%s': no image at '%s' after it", r->o->domain,
					   r->res->image);
		}
		nap(0.002);
	}
	/* it may grow past the guest's memory by what the live pass sends again */
	size_t bl;
	ipk_memimg_bytes(r->base_img, &bl);
	size_t reserve = 4 * bl > ((size_t)1 << 30) ? 4 * bl : (size_t)1 << 30;
	r->nw = ipk_memimg_follow(fd, r->res->image, IPK_MI_NOHASH, reserve, capture_ended, r, err);
	close(fd);
	return r->nw ? 0 : -1;
}

struct base_parse {
	const char *path;
	struct ipk_memimg *img; /* NULL: it did not parse */
};

static void *base_parse_run(void *arg)
{
	struct base_parse *bp = arg;
	struct ipk_err e = { 0 };
	bp->img = ipk_image_open_flags(bp->path, IPK_MI_NOHASH, &e); /* the streamed delta compares bytes */
	return NULL;
}

static int verify_target(struct run *r, const struct ipk_guest_answer *before, struct ipk_err *err)
{
	const struct ipk_migrate_opts *o = r->o;
	struct ipk_migrate_result *res = r->res;
	if (o->verify_gpu && r->t) {
		/* the target renders the GPU check and sends its result */
		cJSON *g = msg_new("gpucheck");
		if (g)
			cJSON_AddStringToObject(g, "mode", ipk_gpucheck_mode_name(o->verify_gpu));
		cJSON *a = request_slow(r->t, g, "gpuchecked", slow_step(o), err);
		if (!a)
			return -1;
		ipk_gpucheck_from_json(cJSON_GetObjectItem(a, "gpu"), &res->gpu);
		cJSON_Delete(a);
	}
	if (ipk_gpucheck_judge(&res->gpu, o->verify_gpu, err) < 0)
		return -1;
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
							(double)before->counter + ceil(ipk_mono() - stop_time(r)) + 3);
			}
			cJSON_AddNumberToObject(j, "timeout", o->verify_timeout > 0 ? o->verify_timeout : 30);
		}
		cJSON *a = request_slow(r->t, j, "verified", slow_step(o), err);
		if (!a)
			return -1;
		snprintf(res->checksum, sizeof(res->checksum), "%s",
			 cJSON_GetStringValue(cJSON_GetObjectItem(a, "checksum")) ?: "");
		res->counter_after = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(a, "counter"));
		res->target_verify_answer = cJSON_GetNumberValue(cJSON_GetObjectItem(a, "answer_seconds"));
		res->target_verify_advance = cJSON_GetNumberValue(cJSON_GetObjectItem(a, "advance_seconds"));
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
	unsigned long flags = VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PERSIST_DEST;
	if (r->res->capture_live)
		flags |= VIR_MIGRATE_LIVE;
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
	struct ipk_guest_answer *before = &r.before;
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
	if (o->source_sock && ipk_guest_verify(o->source_sock, o->verify_timeout > 0 ? o->verify_timeout : 30, before,
					       err) < 0) {
		char m[sizeof(err->msg)];
		snprintf(m, sizeof(m), "guest not healthy on the source, not migrating: %.900s", err->msg);
		snprintf(err->msg, sizeof(err->msg), "%s", m);
		goto fail;
	}
	res->counter_before = before->counter;
	if (!o->precopy) /* the pre-copy is always live (enum ipk_capture_mode) */
		res->capture_live = capture_live(o, r.a, r.dom, res->capture_why, sizeof(res->capture_why));

	if (o->engine == IPK_ENGINE_LIBVIRT) {
		res->downtime = NAN; /* unless libvirt reports it */
		r.b_defined = target_defined(o);
		if (enter(&r, IPK_MIG_TRANSFER, err) < 0 || native_move(&r, err) < 0)
			goto fail;
		if (enter(&r, IPK_MIG_VERIFY, err) < 0)
			goto fail;
		if (o->target_sock) {
			struct ipk_guest_answer a1, a2;
			double vt = o->verify_timeout > 0 ? o->verify_timeout : 30;
			if (ipk_guest_verify(o->target_sock, vt, &a1, err) < 0)
				goto fail;
			const char *want = o->expect_checksum ? o->expect_checksum : before->checksum[0] ? before->checksum : NULL;
			if (want && strcmp(a1.checksum, want) != 0) {
				ipk_err_set(err, IPK_EXIT_FAIL, "verify '%s' on the target: checksum %s, expected %s", o->domain,
					    a1.checksum, want);
				goto fail;
			}
			if (o->source_sock && a1.counter < before->counter) {
				ipk_err_set(err, IPK_EXIT_FAIL,
					    "verify '%s' on the target: heartbeat does not continue (%llu before, %llu after)",
					    o->domain, (unsigned long long)before->counter, (unsigned long long)a1.counter);
				goto fail;
			}
			if (ipk_guest_timer(o->target_sock, GUEST_TIMER_LIMIT, GUEST_TIMER_MS, &a1, &a2, err) < 0)
				goto fail;
			snprintf(res->checksum, sizeof(res->checksum), "%s", a1.checksum);
			res->counter_after = a1.counter;
		}
		struct run r2 = r;
		struct ipk_migrate_opts o2 = *o;
		o2.target_sock = NULL; /* done above */
		r2.o = &o2;
		if (verify_target(&r2, before, err) < 0)
			goto fail;
		res->verified_ts = ipk_now();
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
	/* A streamed cut-over needs the base parsed, and the parse gives its
	 * identity: A parses its copy while B parses its own, and the two
	 * identities are compared when B answers. Otherwise A hashes it. */
	struct base_parse bp = { .path = basepath };
	pthread_t bp_th;
	int with_base = !o->precopy && !o->no_delta && access(basepath, R_OK) == 0, parsing = 0;
	if (with_base && !o->no_stream) {
		parsing = pthread_create(&bp_th, NULL, base_parse_run, &bp) == 0;
		with_base = parsing;
	} else if (with_base) {
		struct ipk_err e = { 0 };
		with_base = ipk_file_hash(basepath, basehash, NULL, &e) == 0;
	}
	cJSON *j = msg_new("open");
	if (j) {
		cJSON_AddStringToObject(j, "domain", o->domain);
		if (o->target_uri)
			cJSON_AddStringToObject(j, "uri", o->target_uri);
		if (o->target_sock)
			cJSON_AddStringToObject(j, "sock", o->target_sock);
		cJSON_AddNumberToObject(j, "wait", slow_step(o));
		if (with_base) {
			snprintf(r.base_name, sizeof(r.base_name), "%s.base", o->domain);
			cJSON_AddStringToObject(j, "base", r.base_name);
			if (basehash[0])
				cJSON_AddStringToObject(j, "base_hash", basehash);
			cJSON_AddBoolToObject(j, "stream", !o->no_stream);
		}
	}
	cJSON *a = request(t, j, "ready", err);
	if (parsing) {
		pthread_join(bp_th, NULL);
		r.base_img = bp.img;
		if (bp.img)
			ipk_memimg_id_hex(bp.img, basehash);
	}
	if (!a)
		goto fail;
	r.stream_ok = cJSON_IsTrue(cJSON_GetObjectItem(a, "stream_restore"));
	/* B's identity of its base, when it parsed it rather than compared */
	const char *bh = cJSON_GetStringValue(cJSON_GetObjectItem(a, "base_hash"));
	if (basehash[0] && cJSON_IsTrue(cJSON_GetObjectItem(a, "have_base")) && (!bh || !strcmp(bh, basehash))) {
		snprintf(r.base, sizeof(r.base), "%s", basepath);
		snprintf(res->base_id, sizeof(res->base_id), "%s", basehash);
	}
	cJSON_Delete(a);
	r.opened = 1;
	if (!r.base[0] || !r.stream_ok) {
		/* no streamed delta: the delta, if any, goes as a file */
		ipk_memimg_free(r.base_img);
		r.base_img = NULL;
	}

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
	/* streamed: the delta is encoded from the image while libvirt writes
	 * it, B restores from it as it comes, and the stream's last bytes wait
	 * for the capture call's success */
	if (r.base_img) {
		if (capture_start(&r, err) < 0)
			goto fail;
	} else {
		if (capture_final(&r, err) < 0) {
			if (dom_state(r.dom) == VIR_DOMAIN_SHUTOFF && access(res->image, R_OK) == 0)
				r.captured = 1;
			goto fail;
		}
		r.captured = 1;
		snprintf(res->where, sizeof(res->where), "source-image");
	}

	/* with a delta and a receiver that can, transfer, apply and restore
	 * overlap: the delta is encoded into the stream, B applies it as it
	 * arrives into a FIFO that its libvirt restores from */
	res->streamed = r.base_img != NULL;
	if (enter(&r, IPK_MIG_TRANSFER, err) < 0)
		goto fail;
	if (res->streamed) {
		if (send_stream(&r, err) < 0 || enter(&r, IPK_MIG_APPLY, err) < 0 || enter(&r, IPK_MIG_RESTORE, err) < 0)
			goto fail;
		double old = ipk_transport_timeout(t);
		ipk_transport_set_timeout(t, slow_step(o));
		a = await_reply(t, "restored", err);
		ipk_transport_set_timeout(t, old);
		r.reply_pending = 0;
		if (!a)
			goto fail;
	} else {
		if (send_state(&r, err) < 0)
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
	}
	double t_restored = ipk_mono();
	res->downtime = t_restored - stop_time(&r);
	res->target_restore = cJSON_GetNumberValue(cJSON_GetObjectItem(a, "restore_seconds"));
	if (res->streamed)
		res->target_apply = cJSON_GetNumberValue(cJSON_GetObjectItem(a, "apply_seconds"));
	cJSON_Delete(a);
	if (enter(&r, IPK_MIG_VERIFY, err) < 0 || verify_target(&r, before, err) < 0)
		goto fail;
	double t_verified = ipk_mono();
	res->verified_ts = ipk_now();
	if (r.cap_running) {
		/* the stream's tail went before the capture call returned (A's
		 * QEMU exiting): now it has, and the guest must be off on A */
		struct ipk_err ce = { 0 };
		if (capture_wait(&r, &ce) < 0 && dom_state(r.dom) == VIR_DOMAIN_RUNNING) {
			*err = ce;
			goto fail;
		}
		res->downtime = t_restored - r.t_stop;
	}
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
	res->after_verified = ipk_mono() - t_verified;
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
	if (r.cap_running) {
		struct ipk_err ign = { 0 };
		capture_wait(&r, &ign);
	}
	ipk_memimg_free(r.nw);
	ipk_memimg_free(r.base_img);
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
	struct ipk_memimg *base_img; /* that base, opened ahead of a streamed restore */
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
	ipk_memimg_free(s->base_img);
	s->base_img = NULL;
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

/* Ask the guest: same checksum, counter in range, then its timer check. */
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
	double t0 = ipk_mono();
	if (ipk_guest_verify(s->sock, timeout, &a1, err) < 0)
		return -1;
	double t1 = ipk_mono();
	if (want && strcmp(want, a1.checksum) != 0)
		return ipk_err_set(err, IPK_EXIT_FAIL, "verify '%s': frame checksum %s, expected %s", s->domain, a1.checksum,
				   want);
	if ((cJSON_IsNumber(mn) && (double)a1.counter < mn->valuedouble) ||
	    (cJSON_IsNumber(mx) && (double)a1.counter > mx->valuedouble))
		return ipk_err_set(err, IPK_EXIT_FAIL,
				   "verify '%s': heartbeat counter %llu does not continue the source's (%.0f..%.0f)",
				   s->domain, (unsigned long long)a1.counter, cJSON_IsNumber(mn) ? mn->valuedouble : 0,
				   cJSON_IsNumber(mx) ? mx->valuedouble : 0);
	if (ipk_guest_timer(s->sock, GUEST_TIMER_LIMIT, GUEST_TIMER_MS, &a1, &a2, err) < 0)
		return -1;
	cJSON_AddStringToObject(reply, "checksum", a1.checksum);
	cJSON_AddNumberToObject(reply, "counter", (double)a1.counter);
	cJSON_AddNumberToObject(reply, "counter2", (double)a2.counter);
	cJSON_AddNumberToObject(reply, "answer_seconds", t1 - t0);
	cJSON_AddNumberToObject(reply, "advance_seconds", ipk_mono() - t1);
	return 0;
}

/* Apply the delta at path against base into out_path without fsync: the
 * result is a scratch copy (A keeps the session's image until the commit),
 * written to a temp file and renamed only when the whole apply verified. */
static int srv_apply_file(const char *base, const char *path, const char *out_path, double *seconds,
			  struct ipk_err *err)
{
	double t0 = ipk_mono();
	char tmp[PATH_MAX + 8];
	snprintf(tmp, sizeof(tmp), "%s.tmp", out_path);
	struct ipk_memimg *b = ipk_image_open(base, err);
	if (!b)
		return -1;
	FILE *in = fopen(path, "rb");
	if (!in) {
		ipk_memimg_free(b);
		return ipk_err_set(err, IPK_EXIT_NOINPUT, "open '%s': %s", path, strerror(errno));
	}
	FILE *out = fopen(tmp, "wb");
	if (!out) {
		int e = errno;
		fclose(in);
		ipk_memimg_free(b);
		return ipk_err_set(err, IPK_EXIT_CANTCREAT, "create '%s': %s", tmp, strerror(e));
	}
	struct ipk_delta_stats ds;
	int rc = ipk_delta_apply(b, in, path, out, &ds, err);
	if (fclose(out) != 0 && rc == 0)
		rc = ipk_err_set(err, errno == ENOSPC || errno == EDQUOT ? IPK_EXIT_CANTCREAT : IPK_EXIT_IOERR,
				 "write '%s': %s", tmp, strerror(errno));
	fclose(in);
	ipk_memimg_free(b);
	if (rc == 0 && rename(tmp, out_path) < 0)
		rc = ipk_err_set(err, IPK_EXIT_CANTCREAT, "rename '%s': %s", tmp, strerror(errno));
	if (rc < 0)
		unlink(tmp);
	*seconds = ipk_mono() - t0;
	return rc;
}

/* Streamed restore: the delta arrives as DATA frames while it is being
 * encoded on A; this thread writes them into a pipe, a feeder thread applies
 * the delta read from that pipe into a FIFO, and a third thread runs
 * libvirt's restore from the FIFO. The rebuilt image is never written to
 * disk and B restores while A still encodes. */
struct feeder {
	const struct ipk_memimg *base;
	FILE *in;
	const char *fifo;
	atomic_int stop;     /* libvirt returned: stop waiting for its reader */
	int rc;
	double seconds;
	struct ipk_err err;
};

static void block_sigpipe(sigset_t *old)
{
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &ss, old);
}

/* Unblock SIGPIPE again, dropping one our writes raised meanwhile. */
static void unblock_sigpipe(const sigset_t *old)
{
	sigset_t ss, pend;
	sigemptyset(&ss);
	sigaddset(&ss, SIGPIPE);
	struct timespec zero = { 0, 0 };
	if (sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE))
		sigtimedwait(&ss, NULL, &zero);
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

static void *feeder_run(void *arg)
{
	struct feeder *f = arg;
	double t0 = ipk_mono();
	sigset_t old;
	block_sigpipe(&old); /* a reader that goes away fails our writes (EPIPE) */
	f->rc = -1;
	int fd = -1;
	/* wait for libvirt to open the FIFO */
	for (int i = 0; fd < 0; i++) {
		fd = open(f->fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd >= 0)
			break;
		if (errno != ENXIO || atomic_load(&f->stop) || i > 120 * 200) {
			ipk_err_set(&f->err, IPK_EXIT_UNAVAILABLE, "open '%s' for the restore: %s", f->fifo,
				    errno == ENXIO ? "libvirt did not read it" : strerror(errno));
			goto out;
		}
		poll(NULL, 0, 5);
	}
	/* a bigger pipe: fewer wake-ups of QEMU's reader (best effort) */
	fcntl(fd, F_SETPIPE_SZ, 1 << 20);
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		ipk_err_set(&f->err, IPK_EXIT_OSERR, "set '%s' blocking: %s", f->fifo, strerror(errno));
		close(fd);
		goto out;
	}
	FILE *out = fdopen(fd, "wb");
	if (!out) {
		ipk_err_set(&f->err, IPK_EXIT_OSERR, "open '%s': %s", f->fifo, strerror(errno));
		close(fd);
		goto out;
	}
	setvbuf(out, NULL, _IOFBF, 1 << 20);
	struct ipk_delta_stats ds;
	f->rc = ipk_delta_apply(f->base, f->in, "the streamed delta", out, &ds, &f->err);
	if (fclose(out) != 0 && f->rc == 0)
		f->rc = ipk_err_set(&f->err, IPK_EXIT_IOERR, "write '%s': %s", f->fifo, strerror(errno));
out:
	/* closing our end of the pipe fails the receiving thread's writes */
	fclose(f->in);
	f->in = NULL;
	f->seconds = ipk_mono() - t0;
	unblock_sigpipe(&old);
	return NULL;
}

struct restorer {
	virConnectPtr c;
	const char *fifo;
	struct feeder *f;
	int rc;
	double seconds;
	char msg[600];
};

static void *restorer_run(void *arg)
{
	struct restorer *r = arg;
	double t0 = ipk_mono();
	r->rc = virDomainRestore(r->c, r->fifo);
	if (r->rc < 0)
		snprintf(r->msg, sizeof(r->msg), "%s", lv_errtext()); /* libvirt's errors are per thread */
	r->seconds = ipk_mono() - t0;
	atomic_store(&r->f->stop, 1); /* a feeder still waiting for the reader stops */
	return NULL;
}

/* Receive the delta stream (DATA frames up to DONE) and restore from it.
 * Returns 0 when libvirt restored the guest from a delta that applied
 * with every check passed, or -1 with err (the stream's or the apply's
 * error first, else libvirt's). */
static int srv_restore_streamed(struct srv *s, double *t_apply, double *t_restore, uint64_t *bytes,
				struct ipk_err *err)
{
	char fifo[PATH_MAX];
	snprintf(fifo, sizeof(fifo), "%s/%s.fifo", s->o->image_dir, s->domain);
	unlink(fifo);
	if (!s->base_img && !(s->base_img = ipk_image_open_flags(s->base, IPK_MI_NOHASH, err)))
		return -1;
	if (mkfifo(fifo, 0600) < 0)
		return ipk_err_set(err, IPK_EXIT_CANTCREAT, "create FIFO '%s': %s", fifo, strerror(errno));
	int pp[2] = { -1, -1 };
	struct feeder f = { .base = s->base_img, .fifo = fifo };
	struct restorer rs = { .c = s->c, .fifo = fifo, .f = &f, .rc = -1 };
	pthread_t tf, tr;
	int have_f = 0, have_r = 0, rc = -1;
	if (pipe2(pp, O_CLOEXEC) < 0 || !(f.in = fdopen(pp[0], "rb"))) {
		ipk_err_set(err, IPK_EXIT_OSERR, "pipe for the delta: %s", strerror(errno));
		goto out;
	}
	pp[0] = -1;
	int e1 = pthread_create(&tf, NULL, feeder_run, &f);
	have_f = e1 == 0;
	int e2 = have_f ? pthread_create(&tr, NULL, restorer_run, &rs) : 0;
	have_r = have_f && e2 == 0;
	if (!have_f || !have_r) {
		ipk_err_set(err, IPK_EXIT_OSERR, "start a thread: %s", strerror(e1 ? e1 : e2));
		goto out;
	}
	/* the delta, as it comes */
	sigset_t old;
	block_sigpipe(&old);
	struct ipk_err serr = { 0 };
	int wfail = 0, broken = 0;
	for (;;) {
		int type;
		const uint8_t *p;
		size_t n;
		if (ipk_transport_recv(s->t, &type, &p, &n, &serr) < 0) {
			broken = 1;
			break;
		}
		if (type == IPK_FR_DONE)
			break;
		if (type == IPK_FR_ERROR) {
			ipk_err_set(&serr, IPK_EXIT_FAIL, "the sender gave up during the delta stream: %.*s", (int)(n < 600 ? n : 600),
				    (const char *)p);
			broken = 1;
			break;
		}
		if (type != IPK_FR_DATA) {
			ipk_err_set(&serr, IPK_EXIT_DATAERR, "unexpected frame type %d in the delta stream", type);
			broken = 1;
			break;
		}
		*bytes += n;
		size_t done = 0;
		while (!wfail && done < n) {
			ssize_t w = write(pp[1], p + done, n - done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				wfail = 1; /* the apply stopped: drain to DONE, then report its error */
			else
				done += (size_t)w;
		}
	}
	close(pp[1]);
	pp[1] = -1;
	unblock_sigpipe(&old);
	pthread_join(tr, NULL);
	have_r = 0;
	atomic_store(&f.stop, 1);
	pthread_join(tf, NULL);
	have_f = 0;
	*t_apply = f.seconds;
	*t_restore = rs.seconds;
	if (broken)
		*err = serr;
	else if (f.rc < 0)
		*err = f.err;
	else if (rs.rc < 0)
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "restore '%s' on the target: %s", fifo, rs.msg);
	else
		rc = 0;
out:
	if (have_f || have_r) {
		/* threads started, but not both: end the one that runs */
		if (pp[1] >= 0)
			close(pp[1]);
		pp[1] = -1;
		atomic_store(&f.stop, 1);
		if (have_r)
			pthread_join(tr, NULL);
		if (have_f)
			pthread_join(tf, NULL);
	}
	if (f.in)
		fclose(f.in);
	if (pp[0] >= 0)
		close(pp[0]);
	if (pp[1] >= 0)
		close(pp[1]);
	unlink(fifo);
	return rc;
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
		char h[33] = "";
		if (bn && srv_file(s, bn, path, sizeof(path), err) == 0) {
			struct ipk_err e = { 0 };
			if (cJSON_IsTrue(cJSON_GetObjectItem(j, "stream"))) {
				/* parse it now, not while the guest is down; the
				 * parse gives its identity (the sender, which parses
				 * its own meanwhile, compares them when none came) */
				if ((s->base_img = ipk_image_open_flags(path, IPK_MI_NOHASH, &e)))
					ipk_memimg_id_hex(s->base_img, h);
			} else if (bh && ipk_file_hash(path, h, NULL, &e) < 0) {
				h[0] = 0;
			}
			have_base = h[0] && (!bh || !strcmp(h, bh));
			if (have_base) {
				snprintf(s->base, sizeof(s->base), "%s", path);
			} else {
				ipk_memimg_free(s->base_img);
				s->base_img = NULL;
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
		if (r) {
			cJSON_AddBoolToObject(r, "have_base", have_base);
			if (have_base && !bh)
				cJSON_AddStringToObject(r, "base_hash", h);
			cJSON_AddBoolToObject(r, "stream_restore", 1); /* knows "restore" with "stream" */
		}
		return srv_reply(s, r, err);
	}
	if (!s->c)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "'%s' before 'open'", op);
	if (!strcmp(op, "apply")) {
		if (srv_file(s, cJSON_GetStringValue(cJSON_GetObjectItem(j, "name")), path, sizeof(path), err) < 0)
			return -1;
		const char *mode = cJSON_GetStringValue(cJSON_GetObjectItem(j, "mode"));
		double secs = 0;
		if (mode && !strcmp(mode, "delta")) {
			const char *outn = cJSON_GetStringValue(cJSON_GetObjectItem(j, "out"));
			char outp[PATH_MAX];
			if (!s->base[0])
				return ipk_err_set(err, IPK_EXIT_DATAERR, "apply delta '%s': no base here", path);
			if (!outn || !*outn || strchr(outn, '/') || *outn == '.')
				return ipk_err_set(err, IPK_EXIT_DATAERR, "apply delta '%s': bad output name", path);
			snprintf(outp, sizeof(outp), "%s/%s", s->o->image_dir, outn);
			if (srv_apply_file(s->base, path, outp, &secs, err) < 0)
				return -1;
			if (s->nfiles < 4)
				snprintf(s->files[s->nfiles++], PATH_MAX, "%s", outp);
		}
		cJSON *r = msg_new("applied");
		if (r)
			cJSON_AddNumberToObject(r, "seconds", secs);
		return srv_reply(s, r, err);
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
		double t0 = ipk_mono(), t_apply = 0, t_restore = 0;
		uint64_t sbytes = 0;
		int streamed = cJSON_IsTrue(cJSON_GetObjectItem(j, "stream"));
		if (streamed && !s->base[0])
			return ipk_err_set(err, IPK_EXIT_DATAERR, "streamed restore of '%s': no base here", s->domain);
		if (!streamed && srv_file(s, cJSON_GetStringValue(cJSON_GetObjectItem(j, "name")), path, sizeof(path), err) < 0)
			return -1;
		int lrc = streamed ? srv_restore_streamed(s, &t_apply, &t_restore, &sbytes, err) : virDomainRestore(s->c, path);
		if (!streamed)
			t_restore = ipk_mono() - t0;
		if (lrc < 0) {
			if (!streamed)
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
		if (r) {
			cJSON_AddNumberToObject(r, "seconds", ipk_mono() - t0);
			cJSON_AddNumberToObject(r, "restore_seconds", t_restore);
			if (streamed)
				cJSON_AddNumberToObject(r, "apply_seconds", t_apply);
		}
		return srv_reply(s, r, err);
	}
	if (!strcmp(op, "gpucheck")) {
		/* the GPU check runs here, on the target; the sender judges it */
		cJSON *r = msg_new("gpuchecked");
		if (!r || ipk_gpucheck_reply(cJSON_GetStringValue(cJSON_GetObjectItem(j, "mode")), r) < 0) {
			cJSON_Delete(r);
			return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		}
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
			if (e.code == IPK_EXIT_DATAERR && ipk_transport_broken(t)) {
				/* a bad frame in a streamed delta: the sender is still
				 * sending; it gets the error and the rest is drained */
				cJSON_Delete(j);
				break;
			}
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
