/* source_libvirt.c - per-domain activity from libvirt (see sources.h).
 *
 * One virConnectGetAllDomainStats() call per interval per connection, on a
 * read-only connection, for the active (running or paused) domains. From it:
 *   cpu          cpu.time delta / (elapsed * vcpu.current), 0..1 (capped:
 *                QEMU's own threads can push it a little over 1)
 *   cpu_s        cpu.time delta, seconds
 *   rx/tx_pkts, rx/tx_bytes       net.N.* deltas summed over interfaces
 *   blk_rd/wr_bytes, blk_rd/wr_reqs  block.N.* deltas summed over disks
 *   mem_bytes    balloon.current (KiB) * 1024, a gauge
 *   rss_bytes    balloon.rss (KiB) * 1024, a gauge, when libvirt reports it
 * A domain without interfaces (disks) has no network (block) fields.
 * Counters need a baseline: in the interval a domain first appears (or after
 * it restarted, or after a counter went backwards) its sample carries only
 * the gauges. Likewise a counter group missing from one reply (NOWAIT while
 * the domain has a job) is omitted then and re-baselined next time, so a
 * delta never spans more than one interval and is never negative. Paused
 * domains keep getting samples (their counters stand still).
 *
 * Sessions: --map by domain name or UUID, else the metadata element
 * <session> in IPK_LIBVIRT_META_NS, else the domain name; looked up once
 * when the domain appears.
 *
 * A domain that disappears (shut off, undefined, migrated away) gives one
 * warning; a connection that fails gives one warning, is closed, and is
 * reopened at most once per interval, after a TCP probe bounded by half the
 * interval (at most 5 s) for network transports, so a dead host costs little
 * per interval. The first connection is probed too (10 s bound), so a host
 * that drops packets fails in seconds rather than after the kernel's TCP
 * timeout. Not bounded: a peer that goes silent under an established
 * connection holds the stats call until TCP gives up (libvirt's keepalive
 * would catch it but needs a process-wide event loop thread).
 *
 * libvirt's default error printing goes to stderr; it is silenced here and
 * libvirt's message is put into the ipk_err / diagnostics instead.
 */
#define _GNU_SOURCE
#include "sources.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

enum { G_CPU, G_NET, G_BLK, G_COUNT };

/* Bound on the TCP probe before the first connection (milliseconds). */
#define IPK_LIBVIRT_CONNECT_MS 10000

struct lv_dom {
	unsigned char uuid[VIR_UUID_BUFLEN];
	char name[128];
	char session[128];
	unsigned int id;         /* libvirt's runtime id: changes when it restarts */
	int seen;                /* present in the current reply */
	int paused;
	int have[G_COUNT];       /* baseline of the group is valid */
	double t_cpu;            /* monotonic time of the cpu baseline */
	unsigned long long cpu_ns;
	unsigned long long net[4]; /* rx pkts, tx pkts, rx bytes, tx bytes */
	unsigned long long blk[4]; /* rd bytes, wr bytes, rd reqs, wr reqs */
	unsigned int net_n, blk_n;
	unsigned int vcpus;      /* last known vCPU count */
};

struct lv {
	char *uri;             /* as given (NULL: libvirt's default) */
	char *uri_used;        /* the URI of the connection, for messages */
	char *host;            /* the samples' host field */
	char **domains;
	int ndomains;
	int *dom_missing;      /* per --domain: absence already reported */
	char **map_key, **map_session;
	int nmap;
	virConnectPtr conn;
	int nowait_ok;         /* the server accepts ..._STATS_NOWAIT */
	int failing;           /* the last stats call failed on a live connection */
	struct lv_dom *doms;
	int ndoms, capdoms;
};

static void lv_quiet(void *arg, virErrorPtr e)
{
	(void)arg;
	(void)e;
}

/* libvirt's text of the last error in this thread (never NULL). */
static const char *lv_errtext(void)
{
	virErrorPtr e = virGetLastError();
	return e && e->message ? e->message : "unknown libvirt error";
}

static char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void copy_str(char *dst, size_t n, const char *src)
{
	size_t l = strlen(src);
	if (l >= n)
		l = n - 1;
	memcpy(dst, src, l);
	dst[l] = '\0';
}

/* Host part of a libvirt URI "driver[+transport]://[user@]host[:port]/path?q"
 * into buf ("" when there is none). */
