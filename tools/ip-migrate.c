/* ip-migrate - move a session's guest to another host, verify it there,
 * stop it on the source, and roll back when anything fails. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "gpucheck.h"
#include "migrate.h"
#include "record.h"
#include "transport.h"

enum {
	OPT_LISTEN = 256, OPT_SERVE_STDIO, OPT_ONCE, OPT_IMAGE_DIR, OPT_KEY_FILE, OPT_TARGET_URI, OPT_SOURCE_SOCK,
	OPT_TARGET_SOCK, OPT_EXPECT, OPT_CHECK_CMD, OPT_CHECK_URL, OPT_VERIFY_TIMEOUT, OPT_TIMEOUT, OPT_BWLIMIT,
	OPT_KEEP, OPT_ENGINE, OPT_MIGRATE_URI, OPT_COMPRESSED, OPT_PARALLEL, OPT_MAX_DOWNTIME, OPT_SSH, OPT_REMOTE,
	OPT_REMOTE_DIR, OPT_CONFIRM_IDLE, OPT_MAP, OPT_FROM, OPT_PRECOPY, OPT_NO_DELTA, OPT_CAPTURE,
	OPT_NO_STREAM, OPT_ADDRESS,
	OPT_VERIFY_GPU, OPT_GPU_CHECK,
};

static const struct ipk_opt opts[] = {
	{ "to", required_argument, 't', "URL", "receiver: tcp://ADDR:PORT (a --listen receiver) or ssh://[USER@]HOST[:PORT]" },
	{ "domain", required_argument, 'd', "NAME", "libvirt domain (the session's guest) to move" },
	{ "source-uri", required_argument, 'c', "URI", "libvirt URI of the source host (default: libvirt's default)" },
	{ "target-uri", required_argument, OPT_TARGET_URI, "URI", "libvirt URI of the target, as the receiver opens it" },
	{ "image-dir", required_argument, OPT_IMAGE_DIR, "DIR", "where images are written on this side (default .)" },
	{ "key-file", required_argument, 'k', "FILE", "pre-shared key (16..256 bytes) for tcp:// and --listen" },
	{ "source-sock", required_argument, OPT_SOURCE_SOCK, "PATH", "guest control socket on the source ({domain} is replaced)" },
	{ "target-sock", required_argument, OPT_TARGET_SOCK, "PATH", "guest control socket on the target ({domain} is replaced)" },
	{ "expect-checksum", required_argument, OPT_EXPECT, "HEX", "frame checksum the guest must answer (default: the source's answer)" },
	{ "check-cmd", required_argument, OPT_CHECK_CMD, "CMD", "user check run after the restore; must exit 0" },
	{ "check-url", required_argument, OPT_CHECK_URL, "URL", "HTTP URL that must answer 2xx after the restore" },
	{ "verify-gpu", required_argument, OPT_VERIFY_GPU, "MODE", "GPU rendering check on the target after the restore: auto (default: where it has a GPU), yes (required) or no" },
	{ "gpu-check", no_argument, OPT_GPU_CHECK, NULL, "run the GPU rendering check on this host, print a gpucheck record and exit" },
	{ "verify-timeout", required_argument, OPT_VERIFY_TIMEOUT, "SECONDS", "limit for each verification step (default 30)" },
	{ "timeout", required_argument, OPT_TIMEOUT, "SECONDS", "a transfer without progress for this long fails (default 30)" },
	{ "bwlimit", required_argument, OPT_BWLIMIT, "RATE", "send at most RATE bytes/s (suffix K, M, G)" },
	{ "precopy", no_argument, OPT_PRECOPY, NULL, "only send a live image of the running guest, the base of a later delta" },
	{ "capture", required_argument, OPT_CAPTURE, "MODE", "final image: auto (default: live unless the source's live images miss writes), live (written while the guest runs, halted at the end) or save" },
	{ "no-delta", no_argument, OPT_NO_DELTA, NULL, "send the full image even when the target holds a pre-copied base" },
	{ "no-stream", no_argument, OPT_NO_STREAM, NULL, "delta: the target writes the rebuilt image to a file before restoring it (default: restores while it applies)" },
	{ "address", required_argument, OPT_ADDRESS, "HOST:PORT", "the session's address for clients on the target, put in migration records ({host}: the target's host)" },
	{ "keep", no_argument, OPT_KEEP, NULL, "keep the source's final image (and the receiver's) after success" },
	{ "engine", required_argument, OPT_ENGINE, "ENGINE", "save (default: save, transfer, restore) or libvirt (native live migration)" },
	{ "migrate-uri", required_argument, OPT_MIGRATE_URI, "URI", "engine libvirt: migration data URI, e.g. tcp://10.0.0.2" },
	{ "compressed", no_argument, OPT_COMPRESSED, NULL, "engine libvirt: compress the migration stream" },
	{ "parallel", required_argument, OPT_PARALLEL, "N", "engine libvirt: parallel connections" },
	{ "max-downtime", required_argument, OPT_MAX_DOWNTIME, "SECONDS", "engine libvirt: maximum downtime" },
	{ "ssh-command", required_argument, OPT_SSH, "CMD", "ssh program and options for ssh:// (default ssh)" },
	{ "remote-command", required_argument, OPT_REMOTE, "CMD", "ip-migrate on the target for ssh:// (default ip-migrate)" },
	{ "remote-image-dir", required_argument, OPT_REMOTE_DIR, "DIR", "ssh://: the receiver's --image-dir (default /var/lib/ipkit/images)" },
	{ "listen", required_argument, 'l', "ADDR:PORT", "be the receiver: accept senders on ADDR:PORT (needs --key-file)" },
	{ "serve-stdio", no_argument, OPT_SERVE_STDIO, NULL, "be the receiver on standard input and output (what ssh:// runs)" },
	{ "once", no_argument, OPT_ONCE, NULL, "receiver: serve one sender, then exit with its status" },
	{ "confirm-idle", required_argument, OPT_CONFIRM_IDLE, "SECONDS", "stream mode: migrate a warm session idle this long (default 10)" },
	{ "map", required_argument, OPT_MAP, "SESSION=DOMAIN", "stream mode: the domain of SESSION (default: the session name)" },
	{ "from", required_argument, OPT_FROM, "HOST", "source host name in migration records (default: the source URI's host)" },
	{ NULL, 0, 0, NULL, NULL },
};

static const struct ipk_prog prog = {
	.name = "ip-migrate",
	.synopsis = "[OPTION]... --to URL --domain NAME | --to URL [OPTION]... (stream mode) | --listen ADDR:PORT | --serve-stdio",
	.summary = "Move a session's libvirt guest to another host, verify it there and stop it on the source, "
		   "rolling back on any failure; without --domain, act on reservation and prediction records on stdin.",
	.opts = opts,
};

struct conf {
	struct ipk_cli *cli;
	struct ipk_migrate_opts mo;
	const char *to, *key_file, *ssh_cmd, *remote_cmd, *remote_dir, *from;
	const char *source_sock_t, *target_sock_t;
	const char *address_t; /* --address template */
	const char *address;   /* stream mode: the reservation's address, when it gives one */
	uint8_t *key;
	size_t keylen;
	double timeout, bwlimit, confirm_idle;
	uint64_t corrupt_after;
	const char *hook; /* test hook "PHASE:COMMAND" */
	struct ipk_cli_pairs map; /* --map SESSION=DOMAIN */
	int told_capture;          /* the capture_why notice was given */
};