static void uri_host(const char *uri, char *buf, size_t n, int *port)
{
	buf[0] = '\0';
	*port = 0;
	const char *p = uri ? strstr(uri, "://") : NULL;
	if (!p)
		return;
	p += 3;
	size_t len = strcspn(p, "/?#");
	const char *at = memchr(p, '@', len);
	if (at) {
		len -= (size_t)(at + 1 - p);
		p = at + 1;
	}
	const char *end = p + len, *colon;
	if (*p == '[') { /* [ipv6]:port */
		const char *rb = memchr(p, ']', len);
		if (!rb)
			return;
		colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
		p++;
		len = (size_t)(rb - p);
	} else {
		colon = memchr(p, ':', len);
		if (colon)
			len = (size_t)(colon - p);
	}
	if (colon)
		*port = atoi(colon + 1);
	if (len >= n)
		len = n - 1;
	memcpy(buf, p, len);
	buf[len] = '\0';
}

/* The TCP port a remote URI connects to, or 0 when it is not plain TCP/TLS/
 * SSH (unix sockets, ext, local drivers): those are not probed. */
static int uri_tcp_port(const char *uri, const char *host, int port)
{
	if (!uri || !host[0])
		return 0;
	const char *sep = strstr(uri, "://");
	const char *plus = memchr(uri, '+', (size_t)(sep - uri));
	char tr[16] = "tls";
	if (plus) {
		size_t l = (size_t)(sep - plus - 1);
		if (l >= sizeof(tr))
			return 0;
		memcpy(tr, plus + 1, l);
		tr[l] = '\0';
	}
	if (port > 0)
		return strcmp(tr, "tcp") && strcmp(tr, "tls") && strcmp(tr, "ssh") && strcmp(tr, "libssh") &&
				       strcmp(tr, "libssh2")
			       ? 0
			       : port;
	if (!strcmp(tr, "tcp"))
		return 16509;
	if (!strcmp(tr, "tls"))
		return 16514;
	if (!strcmp(tr, "ssh") || !strcmp(tr, "libssh") || !strcmp(tr, "libssh2"))
		return 22;
	return 0;
}

/* Can a TCP connection to host:port be made within timeout_ms? 0 yes, -1 no
 * (with the reason in why). */
static int tcp_probe(const char *host, int port, int timeout_ms, char *why, size_t nwhy)
{
	char ports[16];
	snprintf(ports, sizeof(ports), "%d", port);
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
	int r = getaddrinfo(host, ports, &hints, &ai);
	if (r) {
		snprintf(why, nwhy, "%s", gai_strerror(r));
		return -1;
	}
	int rc = -1;
	for (struct addrinfo *a = ai; a && rc < 0; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			snprintf(why, nwhy, "%s", strerror(errno));
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
			rc = 0;
		} else if (errno == EINPROGRESS) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			int pr = poll(&pfd, 1, timeout_ms);
			int soerr = 0;
			socklen_t sl = sizeof(soerr);
			if (pr == 0)
				snprintf(why, nwhy, "no answer within %d ms", timeout_ms);
			else if (pr < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
				snprintf(why, nwhy, "%s", strerror(errno));
			else if (soerr)
				snprintf(why, nwhy, "%s", strerror(soerr));
			else
				rc = 0;
		} else {
			snprintf(why, nwhy, "%s", strerror(errno));
		}
		close(fd);
	}
	freeaddrinfo(ai);
	return rc;
}

static virConnectPtr lv_open(const char *uri)
{
	/* libvirt prints every error to stderr unless told otherwise; the
	 * setting is libvirt's own, process-wide, and idempotent. */
	virSetErrorFunc(NULL, lv_quiet);
	virResetLastError();
	virConnectPtr c = virConnectOpenReadOnly(uri);
	if (c)
		virConnSetErrorFunc(c, NULL, lv_quiet);
	return c;
}

static void lv_close(struct lv *lv)
{
	if (lv->conn)
		virConnectClose(lv->conn);
	lv->conn = NULL;
	lv->ndoms = 0;
}

/* The text of a metadata element "<session ...>NAME</session>" (libvirt
 * may add a namespace prefix and xmlns): the characters between the first
 * '>' and the next '<', the five predefined XML entities decoded, blanks
 * trimmed. Returns 0, or -1 when that text is empty, too long for n, holds
 * another entity or a control character. */
static int parse_session(const char *xml, char *out, size_t n)
{
	static const struct {
		const char *ent;
		char c;
	} ents[] = { { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' }, { "&apos;", '\'' } };
	const char *p = strchr(xml, '>');
	if (!p || p == xml || p[-1] == '/')
		return -1;
	size_t len = 0;
	for (p++; *p && *p != '<'; p++) {
		char ch = *p;
		if (ch == '&') {
			size_t k = 0;
			while (k < sizeof(ents) / sizeof(ents[0]) && strncmp(p, ents[k].ent, strlen(ents[k].ent)))
				k++;
			if (k == sizeof(ents) / sizeof(ents[0]))
				return -1;
			ch = ents[k].c;
			p += strlen(ents[k].ent) - 1;
		} else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
			if (len == 0)
				continue;
			ch = ' ';
		} else if ((unsigned char)ch < 0x20) {
			return -1;
		}
		if (len + 1 >= n)
			return -1;
		out[len++] = ch;
	}
	while (len > 0 && out[len - 1] == ' ')
		len--;
	out[len] = '\0';
	return len > 0 ? 0 : -1;
}

/* Session of a domain: --map by name or UUID, the metadata element, or the
 * name. Called once per domain appearance (the result is kept per UUID). */
static void resolve_session(struct lv *lv, virDomainPtr dom, struct lv_dom *d, const char *uuidstr,
			    const struct ipk_diag *diag)
{
	for (int i = 0; i < lv->nmap; i++) {
		if (!strcmp(lv->map_key[i], d->name) || !strcmp(lv->map_key[i], uuidstr)) {
			copy_str(d->session, sizeof(d->session), lv->map_session[i]);
			return;
		}
	}
	copy_str(d->session, sizeof(d->session), d->name);
	char *xml = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, IPK_LIBVIRT_META_NS, 0);
	if (!xml) {
		virErrorPtr e = virGetLastError();
		if (e && e->code != VIR_ERR_NO_DOMAIN_METADATA)
			ipk_diagf(diag, 2, "libvirt '%s': metadata of domain '%s': %s", lv->uri_used, d->name,
				  lv_errtext());
		virResetLastError();
		return;
	}
	char name[128];
	int ok = parse_session(xml, name, sizeof(name)) == 0;
	if (ok)
		copy_str(d->session, sizeof(d->session), name);
	if (!ok)
		ipk_diagf(diag, 0, "libvirt '%s': domain '%s': ignoring metadata session element '%s' (empty, too long or not plain text)",
			  lv->uri_used, d->name, xml);
	free(xml);
}

static int wanted(const struct lv *lv, const char *name)
{
	if (lv->ndomains == 0)
		return 1;
	for (int i = 0; i < lv->ndomains; i++)
		if (!strcmp(lv->domains[i], name))
			return 1;
	return 0;
}

static struct lv_dom *find_dom(struct lv *lv, const unsigned char *uuid)
{
	for (int i = 0; i < lv->ndoms; i++)
		if (!memcmp(lv->doms[i].uuid, uuid, VIR_UUID_BUFLEN))
			return &lv->doms[i];
	return NULL;
}

static int getull(virTypedParameterPtr p, int n, const char *name, unsigned long long *v)
{
	return virTypedParamsGetULLong(p, n, name, v) == 1;
}

/* Sum "PREFIX.I.SUFFIX[k]" over the devices I < PREFIX.count that report
 * all four counters (an empty CD-ROM reports none); *count is how many did,
 * so a change in that set starts a new baseline. 0 when the group is
 * missing from the reply. */
static int sum_group(virTypedParameterPtr p, int n, const char *prefix, const char *const *suffix,
		     unsigned int *count, unsigned long long out[4])
{
	char key[VIR_TYPED_PARAM_FIELD_LENGTH];
	unsigned int ndev;
	snprintf(key, sizeof(key), "%s.count", prefix);
	if (virTypedParamsGetUInt(p, n, key, &ndev) != 1)
		return 0;
	*count = 0;
	for (int k = 0; k < 4; k++)
		out[k] = 0;
	for (unsigned int i = 0; i < ndev; i++) {
		unsigned long long v[4];
		int k;
		for (k = 0; k < 4; k++) {
			snprintf(key, sizeof(key), "%s.%u.%s", prefix, i, suffix[k]);
			if (!getull(p, n, key, &v[k]))
				break;
		}
		if (k < 4)
			continue;
		for (k = 0; k < 4; k++)
			out[k] += v[k];
		++*count;
	}
	return 1;
}