/* ---- connections -------------------------------------------------------- */

static int split_hostport(const char *s, char *host, size_t hn, char *port, size_t pn)
{
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || !colon[1])
		return -1;
	const char *h = s;
	size_t hl = (size_t)(colon - s);
	if (*h == '[' && hl >= 2 && h[hl - 1] == ']')
		h++, hl -= 2;
	if (hl >= hn || strlen(colon + 1) >= pn)
		return -1;
	memcpy(host, h, hl);
	host[hl] = 0;
	strcpy(port, colon + 1);
	return 0;
}

/* Requests are small frames answered at once: send each as it is written
 * (frames go out whole, see the transport). */
static void no_delay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int tcp_connect(const char *hostport, double timeout, struct ipk_err *err)
{
	char host[256], port[32];
	if (split_hostport(hostport, host, sizeof(host), port, sizeof(port)) < 0)
		return ipk_err_set(err, IPK_EXIT_USAGE, "bad address '%s' (want ADDR:PORT)", hostport);
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	int g = getaddrinfo(host, port, &hints, &ai);
	if (g)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "resolve '%s': %s", hostport, gai_strerror(g));
	int fd = -1, e = 0;
	for (struct addrinfo *a = ai; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			socklen_t l = sizeof(e);
			if (poll(&p, 1, (int)(timeout * 1000)) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) == 0 && !e)
				break;
			if (!e)
				e = ETIMEDOUT;
		} else {
			e = errno;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "connect to '%s': %s", hostport, strerror(e ? e : ECONNREFUSED));
	no_delay(fd);
	return fd;
}

/* Append s to buf single-quoted for a remote shell. */
static void shq(char *buf, size_t n, const char *s)
{
	size_t l = strlen(buf);
	if (l + 3 >= n)
		return;
	buf[l++] = '\'';
	for (; *s && l + 5 < n; s++) {
		if (*s == '\'') {
			memcpy(buf + l, "'\\''", 4);
			l += 4;
		} else {
			buf[l++] = *s;
		}
	}
	buf[l++] = '\'';
	buf[l] = 0;
}