static const char *const net_keys[4] = { "rx.pkts", "tx.pkts", "rx.bytes", "tx.bytes" };
static const char *const blk_keys[4] = { "rd.bytes", "wr.bytes", "rd.reqs", "wr.reqs" };
static const enum ipk_field net_fields[4] = { IPK_F_RX_PKTS, IPK_F_TX_PKTS, IPK_F_RX_BYTES, IPK_F_TX_BYTES };
static const enum ipk_field blk_fields[4] = { IPK_F_BLK_RD_BYTES, IPK_F_BLK_WR_BYTES, IPK_F_BLK_RD_REQS,
					      IPK_F_BLK_WR_REQS };

/* Deltas of a group of four counters into s; on any counter going
 * backwards (a restart the id did not reveal) the group gets a new
 * baseline instead. */
static void group_delta(struct lv_dom *d, int g, int have_now, unsigned int cnt_now, unsigned long long now[4],
			unsigned long long prev[4], unsigned int *cnt_prev, const enum ipk_field fields[4],
			struct ipk_sample *s)
{
	if (!have_now) {
		d->have[g] = 0;
		return;
	}
	int usable = d->have[g] && cnt_now == *cnt_prev && cnt_now > 0;
	for (int k = 0; usable && k < 4; k++)
		if (now[k] < prev[k])
			usable = 0;
	for (int k = 0; usable && k < 4; k++)
		ipk_sample_set_field(s, fields[k], (double)(now[k] - prev[k]));
	memcpy(prev, now, 4 * sizeof(now[0]));
	*cnt_prev = cnt_now;
	d->have[g] = 1;
}

/* One stats call; updates the table and, when set is not NULL, adds the
 * samples of the interval ending at ts. Returns 0, or -1 with err set when
 * the call failed. */
static int lv_poll(struct lv *lv, double ts, double interval, struct ipk_sample_set *set, const struct ipk_diag *diag,
		   struct ipk_err *err)
{
	unsigned int stats = VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL | VIR_DOMAIN_STATS_BALLOON |
			     VIR_DOMAIN_STATS_VCPU | VIR_DOMAIN_STATS_INTERFACE | VIR_DOMAIN_STATS_BLOCK;
	unsigned int flags = VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE;
	virDomainStatsRecordPtr *recs = NULL;
	virResetLastError();
	int n = virConnectGetAllDomainStats(lv->conn, stats, &recs,
					    flags | (lv->nowait_ok ? VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT : 0));
	if (n < 0 && lv->nowait_ok) {
		virErrorPtr e = virGetLastError();
		if (e && (e->code == VIR_ERR_INVALID_ARG || e->code == VIR_ERR_NO_SUPPORT)) {
			/* an older server: ask without NOWAIT from now on */
			lv->nowait_ok = 0;
			virResetLastError();
			n = virConnectGetAllDomainStats(lv->conn, stats, &recs, flags);
		}
	}
	double mono = ipk_mono();
	if (n < 0) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot get domain stats from libvirt '%s': %s", lv->uri_used,
			    lv_errtext());
		virResetLastError();
		return -1;
	}
	for (int i = 0; i < lv->ndoms; i++)
		lv->doms[i].seen = 0;

	int rc = 0;
	for (int r = 0; r < n; r++) {
		virDomainPtr dom = recs[r]->dom;
		virTypedParameterPtr p = recs[r]->params;
		int np = recs[r]->nparams;
		const char *name = virDomainGetName(dom);
		unsigned char uuid[VIR_UUID_BUFLEN];
		char uuidstr[VIR_UUID_STRING_BUFLEN];
		if (!name || virDomainGetUUID(dom, uuid) < 0 || virDomainGetUUIDString(dom, uuidstr) < 0 ||
		    !wanted(lv, name))
			continue;
		int state = 0;
		virTypedParamsGetInt(p, np, "state.state", &state);
		if (state == VIR_DOMAIN_SHUTOFF || state == VIR_DOMAIN_CRASHED)
			continue; /* on its way out: treated as gone */
		unsigned int id = virDomainGetID(dom);
		struct lv_dom *d = find_dom(lv, uuid);
		if (!d) {
			if (lv->ndoms == lv->capdoms) {
				int cap = lv->capdoms ? lv->capdoms * 2 : 8;
				struct lv_dom *v = realloc(lv->doms, (size_t)cap * sizeof(*v));
				if (!v) {
					rc = ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
					break;
				}
				lv->doms = v;
				lv->capdoms = cap;
			}
			d = &lv->doms[lv->ndoms++];
			memset(d, 0, sizeof(*d));
			memcpy(d->uuid, uuid, VIR_UUID_BUFLEN);
			copy_str(d->name, sizeof(d->name), name);
			d->id = id;
			d->paused = state == VIR_DOMAIN_PAUSED;
			resolve_session(lv, dom, d, uuidstr, diag);
			ipk_diagf(diag, 1, "libvirt '%s': domain '%s' is session '%s'%s", lv->uri_used, d->name,
				  d->session, set ? " (new: first sample has no deltas)" : "");
		} else if (d->id != id) {
			ipk_diagf(diag, 1, "libvirt '%s': domain '%s' restarted (id %u -> %u): new baseline", lv->uri_used,
				  d->name, d->id, id);
			memset(d->have, 0, sizeof(d->have));
			d->id = id;
		}
		d->seen = 1;
		int paused = state == VIR_DOMAIN_PAUSED;
		if (paused != d->paused)
			ipk_diagf(diag, 1, "libvirt '%s': domain '%s' %s", lv->uri_used, d->name,
				  paused ? "is paused" : "is running");
		d->paused = paused;

		struct ipk_sample s;
		ipk_sample_init(&s, d->session, "libvirt", ts, interval);
		copy_str(s.host, sizeof(s.host), lv->host);

		unsigned long long v;
		if (getull(p, np, "balloon.current", &v))
			ipk_sample_set_field(&s, IPK_F_MEM_BYTES, (double)v * 1024.0);
		if (getull(p, np, "balloon.rss", &v))
			ipk_sample_set_field(&s, IPK_F_RSS_BYTES, (double)v * 1024.0);

		unsigned int vcpus = 0;
		if (getull(p, np, "cpu.time", &v)) {
			if (virTypedParamsGetUInt(p, np, "vcpu.current", &vcpus) == 1 && vcpus > 0) {
				d->vcpus = vcpus;
			} else if (d->vcpus == 0) { /* a server without vcpu stats: ask once */
				virDomainInfo info;
				d->vcpus = virDomainGetInfo(dom, &info) == 0 ? info.nrVirtCpu : 0;
				virResetLastError();
			}
			vcpus = d->vcpus;
			double dt = mono - d->t_cpu;
			if (d->have[G_CPU] && v >= d->cpu_ns && dt > 0) {
				double sec = (double)(v - d->cpu_ns) / 1e9;
				ipk_sample_set_field(&s, IPK_F_CPU_S, sec);
				if (vcpus > 0) {
					double u = sec / (dt * vcpus);
					ipk_sample_set_field(&s, IPK_F_CPU, u > 1 ? 1 : u);
				}
			}
			d->cpu_ns = v;
			d->t_cpu = mono;
			d->have[G_CPU] = 1;
		} else {
			d->have[G_CPU] = 0;
		}

		unsigned long long now[4];
		unsigned int cnt = 0;
		int have = sum_group(p, np, "net", net_keys, &cnt, now);
		group_delta(d, G_NET, have, cnt, now, d->net, &d->net_n, net_fields, &s);
		have = sum_group(p, np, "block", blk_keys, &cnt, now);
		group_delta(d, G_BLK, have, cnt, now, d->blk, &d->blk_n, blk_fields, &s);

		if (set && ipk_sample_set_add(set, &s) < 0) {
			rc = ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
			break;
		}
	}
	virDomainStatsRecordListFree(recs);
	if (rc < 0)
		return rc;

	/* Domains that were there and are not any more. */
	for (int i = 0; i < lv->ndoms;) {
		struct lv_dom *d = &lv->doms[i];
		if (d->seen) {
			i++;
			continue;
		}
		const char *why = "undefined";
		virDomainPtr dom = virDomainLookupByUUID(lv->conn, d->uuid);
		if (dom) {
			int st = 0, reason = 0;
			if (virDomainGetState(dom, &st, &reason, 0) == 0)
				why = st == VIR_DOMAIN_SHUTOFF ? "shut off" : st == VIR_DOMAIN_CRASHED ? "crashed" : "stopped";
			else
				why = "stopped";
			virDomainFree(dom);
		}
		virResetLastError();
		ipk_diagf(diag, 0, "libvirt '%s': domain '%s' (session '%s') is gone (%s)", lv->uri_used, d->name,
			  d->session, why);
		lv->doms[i] = lv->doms[--lv->ndoms];
	}
	/* --domain names that are not running here. */
	for (int i = 0; i < lv->ndomains; i++) {
		int present = 0;
		for (int j = 0; j < lv->ndoms && !present; j++)
			present = !strcmp(lv->doms[j].name, lv->domains[i]);
		if (!present && !lv->dom_missing[i])
			ipk_diagf(diag, 0, "libvirt '%s': domain '%s' is not running", lv->uri_used, lv->domains[i]);
		lv->dom_missing[i] = !present;
	}
	return 0;
}