/* Start the receiver through ssh; rfd and wfd get its stdout and stdin. */
static pid_t ssh_start(struct conf *c, const char *dest, int *rfd, int *wfd, struct ipk_err *err)
{
	char userhost[256], port[32] = "";
	const char *colon = strrchr(dest, ':');
	if (colon && !strchr(colon, ']')) {
		snprintf(userhost, sizeof(userhost), "%.*s", (int)(colon - dest), dest);
		snprintf(port, sizeof(port), "%s", colon + 1);
	} else {
		snprintf(userhost, sizeof(userhost), "%s", dest);
	}
	char remote[8192] = "";
	shq(remote, sizeof(remote), c->remote_cmd ? c->remote_cmd : "ip-migrate");
	strcat(remote, " --serve-stdio --image-dir ");
	shq(remote, sizeof(remote), c->remote_dir ? c->remote_dir : "/var/lib/ipkit/images");
	if (c->cli->verbose > 0)
		strcat(remote, " -v");
	char *sshdup = strdup(c->ssh_cmd ? c->ssh_cmd : "ssh");
	char *argv[64];
	int argc = 0;
	for (char *tok = strtok(sshdup, " \t"); tok && argc < 56; tok = strtok(NULL, " \t"))
		argv[argc++] = tok;
	if (port[0]) {
		argv[argc++] = "-p";
		argv[argc++] = port;
	}
	argv[argc++] = "-o";
	argv[argc++] = "BatchMode=yes";
	argv[argc++] = "--";
	argv[argc++] = userhost;
	argv[argc++] = remote;
	argv[argc] = NULL;
	int in[2], out[2];
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
		free(sshdup);
		return ipk_err_set(err, IPK_EXIT_OSERR, "pipe: %s", strerror(errno));
	}
	pid_t pid = fork();
	if (pid < 0) {
		free(sshdup);
		return ipk_err_set(err, IPK_EXIT_OSERR, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		signal(SIGPIPE, SIG_DFL);
		execvp(argv[0], argv);
		fprintf(stderr, "ip-migrate: run '%s': %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	free(sshdup);
	close(in[0]);
	close(out[1]);
	*wfd = in[1];
	*rfd = out[0];
	return pid;
}

/* Connect and authenticate to --to; returns the transport or NULL. */
static struct ipk_transport *open_target(struct conf *c, pid_t *child, struct ipk_err *err)
{
	struct ipk_transport_opts to = { .key = c->key, .keylen = c->keylen, .timeout = c->timeout,
					 .bwlimit = c->bwlimit, .peer = c->to, .corrupt_after = c->corrupt_after };
	int rfd = -1, wfd = -1;
	*child = -1;
	if (!strncmp(c->to, "tcp://", 6)) {
		rfd = wfd = tcp_connect(c->to + 6, c->timeout, err);
		if (rfd < 0)
			return NULL;
	} else {
		*child = ssh_start(c, c->to + 6, &rfd, &wfd, err);
		if (*child < 0)
			return NULL;
	}
	struct ipk_transport *t = ipk_transport_new(rfd, wfd, 1, &to, err);
	if (!t)
		return NULL;
	if (ipk_transport_handshake(t, 0, err) < 0) {
		if (*child > 0 && err->code == IPK_EXIT_TEMPFAIL)
			err->code = IPK_EXIT_UNAVAILABLE; /* ssh or the remote command failed */
		ipk_transport_free(t);
		return NULL;
	}
	return t;
}

static void reap(pid_t child)
{
	if (child > 0) {
		int st;
		waitpid(child, &st, 0);
	}
}

/* ---- the sender ---------------------------------------------------------- */

static int run_hook(void *ctx, int phase, struct ipk_err *err)
{
	struct conf *c = ctx;
	ipk_debug(c->cli, "phase %s", ipk_mig_phase_name(phase));
	if (!c->hook)
		return 0;
	const char *colon = strchr(c->hook, ':');
	const char *name = ipk_mig_phase_name(phase);
	if (!colon || (size_t)(colon - c->hook) != strlen(name) || strncmp(c->hook, name, strlen(name)) != 0)
		return 0;
	int rc = system(colon + 1);
	if (rc != 0)
		return ipk_err_set(err, IPK_EXIT_FAIL, "test hook for phase %s: exit %d", name, rc);
	return 0;
}

/* Every key in t replaced by d (NULL for t NULL or no memory). */
static char *subst_key(const char *t, const char *key, const char *d)
{
	if (!t)
		return NULL;
	size_t kl = strlen(key), n = strlen(t) + 1;
	for (const char *p = t; (p = strstr(p, key)); p += kl)
		n += strlen(d);
	char *s = malloc(n), *o = s;
	if (!s)
		return NULL;
	while (*t) {
		if (!strncmp(t, key, kl)) {
			o = stpcpy(o, d);
			t += kl;
		} else {
			*o++ = *t++;
		}
	}
	*o = 0;
	return s;
}

/* "{domain}" in t replaced by d. */
static char *subst(const char *t, const char *d)
{
	return subst_key(t, "{domain}", d);
}

/* A host name for a record: the URI's host, else the fallback's, else
 * this machine's name. */
static void record_host(const char *uri, const char *fallback, char *out, size_t n)
{
	ipk_url_host(uri, out, n);
	if (!out[0] && fallback)
		ipk_url_host(fallback, out, n);
	if (!out[0] && gethostname(out, n) < 0)
		snprintf(out, n, "localhost");
}

static cJSON *migration_record(const struct conf *c, const char *session, const struct ipk_migrate_result *r, int rc,
			       const struct ipk_err *e)
{
	cJSON *j = ipk_record_new("migration", ipk_now());
	if (!j)
		return NULL;
	const char *outcome = rc == 0 ? "success" : r->rolled_back ? "rolled-back" : "failed";
	char from[256], to[256];
	record_host(c->mo.source_uri, NULL, from, sizeof(from));
	record_host(c->mo.target_uri, c->to, to, sizeof(to));
	cJSON_AddStringToObject(j, "session", session);
	cJSON_AddStringToObject(j, "from", c->from ? c->from : from);
	cJSON_AddStringToObject(j, "to", to);
	if (c->mo.target_uri)
		cJSON_AddStringToObject(j, "target_uri", c->mo.target_uri);
	/* where clients reach the session now (for ip-redirect): the
	 * reservation's address, else --address with {host} replaced */
	const char *addr_t = c->address && *c->address ? c->address : c->address_t;
	if (addr_t && rc == 0 && !c->mo.precopy) {
		char *addr = subst_key(addr_t, "{host}", to);
		if (addr)
			cJSON_AddStringToObject(j, "address", addr);
		free(addr);
	}
	cJSON_AddStringToObject(j, "outcome", outcome);
	cJSON_AddStringToObject(j, "phase", ipk_mig_phase_name(r->phase));
	cJSON_AddStringToObject(j, "engine", c->mo.engine == IPK_ENGINE_LIBVIRT ? "libvirt" : "save");
	cJSON *s = cJSON_AddObjectToObject(j, "seconds");
	static const int shown[] = { IPK_MIG_PRECHECK, IPK_MIG_CAPTURE, IPK_MIG_TRANSFER, IPK_MIG_APPLY,
				     IPK_MIG_RESTORE,  IPK_MIG_VERIFY,  IPK_MIG_RELEASE,  IPK_MIG_ROLLBACK };
	for (size_t i = 0; s && i < sizeof(shown) / sizeof(shown[0]); i++)
		if (r->seconds[shown[i]] > 0)
			cJSON_AddNumberToObject(s, ipk_mig_phase_name(shown[i]), round(r->seconds[shown[i]] * 1e3) / 1e3);
	if (s && !r->full_image && c->mo.engine != IPK_ENGINE_LIBVIRT)
		cJSON_AddNumberToObject(s, "delta", round(r->t_delta * 1e3) / 1e3);
	if (!c->mo.precopy && r->phase > IPK_MIG_PRECHECK)
		cJSON_AddStringToObject(j, "capture", r->capture_live ? "live" : c->mo.engine == IPK_ENGINE_LIBVIRT ? "paused" : "save");
	if (!c->mo.precopy && r->capture_why[0])
		cJSON_AddStringToObject(j, "capture_untrusted", r->capture_why);
	if (s && (r->target_apply > 0 || r->target_restore > 0)) {
		/* as the target measured them; with "streamed" they overlap */
		cJSON *ts = cJSON_AddObjectToObject(j, "target_seconds");
		if (ts && r->target_apply > 0)
			cJSON_AddNumberToObject(ts, "apply", round(r->target_apply * 1e3) / 1e3);
		if (ts && r->target_restore > 0)
			cJSON_AddNumberToObject(ts, "restore", round(r->target_restore * 1e3) / 1e3);
		if (ts && r->target_verify_answer > 0)
			cJSON_AddNumberToObject(ts, "verify_answer", round(r->target_verify_answer * 1e3) / 1e3);
		if (ts && r->target_verify_advance > 0)
			cJSON_AddNumberToObject(ts, "verify_advance", round(r->target_verify_advance * 1e3) / 1e3);
	}
	if (c->mo.engine != IPK_ENGINE_LIBVIRT && !r->full_image && r->delta_bytes)
		cJSON_AddBoolToObject(j, "streamed", r->streamed);
	if (r->capture_stopped > 0)
		cJSON_AddNumberToObject(j, "capture_stopped_s", round(r->capture_stopped * 1e3) / 1e3);
	if (r->capture_pause > 0)
		cJSON_AddNumberToObject(j, "capture_pause_s", round(r->capture_pause * 1e3) / 1e3);
	if (r->delta_bytes)
		cJSON_AddNumberToObject(j, "delta_bytes", (double)r->delta_bytes);
	if (r->base_id[0])
		cJSON_AddStringToObject(j, "base", r->base_id);
	cJSON_AddNumberToObject(j, "bytes_wire", (double)r->bytes_wire);
	if (r->image_bytes)
		cJSON_AddNumberToObject(j, "image_bytes", (double)r->image_bytes);
	if (r->bytes_skipped)
		cJSON_AddNumberToObject(j, "bytes_skipped", (double)r->bytes_skipped);
	if (r->downtime > 0)
		cJSON_AddNumberToObject(j, "downtime_s", round(r->downtime * 1e3) / 1e3);
	if (r->after_verified > 0)
		cJSON_AddNumberToObject(j, "after_verified_s", round(r->after_verified * 1e3) / 1e3);
	if (r->verified_ts > 0)
		cJSON_AddNumberToObject(j, "verified_ts", round(r->verified_ts * 1e3) / 1e3);
	if (c->mo.engine != IPK_ENGINE_LIBVIRT)
		cJSON_AddBoolToObject(j, "full_image", r->full_image);
	if (r->checksum[0])
		cJSON_AddStringToObject(j, "checksum", r->checksum);
	cJSON *g = r->gpu.status != IPK_GPUCHECK_NOT_RUN ? cJSON_AddObjectToObject(j, "gpu") : NULL;
	if (g)
		ipk_gpucheck_to_json(&r->gpu, g);
	if (r->counter_before || r->counter_after) {
		cJSON_AddNumberToObject(j, "counter_before", (double)r->counter_before);
		cJSON_AddNumberToObject(j, "counter_after", (double)r->counter_after);
	}
	cJSON_AddStringToObject(j, "where", r->where);
	if (rc != 0) {
		cJSON_AddStringToObject(j, "error", e->msg);
		cJSON_AddNumberToObject(j, "code", e->code);
	}
	return j;
}

/* A pre-copy's record: a snapshot record of the live image now on B. */
static cJSON *precopy_record(const struct conf *c, const char *session, const char *domain,
			     const struct ipk_migrate_result *r)
{
	cJSON *j = ipk_record_new("snapshot", ipk_now());
	if (!j)
		return NULL;
	char src[600];
	snprintf(src, sizeof(src), "%s %s", c->mo.source_uri ? c->mo.source_uri : "(default)", domain);
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s.base", c->mo.image_dir ? c->mo.image_dir : ".", domain);
	cJSON_AddStringToObject(j, "id", r->base_id);
	cJSON_AddStringToObject(j, "path", path);
	cJSON_AddStringToObject(j, "source", src);
	cJSON_AddStringToObject(j, "session", session);
	cJSON_AddNumberToObject(j, "bytes", (double)r->image_bytes);
	cJSON_AddBoolToObject(j, "live", 1);
	cJSON_AddNumberToObject(j, "seconds", round((r->seconds[IPK_MIG_CAPTURE] + r->seconds[IPK_MIG_TRANSFER]) * 1e3) / 1e3);
	cJSON_AddStringToObject(j, "to", c->mo.target_uri ? c->mo.target_uri : c->to);
	cJSON_AddNumberToObject(j, "bytes_wire", (double)r->bytes_wire);
	if (r->bytes_skipped)
		cJSON_AddNumberToObject(j, "bytes_skipped", (double)r->bytes_skipped);
	return j;
}

/* Migrate one domain; writes its record. Returns 0 or the exit code. */
static int migrate_one(struct conf *c, const char *session, const char *domain, struct ipk_writer *out,
		       struct ipk_err *err)
{
	struct ipk_migrate_opts mo = c->mo;
	mo.domain = domain;
	char *ss = subst(c->source_sock_t, domain), *ts = subst(c->target_sock_t, domain);
	mo.source_sock = ss;
	mo.target_sock = ts;
	struct ipk_migrate_result r;
	pid_t child = -1;
	struct ipk_transport *t = NULL;
	int rc;
	memset(&r, 0, sizeof(r));
	r.phase = IPK_MIG_PRECHECK;
	snprintf(r.where, sizeof(r.where), "source");
	if (mo.engine != IPK_ENGINE_LIBVIRT && !(t = open_target(c, &child, err)))
		rc = -1;
	else
		rc = ipk_migrate(t, &mo, &r, err);
	ipk_transport_free(t);
	reap(child);
	if (r.capture_why[0] && !mo.precopy && !c->told_capture) {
		c->told_capture = 1;
		if (r.capture_live)
			ipk_warn(c->cli, "'%s': live capture forced although %s", domain, r.capture_why);
		else if (mo.capture == IPK_CAPTURE_AUTO)
			ipk_warn(c->cli, "'%s': %s: the guest is paused while its final image is written (--capture live forces a live one)",
				 domain, r.capture_why);
	}
	if (rc == 0 && mo.precopy) {
		ipk_info(c->cli, "'%s': live image (base %s, %llu bytes) now on %s; the guest runs on the source", domain,
			 r.base_id, (unsigned long long)r.image_bytes, c->to);
	} else if (rc == 0) {
		ipk_info(c->cli, "'%s' runs on %s, verified (counter %llu -> %llu, downtime %.3f s, %llu bytes on the wire%s)",
			 domain, mo.target_uri ? mo.target_uri : c->to, (unsigned long long)r.counter_before,
			 (unsigned long long)r.counter_after, r.downtime, (unsigned long long)r.bytes_wire,
			 r.full_image ? ", full image: no pre-copied base" : "");
	} else {
		ipk_warn(c->cli, "%s", err->msg);
		ipk_warn(c->cli, "'%s' %s (failed in phase %s)", domain,
			 r.rolled_back ? "rolled back: it runs on the source" :
			 !strcmp(r.where, "source-unverified") ? "restored on the source but NOT verified: see the message above" :
			 r.rollback_failed ? "NOT restored: see the message above" : "not moved: it runs on the source",
			 ipk_mig_phase_name(r.phase));
	}
	cJSON *rec = mo.precopy && rc == 0 ? precopy_record(c, session, domain, &r) : migration_record(c, session, &r, rc, err);
	struct ipk_err werr = { 0 };
	if (rec && ipk_write(out, rec, &werr) < 0 && !ipk_writer_closed(out))
		ipk_warn(c->cli, "%s", werr.msg);
	cJSON_Delete(rec);
	free(ss);
	free(ts);
	return rc == 0 ? 0 : err->code ? err->code : IPK_EXIT_SOFTWARE;
}

/* ---- stream mode ---------------------------------------------------------- */

struct sess {
	char *name;
	int warm, done;
	char *host, *address;
};

static int run_stream(struct conf *c, struct ipk_writer *out, struct ipk_err *err)
{
	struct ipk_reader *rd = ipk_reader_from(stdin, "<stdin>");
	if (!rd)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory"), IPK_EXIT_OSERR;
	struct sess *ss = NULL;
	int ns = 0, status = 0;
	struct ipk_record rec;
	for (;;) {
		struct ipk_err rerr = { 0 };
		enum ipk_read_result rr = ipk_cli_next_record(c->cli, rd, &rec, &rerr);
		if (rr == IPK_READ_EOF)
			break;
		if (rr == IPK_READ_ERROR) {
			*err = rerr;
			status = rerr.code;
			break;
		}
		int is_res = !strcmp(rec.type, "reservation"), is_pred = !strcmp(rec.type, "prediction");
		if ((!is_res && !is_pred) || !rec.session) {
			if (ipk_write_raw(out, rec.line, rec.len, err) < 0) {
				status = err->code;
				break;
			}
			continue;
		}
		struct sess *s = NULL;
		for (int i = 0; i < ns; i++)
			if (!strcmp(ss[i].name, rec.session))
				s = &ss[i];
		if (!s) {
			struct sess *n = realloc(ss, (size_t)(ns + 1) * sizeof(*ss));
			if (!n) {
				ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
				status = IPK_EXIT_OSERR;
				break;
			}
			ss = n;
			s = &ss[ns++];
			memset(s, 0, sizeof(*s));
			s->name = strdup(rec.session);
		}
		if (is_res) {
			const char *st = ipk_json_str(rec.json, "state", "");
			s->warm = !strcmp(st, "warm");
			if (s->warm)
				s->done = 0; /* a new warm reservation re-arms the session */
			free(s->host);
			s->host = strdup(ipk_json_str(rec.json, "host", ""));
			free(s->address);
			s->address = strdup(ipk_json_str(rec.json, "address", ""));
			continue;
		}
		double idle = ipk_json_num(rec.json, "idle_s", 0);
		if (!s->warm || s->done || idle < c->confirm_idle)
			continue;
		s->done = 1;
		const char *domain = ipk_cli_pair_get(&c->map, s->name);
		if (!domain)
			domain = s->name;
		const char *saved = c->mo.target_uri;
		if (!c->mo.target_uri && s->host && *s->host)
			c->mo.target_uri = s->host;
		c->address = s->address;
		ipk_info(c->cli, "session '%s' idle %.1f s with a warm reservation: migrating '%s'", s->name, idle, domain);
		struct ipk_err e = { 0 };
		migrate_one(c, s->name, domain, out, &e);
		c->mo.target_uri = saved;
		c->address = NULL;
		if (ipk_writer_closed(out))
			break;
	}
	for (int i = 0; i < ns; i++) {
		free(ss[i].name);
		free(ss[i].host);
		free(ss[i].address);
	}
	free(ss);
	ipk_reader_close(rd);
	return status;
}

/* ---- the receiver ----------------------------------------------------------- */

static int serve_one(struct conf *c, int rfd, int wfd, const char *peer, const struct ipk_serve_opts *so)
{
	struct ipk_err err = { 0 };
	struct ipk_transport_opts to = { .key = c->key, .keylen = c->keylen, .timeout = c->timeout, .peer = peer };
	struct ipk_transport *t = ipk_transport_new(rfd, wfd, rfd != 0, &to, &err);
	if (!t)
		return ipk_fail(c->cli, &err);
	int status = 0;
	if (ipk_transport_handshake(t, 1, &err) < 0) {
		ipk_warn(c->cli, "refused '%s': %s", peer, err.msg);
		status = err.code;
	} else {
		struct ipk_serve_result sr;
		ipk_info(c->cli, "'%s' authenticated", peer);
		if (ipk_migrate_serve(t, so, &sr, &err) < 0) {
			ipk_warn(c->cli, "session '%s' from '%s': %s (anything restored here was removed)", sr.domain, peer,
				 err.msg);
			status = err.code ? err.code : IPK_EXIT_FAIL;
		} else {
			ipk_info(c->cli, "session '%s' from '%s': %s", sr.domain, peer, sr.committed ? "committed, runs here" : "aborted");
		}
	}
	ipk_transport_free(t);
	return status;
}

static int listen_loop(struct conf *c, const char *addr, int once, const struct ipk_serve_opts *so)
{
	char host[256], port[32];
	struct ipk_err err = { 0 };
	if (split_hostport(addr, host, sizeof(host), port, sizeof(port)) < 0)
		return ipk_cli_usage_error(c->cli, "invalid --listen '%s' (want ADDR:PORT)", addr);
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
	int g = getaddrinfo(host, port, &hints, &ai);
	if (g) {
		ipk_err_set(&err, IPK_EXIT_UNAVAILABLE, "resolve '%s': %s", addr, gai_strerror(g));
		return ipk_fail(c->cli, &err);
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4) < 0) {
		ipk_err_set(&err, IPK_EXIT_UNAVAILABLE, "listen on '%s': %s", addr, strerror(errno));
		freeaddrinfo(ai);
		if (fd >= 0)
			close(fd);
		return ipk_fail(c->cli, &err);
	}
	freeaddrinfo(ai);
	ipk_info(c->cli, "listening on %s", addr);
	int status = 0;
	for (;;) {
		struct sockaddr_storage sa;
		socklen_t sl = sizeof(sa);
		int cfd = accept4(fd, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EINTR)
				continue;
			ipk_err_set(&err, IPK_EXIT_IOERR, "accept on '%s': %s", addr, strerror(errno));
			status = ipk_fail(c->cli, &err);
			break;
		}
		no_delay(cfd);
		char ph[128] = "?", ps[32] = "?", peer[200];
		getnameinfo((struct sockaddr *)&sa, sl, ph, sizeof(ph), ps, sizeof(ps), NI_NUMERICHOST | NI_NUMERICSERV);
		snprintf(peer, sizeof(peer), "%s:%s", ph, ps);
		status = serve_one(c, cfd, cfd, peer, so);
		if (once)
			break;
	}
	close(fd);
	return status;
}

/* ---- the GPU check alone ---------------------------------------------------- */

/* --gpu-check: run it here, write its record. Returns the exit status: 0
 * pass, 1 wrong pixels or a CUDA error, 69 no GPU. */
static int gpu_check(struct conf *c)
{
	struct ipk_gpucheck_opts go = { 0 };
	const char *e = getenv("IPKIT_GPUCHECK_TEST_CORRUPT"); /* test hook: flip pixel N-1 on the GPU */
	if (e && *e)
		go.corrupt_pixel = strtol(e, NULL, 10);
	struct ipk_gpucheck_result r;
	struct ipk_err err = { 0 }, werr = { 0 };
	int rc = ipk_gpucheck_run(&go, &r, &err);
	char host[256];
	if (gethostname(host, sizeof(host)) < 0)
		snprintf(host, sizeof(host), "localhost");
	struct ipk_writer out;
	ipk_writer_init(&out, stdout);
	cJSON *rec = ipk_gpucheck_record(&r, host);
	if (!rec || ipk_write(&out, rec, &werr) < 0 || ipk_writer_finish(&out, &werr) < 0) {
		cJSON_Delete(rec);
		if (ipk_writer_closed(&out))
			return rc == 0 ? 0 : err.code;
		if (!rec)
			ipk_err_set(&werr, IPK_EXIT_OSERR, "out of memory");
		return ipk_fail(c->cli, &werr);
	}
	cJSON_Delete(rec);
	if (rc < 0)
		return ipk_fail(c->cli, &err);
	ipk_info(c->cli, "gpu check on '%s': pass, %d x %d x %d frames = %llu pixels, kernel %.3f ms, whole check %.0f ms, checksum %s",
		 r.device, r.width, r.height, r.frames, (unsigned long long)r.pixels, r.gpu_ms, r.total_ms, r.checksum);
	return 0;
}