/* Reopen a lost connection: at most one attempt per call, after a TCP
 * probe (bounded by timeout_ms) for network transports. Returns 0 when
 * connected. */
static int lv_reconnect(struct lv *lv, int timeout_ms, const struct ipk_diag *diag)
{
	char host[256], why[256];
	int port;
	uri_host(lv->uri_used, host, sizeof(host), &port);
	port = uri_tcp_port(lv->uri_used, host, port);
	if (port > 0 && tcp_probe(host, port, timeout_ms, why, sizeof(why)) < 0) {
		ipk_diagf(diag, 2, "libvirt '%s': still unreachable: %s", lv->uri_used, why);
		return -1;
	}
	lv->conn = lv_open(lv->uri_used);
	if (!lv->conn) {
		ipk_diagf(diag, 2, "libvirt '%s': reconnect failed: %s", lv->uri_used, lv_errtext());
		virResetLastError();
		return -1;
	}
	ipk_diagf(diag, 0, "libvirt '%s': reconnected", lv->uri_used);
	return 0;
}

/* A failed call: is the connection itself gone? */
static void lv_check_alive(struct lv *lv, const struct ipk_err *why, const struct ipk_diag *diag)
{
	if (virConnectIsAlive(lv->conn) == 1) {
		virResetLastError();
		/* warn once; repeats of the same trouble are debug output */
		ipk_diagf(diag, lv->failing ? 2 : 0, "%s", why->msg);
		lv->failing = 1;
		return;
	}
	virResetLastError();
	ipk_diagf(diag, 0, "%s; connection lost, reconnecting each interval", why->msg);
	lv_close(lv);
	lv->failing = 0;
}

static int lv_start(struct ipk_source *src, double ts, const struct ipk_diag *diag, struct ipk_err *err)
{
	struct lv *lv = src->priv;
	(void)ts;
	if (!lv->conn)
		return 0;
	struct ipk_err e = { 0 };
	if (lv_poll(lv, ts, 0, NULL, diag, &e) < 0) {
		if (e.code == IPK_EXIT_OSERR) {
			*err = e;
			return -1;
		}
		lv_check_alive(lv, &e, diag);
	}
	return 0;
}

static int lv_collect(struct ipk_source *src, double ts, double interval, struct ipk_sample_set *set,
		      const struct ipk_diag *diag, struct ipk_err *err)
{
	struct lv *lv = src->priv;
	if (!lv->conn) {
		int ms = (int)(interval * 500);
		if (lv_reconnect(lv, ms < 50 ? 50 : ms > 5000 ? 5000 : ms, diag) < 0)
			return 0;
	}
	struct ipk_err e = { 0 };
	if (lv_poll(lv, ts, interval, set, diag, &e) < 0) {
		if (e.code == IPK_EXIT_OSERR) {
			*err = e;
			return -1;
		}
		lv_check_alive(lv, &e, diag);
	} else if (lv->failing) {
		lv->failing = 0;
		ipk_diagf(diag, 1, "libvirt '%s': domain stats work again", lv->uri_used);
	}
	return 0;
}

static void lv_free(struct ipk_source *src)
{
	struct lv *lv = src->priv;
	if (!lv)
		return;
	lv_close(lv);
	for (int i = 0; i < lv->ndomains; i++)
		free(lv->domains[i]);
	for (int i = 0; i < lv->nmap; i++) {
		free(lv->map_key[i]);
		free(lv->map_session[i]);
	}
	free(lv->domains);
	free(lv->dom_missing);
	free(lv->map_key);
	free(lv->map_session);
	free(lv->doms);
	free(lv->uri);
	free(lv->uri_used);
	free(lv->host);
	free(lv);
	src->priv = NULL;
}

static const struct ipk_source_ops lv_ops = {
	.name = "libvirt",
	.finite = 0,
	.live = 1,
	.collect = lv_collect,
	.start = lv_start,
	.free = lv_free,
};

struct ipk_source *ipk_source_libvirt_new(const struct ipk_libvirt_opts *o, struct ipk_err *err)
{
	struct ipk_source *src = calloc(1, sizeof(*src));
	struct lv *lv = calloc(1, sizeof(*lv));
	if (!src || !lv) {
		free(src);
		free(lv);
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		return NULL;
	}
	src->ops = &lv_ops;
	src->priv = lv;
	lv->nowait_ok = 1;
	int oom = 0;
	if (o->uri && !(lv->uri = strdup(o->uri)))
		oom = 1;
	if (o->ndomains > 0) {
		lv->domains = calloc((size_t)o->ndomains, sizeof(*lv->domains));
		lv->dom_missing = calloc((size_t)o->ndomains, sizeof(*lv->dom_missing));
		oom |= !lv->domains || !lv->dom_missing;
		for (int i = 0; !oom && i < o->ndomains; i++, lv->ndomains++)
			oom |= !(lv->domains[i] = strdup(o->domains[i]));
	}
	if (o->nmap > 0) {
		lv->map_key = calloc((size_t)o->nmap, sizeof(*lv->map_key));
		lv->map_session = calloc((size_t)o->nmap, sizeof(*lv->map_session));
		oom |= !lv->map_key || !lv->map_session;
		for (int i = 0; !oom && i < o->nmap; i++, lv->nmap++) {
			lv->map_key[i] = xstrdup(o->map[i].key);
			lv->map_session[i] = xstrdup(o->map[i].session);
			oom |= !lv->map_key[i] || !lv->map_session[i];
		}
	}
	if (oom) {
		ipk_source_free(src);
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		return NULL;
	}

	if (virInitialize() < 0) {
		ipk_source_free(src);
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot initialise libvirt");
		return NULL;
	}
	/* A host that drops packets would hold virConnectOpen for the kernel's
	 * TCP timeout (minutes): probe it first, with a bound. Refusals and
	 * unreachable networks fall through to libvirt for its own message. */
	char hostbuf[256], why[256];
	int port;
	uri_host(lv->uri, hostbuf, sizeof(hostbuf), &port);
	port = uri_tcp_port(lv->uri, hostbuf, port);
	if (port > 0 && tcp_probe(hostbuf, port, IPK_LIBVIRT_CONNECT_MS, why, sizeof(why)) < 0 &&
	    strstr(why, "no answer")) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot connect to libvirt '%s': %s:%d: %s", lv->uri, hostbuf,
			    port, why);
		ipk_source_free(src);
		return NULL;
	}
	lv->conn = lv_open(lv->uri);
	if (!lv->conn) {
		const char *shown = lv->uri ? lv->uri : getenv("LIBVIRT_DEFAULT_URI");
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot connect to libvirt '%s': %s",
			    shown && *shown ? shown : "(default)", lv_errtext());
		virResetLastError();
		ipk_source_free(src);
		return NULL;
	}
	char *used = virConnectGetURI(lv->conn);
	lv->uri_used = used ? used : xstrdup(lv->uri ? lv->uri : "(default)");
	virResetLastError();

	if (o->host && *o->host) {
		copy_str(hostbuf, sizeof(hostbuf), o->host);
	} else {
		uri_host(lv->uri_used, hostbuf, sizeof(hostbuf), &port);
		if (!hostbuf[0] && gethostname(hostbuf, sizeof(hostbuf)) < 0)
			hostbuf[0] = '\0';
		hostbuf[sizeof(hostbuf) - 1] = '\0';
	}
	lv->host = strdup(hostbuf);
	if (!lv->uri_used || !lv->host || asprintf(&src->label, "libvirt %s", lv->uri_used) < 0) {
		src->label = NULL;
		ipk_source_free(src);
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		return NULL;
	}
	return src;
}