/* ---- main ------------------------------------------------------------------- */

static int parse_rate(const char *s, double *out)
{
	char *end;
	double v = strtod(s, &end);
	double m = 1;
	if (*end == 'K' || *end == 'k')
		m = 1024, end++;
	else if (*end == 'M' || *end == 'm')
		m = 1024 * 1024, end++;
	else if (*end == 'G' || *end == 'g')
		m = 1024.0 * 1024 * 1024, end++;
	if (end == s || *end || !(v > 0))
		return -1;
	*out = v * m;
	return 0;
}

static int cmd_migrate(int argc, char **argv)
{
	struct ipk_cli cli;
	struct conf c = { .cli = &cli, .timeout = 30, .confirm_idle = 10 };
	const char *listen_addr = NULL;
	int serve_stdio = 0, once = 0, status = 0, gpu_only = 0;
	long lv;
	struct ipk_err err = { 0 };
	struct ipk_writer out;

	c.mo.verify_timeout = 30;
	c.mo.verify_gpu = IPK_GPUCHECK_AUTO;
	if (ipk_cli_init(&cli, &prog, argc, argv) < 0) {
		status = ipk_fail(&cli, &cli.err);
		goto done;
	}
	int o;
	while ((o = ipk_cli_next(&cli)) >= 0) {
		const char *a = cli.optarg;
		int bad = 0;
		switch (o) {
		case 't':
			c.to = a;
			if (strncmp(a, "tcp://", 6) && strncmp(a, "ssh://", 6))
				bad = ipk_cli_usage_error(&cli, "invalid --to '%s' (want tcp://ADDR:PORT or ssh://HOST)", a);
			break;
		case 'd': c.mo.domain = a; break;
		case 'c': c.mo.source_uri = a; break;
		case OPT_TARGET_URI: c.mo.target_uri = a; break;
		case OPT_IMAGE_DIR: c.mo.image_dir = a; break;
		case 'k': c.key_file = a; break;
		case OPT_SOURCE_SOCK: c.source_sock_t = a; break;
		case OPT_TARGET_SOCK: c.target_sock_t = a; break;
		case OPT_EXPECT: c.mo.expect_checksum = a; break;
		case OPT_CHECK_CMD: c.mo.check_cmd = a; break;
		case OPT_CHECK_URL: c.mo.check_url = a; break;
		case OPT_VERIFY_TIMEOUT: bad = ipk_parse_double(&cli, "verify-timeout", a, 0.1, 3600, &c.mo.verify_timeout); break;
		case OPT_TIMEOUT: bad = ipk_parse_double(&cli, "timeout", a, 0.1, 3600, &c.timeout); break;
		case OPT_BWLIMIT:
			if (parse_rate(a, &c.bwlimit) < 0)
				bad = ipk_cli_usage_error(&cli, "invalid --bwlimit '%s' (bytes/s, suffix K, M, G)", a);
			break;
		case OPT_KEEP: c.mo.keep = 1; break;
		case OPT_PRECOPY: c.mo.precopy = 1; break;
		case OPT_NO_DELTA: c.mo.no_delta = 1; break;
		case OPT_NO_STREAM: c.mo.no_stream = 1; break;
		case OPT_ADDRESS: c.address_t = a; break;
		case OPT_CAPTURE:
			if (!strcmp(a, "auto"))
				c.mo.capture = IPK_CAPTURE_AUTO;
			else if (!strcmp(a, "live"))
				c.mo.capture = IPK_CAPTURE_LIVE;
			else if (!strcmp(a, "save"))
				c.mo.capture = IPK_CAPTURE_SAVE;
			else
				bad = ipk_cli_usage_error(&cli, "invalid --capture '%s' (auto, live or save)", a);
			break;
		case OPT_ENGINE:
			if (!strcmp(a, "save"))
				c.mo.engine = IPK_ENGINE_SAVE;
			else if (!strcmp(a, "libvirt"))
				c.mo.engine = IPK_ENGINE_LIBVIRT;
			else
				bad = ipk_cli_usage_error(&cli, "invalid --engine '%s' (save or libvirt)", a);
			break;
		case OPT_MIGRATE_URI: c.mo.native_uri = a; break;
		case OPT_COMPRESSED: c.mo.compressed = 1; break;
		case OPT_PARALLEL:
			bad = ipk_parse_long(&cli, "parallel", a, 1, 64, &lv);
			c.mo.parallel = (int)lv;
			break;
		case OPT_MAX_DOWNTIME: bad = ipk_parse_double(&cli, "max-downtime", a, 0.001, 3600, &c.mo.max_downtime); break;
		case OPT_SSH: c.ssh_cmd = a; break;
		case OPT_REMOTE: c.remote_cmd = a; break;
		case OPT_REMOTE_DIR: c.remote_dir = a; break;
		case 'l': listen_addr = a; break;
		case OPT_SERVE_STDIO: serve_stdio = 1; break;
		case OPT_ONCE: once = 1; break;
		case OPT_CONFIRM_IDLE: bad = ipk_parse_double(&cli, "confirm-idle", a, 0, 86400, &c.confirm_idle); break;
		case OPT_MAP: bad = ipk_cli_pair_add(&cli, &c.map, "map", "SESSION=DOMAIN"); break;
		case OPT_FROM: c.from = a; break;
		case OPT_VERIFY_GPU:
			if ((c.mo.verify_gpu = ipk_gpucheck_mode_parse(a)) < 0)
				bad = ipk_cli_usage_error(&cli, "invalid --verify-gpu '%s' (auto, yes or no)", a);
			break;
		case OPT_GPU_CHECK: gpu_only = 1; break;
		}
		if (bad) {
			status = cli.status ? cli.status : IPK_EXIT_USAGE;
			goto done;
		}
	}
	if (o == IPK_CLI_EXIT) {
		status = cli.status;
		goto done;
	}
	if (cli.optind < argc) {
		status = (ipk_cli_usage_error(&cli, "unexpected argument '%s'", argv[cli.optind]), IPK_EXIT_USAGE);
		goto done;
	}
	int roles = !!listen_addr + serve_stdio + !!c.to;
	if (gpu_only) {
		status = roles ? (ipk_cli_usage_error(&cli, "--gpu-check runs alone (not with --to, --listen or --serve-stdio)"),
				  IPK_EXIT_USAGE)
			       : gpu_check(&c);
		goto done;
	}
	if (c.mo.engine == IPK_ENGINE_LIBVIRT && c.mo.verify_gpu == IPK_GPUCHECK_REQUIRE) {
		status = (ipk_cli_usage_error(&cli, "--verify-gpu yes needs the save engine (no receiver runs on the target with --engine libvirt)"),
			  IPK_EXIT_USAGE);
		goto done;
	}
	if (roles != 1) {
		status = (ipk_cli_usage_error(&cli, roles ? "give only one of --to, --listen and --serve-stdio"
							  : "give --to URL (send) or --listen ADDR:PORT (receive)"),
			  IPK_EXIT_USAGE);
		goto done;
	}
	if (c.mo.precopy && (!c.mo.domain || c.mo.engine == IPK_ENGINE_LIBVIRT)) {
		status = (ipk_cli_usage_error(&cli, "--precopy needs --domain and the save engine"), IPK_EXIT_USAGE);
		goto done;
	}
	if (c.mo.engine == IPK_ENGINE_LIBVIRT && !c.mo.target_uri) {
		status = (ipk_cli_usage_error(&cli, "--engine libvirt needs --target-uri"), IPK_EXIT_USAGE);
		goto done;
	}
	if ((listen_addr || (c.to && !strncmp(c.to, "tcp://", 6) && c.mo.engine != IPK_ENGINE_LIBVIRT)) && !c.key_file) {
		status = (ipk_cli_usage_error(&cli, "%s needs --key-file (the direct TCP transport is always authenticated)",
					      listen_addr ? "--listen" : "--to tcp://"),
			  IPK_EXIT_USAGE);
		goto done;
	}
	if (c.key_file && !(c.key = ipk_key_file_read(c.key_file, &c.keylen, &err))) {
		status = ipk_fail(&cli, &err);
		goto done;
	}
	const char *e = getenv("IPKIT_MIGRATE_TEST_CORRUPT");
	if (e && *e)
		c.corrupt_after = strtoull(e, NULL, 10);
	c.hook = getenv("IPKIT_MIGRATE_TEST_HOOK");
	c.mo.hook = run_hook;
	c.mo.hook_ctx = &c;
	signal(SIGPIPE, SIG_IGN);

	struct ipk_serve_opts so = { .image_dir = c.mo.image_dir ? c.mo.image_dir : ".", .default_uri = c.mo.target_uri,
				     .keep = c.mo.keep };
	if (listen_addr) {
		status = listen_loop(&c, listen_addr, once, &so);
		goto done;
	}
	if (serve_stdio) {
		status = serve_one(&c, 0, 1, "ssh", &so);
		goto done;
	}
	ipk_writer_init(&out, stdout);
	if (c.mo.domain) {
		status = migrate_one(&c, c.mo.domain, c.mo.domain, &out, &err);
	} else {
		status = run_stream(&c, &out, &err);
		if (status && !ipk_writer_closed(&out))
			status = ipk_fail(&cli, &err);
	}
	struct ipk_err ferr = { 0 };
	if (!ipk_writer_closed(&out) && ipk_writer_finish(&out, &ferr) < 0 && !ipk_writer_closed(&out) && !status)
		status = ipk_fail(&cli, &ferr);
done:
	if (c.key) {
		memset(c.key, 0, c.keylen);
		free(c.key);
	}
	ipk_cli_pairs_free(&c.map);
	ipk_cli_free(&cli);
	return status;
}

int main(int argc, char **argv)
{
	return cmd_migrate(argc, argv);
}
