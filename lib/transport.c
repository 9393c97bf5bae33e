/* transport.c - framed, authenticated streams and resumable file transfer
 * (see transport.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <lz4.h>
#include <xxhash.h>

#include "sha256.h"
#include "transport.h"

#define HDR_LEN 8
#define TAG_LEN IPK_SHA256_LEN
#define NONCE_LEN 32
static const char MAGIC[8] = "IPKMIG1";

struct ipk_transport {
	int rfd, wfd, own;
	int server;            /* direction byte: frames we send are 'S' or 'C' */
	int keyed;             /* the session key is in use */
	uint8_t psk[256];
	size_t psklen;
	int has_psk;
	uint8_t skey[IPK_SHA256_LEN];
	uint64_t seq_out, seq_in;
	uint64_t sent, received;
	double timeout, bwlimit, t0;
	uint64_t corrupt_after;
	int corrupted;
	int broken;
	char peer[128];
	uint8_t *buf;          /* receive buffer: header + payload + tag */
	size_t cap;
};

struct ipk_transport *ipk_transport_new(int rfd, int wfd, int own_fds, const struct ipk_transport_opts *o,
					struct ipk_err *err)
{
	struct ipk_transport *t = calloc(1, sizeof(*t));
	if (!t) {
		ipk_err_set(err, IPK_EXIT_OSERR, "create transport: out of memory");
		return NULL;
	}
	t->rfd = rfd;
	t->wfd = wfd;
	t->own = own_fds;
	t->timeout = o && o->timeout > 0 ? o->timeout : 30;
	t->bwlimit = o ? o->bwlimit : 0;
	t->corrupt_after = o ? o->corrupt_after : 0;
	if (o && o->key && o->keylen) {
		t->psklen = o->keylen < sizeof(t->psk) ? o->keylen : sizeof(t->psk);
		memcpy(t->psk, o->key, t->psklen);
		t->has_psk = 1;
	}
	snprintf(t->peer, sizeof(t->peer), "%s", o && o->peer ? o->peer : "peer");
	fcntl(rfd, F_SETFL, fcntl(rfd, F_GETFL) | O_NONBLOCK);
	if (wfd != rfd)
		fcntl(wfd, F_SETFL, fcntl(wfd, F_GETFL) | O_NONBLOCK);
	t->t0 = ipk_mono();
	return t;
}

void ipk_transport_free(struct ipk_transport *t)
{
	if (!t)
		return;
	if (t->own) {
		close(t->rfd);
		if (t->wfd != t->rfd)
			close(t->wfd);
	}
	memset(t->psk, 0, sizeof(t->psk));
	memset(t->skey, 0, sizeof(t->skey));
	free(t->buf);
	free(t);
}

uint64_t ipk_transport_sent(const struct ipk_transport *t) { return t->sent; }
int ipk_transport_broken(const struct ipk_transport *t) { return t->broken; }
double ipk_transport_timeout(const struct ipk_transport *t) { return t->timeout; }
void ipk_transport_set_timeout(struct ipk_transport *t, double seconds)
{
	if (seconds > 0)
		t->timeout = seconds;
}
uint64_t ipk_transport_received(const struct ipk_transport *t) { return t->received; }
const char *ipk_transport_peer(const struct ipk_transport *t) { return t->peer; }

/* Wait until fd is ready for ev; 0, or -1 with err after the timeout. */
static int wait_fd(struct ipk_transport *t, int fd, short ev, const char *what, struct ipk_err *err)
{
	struct pollfd p = { .fd = fd, .events = ev };
	for (;;) {
		int r = poll(&p, 1, (int)(t->timeout * 1000));
		if (r > 0)
			return 0;
		if (r == 0)
			return ipk_err_set(err, IPK_EXIT_TEMPFAIL, "%s '%s': no progress for %g s", what, t->peer, t->timeout);
		if (errno != EINTR)
			return ipk_err_set(err, IPK_EXIT_IOERR, "%s '%s': %s", what, t->peer, strerror(errno));
	}
}

/* Write the pieces in order, as one system call when the kernel takes them
 * all: a frame's header, payload and tag leave in the same segment, so that
 * TCP's small-segment delay (Nagle's algorithm against the peer's delayed
 * acknowledgement, 40 ms here) never holds a request's second half. */
static int write_allv(struct ipk_transport *t, struct iovec *v, int nv, struct ipk_err *err)
{
	while (nv > 0) {
		ssize_t w = writev(t->wfd, v, nv);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (wait_fd(t, t->wfd, POLLOUT, "send to", err) < 0)
					return -1;
				continue;
			}
			int code = (errno == EPIPE || errno == ECONNRESET) ? IPK_EXIT_TEMPFAIL : IPK_EXIT_IOERR;
			return ipk_err_set(err, code, "send to '%s': %s", t->peer,
					   errno == EPIPE ? "connection closed by the peer" : strerror(errno));
		}
		t->sent += (uint64_t)w;
		size_t left = (size_t)w;
		while (nv > 0 && left >= v->iov_len)
			left -= v->iov_len, v++, nv--;
		if (nv > 0) {
			v->iov_base = (uint8_t *)v->iov_base + left;
			v->iov_len -= left;
		}
	}
	if (t->bwlimit > 0) {
		double due = t->t0 + (double)t->sent / t->bwlimit, now = ipk_mono();
		if (due > now) {
			struct timespec ts = { (time_t)(due - now), (long)((due - now - (time_t)(due - now)) * 1e9) };
			nanosleep(&ts, NULL);
		}
	}
	return 0;
}

static int read_all(struct ipk_transport *t, uint8_t *p, size_t n, struct ipk_err *err)
{
	while (n) {
		ssize_t r = read(t->rfd, p, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (wait_fd(t, t->rfd, POLLIN, "receive from", err) < 0)
					return -1;
				continue;
			}
			int code = errno == ECONNRESET ? IPK_EXIT_TEMPFAIL : IPK_EXIT_IOERR;
			return ipk_err_set(err, code, "receive from '%s': %s", t->peer, strerror(errno));
		}
		if (r == 0)
			return ipk_err_set(err, IPK_EXIT_TEMPFAIL, "receive from '%s': connection closed by the peer", t->peer);
		p += r;
		n -= (size_t)r;
		t->received += (uint64_t)r;
	}
	return 0;
}

static void be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}
static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void be64(uint8_t *p, uint64_t v)
{
	be32(p, (uint32_t)(v >> 32));
	be32(p + 4, (uint32_t)v);
}
static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

/* The tag of a frame: direction byte, sequence number, header, payload. */
static void frame_tag(const struct ipk_transport *t, char dir, uint64_t seq, const uint8_t *hdr, const uint8_t *payload,
		      size_t len, uint8_t out[TAG_LEN])
{
	uint8_t pre[9];
	pre[0] = (uint8_t)dir;
	be64(pre + 1, seq);
	if (t->keyed) {
		struct ipk_hmac h;
		ipk_hmac_init(&h, t->skey, sizeof(t->skey));
		ipk_hmac_update(&h, pre, sizeof(pre));
		ipk_hmac_update(&h, hdr, HDR_LEN);
		ipk_hmac_update(&h, payload, len);
		ipk_hmac_final(&h, out);
	} else {
		struct ipk_sha256 c;
		ipk_sha256_init(&c);
		ipk_sha256_update(&c, pre, sizeof(pre));
		ipk_sha256_update(&c, hdr, HDR_LEN);
		ipk_sha256_update(&c, payload, len);
		ipk_sha256_final(&c, out);
	}
}

static int send_frame(struct ipk_transport *t, int type, const void *payload, size_t len, struct ipk_err *err);
static int recv_frame(struct ipk_transport *t, int *type, const uint8_t **payload, size_t *len, struct ipk_err *err);

int ipk_transport_send(struct ipk_transport *t, int type, const void *payload, size_t len, struct ipk_err *err)
{
	if (t->broken)
		return ipk_err_set(err, IPK_EXIT_TEMPFAIL, "send to '%s': the stream is broken", t->peer);
	int rc = send_frame(t, type, payload, len, err);
	if (rc < 0)
		t->broken = 1;
	return rc;
}

int ipk_transport_recv(struct ipk_transport *t, int *type, const uint8_t **payload, size_t *len, struct ipk_err *err)
{
	if (t->broken)
		return ipk_err_set(err, IPK_EXIT_TEMPFAIL, "receive from '%s': the stream is broken", t->peer);
	int rc = recv_frame(t, type, payload, len, err);
	if (rc < 0)
		t->broken = 1;
	return rc;
}

static int send_frame(struct ipk_transport *t, int type, const void *payload, size_t len, struct ipk_err *err)
{
	if (len > IPK_FRAME_MAX)
		return ipk_err_set(err, IPK_EXIT_SOFTWARE, "send to '%s': frame of %zu bytes is too large", t->peer, len);
	uint8_t hdr[HDR_LEN] = { 'I', 'K', (uint8_t)type, 0 };
	be32(hdr + 4, (uint32_t)len);
	uint8_t tag[TAG_LEN];
	frame_tag(t, t->server ? 'S' : 'C', t->seq_out++, hdr, payload, len, tag);
	struct iovec v[3] = { { hdr, HDR_LEN }, { (void *)payload, len }, { tag, TAG_LEN } };
	uint8_t *copy = NULL;
	if (len && t->corrupt_after && !t->corrupted && t->sent >= t->corrupt_after) {
		/* test only: the byte changes after the tag was computed */
		if (!(copy = malloc(len)))
			return ipk_err_set(err, IPK_EXIT_OSERR, "send: out of memory");
		memcpy(copy, payload, len);
		copy[len / 2] ^= 0x01;
		t->corrupted = 1;
		v[1].iov_base = copy;
	}
	int rc = write_allv(t, v, 3, err);
	free(copy);
	return rc;
}

static int recv_frame(struct ipk_transport *t, int *type, const uint8_t **payload, size_t *len, struct ipk_err *err)
{
	uint8_t hdr[HDR_LEN];
	if (read_all(t, hdr, HDR_LEN, err) < 0)
		return -1;
	uint64_t seq = t->seq_in++;
	if (hdr[0] != 'I' || hdr[1] != 'K' || hdr[3] != 0)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "receive from '%s': frame %llu: bad header", t->peer,
				   (unsigned long long)seq);
	uint32_t n = get32(hdr + 4);
	if (n > IPK_FRAME_MAX)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "receive from '%s': frame %llu: length %u too large", t->peer,
				   (unsigned long long)seq, n);
	if (t->cap < (size_t)n + TAG_LEN + 1) {
		size_t cap = (size_t)n + TAG_LEN + 1;
		uint8_t *b = realloc(t->buf, cap);
		if (!b)
			return ipk_err_set(err, IPK_EXIT_OSERR, "receive: out of memory");
		t->buf = b;
		t->cap = cap;
	}
	if (read_all(t, t->buf, (size_t)n + TAG_LEN, err) < 0)
		return -1;
	uint8_t tag[TAG_LEN];
	frame_tag(t, t->server ? 'C' : 'S', seq, hdr, t->buf, n, tag);
	if (ipk_ct_memcmp(tag, t->buf + n, TAG_LEN))
		return ipk_err_set(err, IPK_EXIT_DATAERR,
				   "receive from '%s': frame %llu (type %d, %u bytes): integrity check failed", t->peer,
				   (unsigned long long)seq, hdr[2], n);
	t->buf[n] = 0; /* JSON payloads can be parsed in place */
	*type = hdr[2];
	*payload = t->buf;
	*len = n;
	return 0;
}

int ipk_transport_send_json(struct ipk_transport *t, int type, const cJSON *obj, struct ipk_err *err)
{
	char *s = cJSON_PrintUnformatted(obj);
	if (!s)
		return ipk_err_set(err, IPK_EXIT_OSERR, "send: out of memory");
	int rc = ipk_transport_send(t, type, s, strlen(s), err);
	free(s);
	return rc;
}

static void send_error(struct ipk_transport *t, const struct ipk_err *e, int fatal)
{
	cJSON *j = cJSON_CreateObject();
	if (!j)
		return;
	cJSON_AddNumberToObject(j, "code", e->code ? e->code : IPK_EXIT_FAIL);
	cJSON_AddStringToObject(j, "message", e->msg);
	if (fatal)
		cJSON_AddBoolToObject(j, "fatal", 1);
	struct ipk_err ignored = { 0 };
	char *s = cJSON_PrintUnformatted(j);
	if (s)
		send_frame(t, IPK_FR_ERROR, s, strlen(s), &ignored); /* also on a stream that failed reading */
	free(s);
	cJSON_Delete(j);
}

void ipk_transport_send_error(struct ipk_transport *t, const struct ipk_err *e)
{
	send_error(t, e, 0);
}

void ipk_transport_abandon(struct ipk_transport *t, const struct ipk_err *e, double timeout)
{
	send_error(t, e, 1);
	t->broken = 1;
	double end = ipk_mono() + timeout;
	uint8_t buf[65536];
	for (;;) {
		double left = end - ipk_mono();
		if (left <= 0)
			break;
		struct pollfd p = { .fd = t->rfd, .events = POLLIN };
		int r = poll(&p, 1, (int)(left * 1000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		ssize_t n = read(t->rfd, buf, sizeof(buf));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			break;
	}
}

/* err from a received ERROR frame's payload. */
static int peer_error(struct ipk_transport *t, const uint8_t *p, struct ipk_err *err)
{
	cJSON *j = cJSON_Parse((const char *)p);
	int code = (int)(j ? cJSON_GetNumberValue(cJSON_GetObjectItem(j, "code")) : IPK_EXIT_FAIL);
	const char *msg = j ? cJSON_GetStringValue(cJSON_GetObjectItem(j, "message")) : NULL;
	if (j && cJSON_IsTrue(cJSON_GetObjectItem(j, "fatal")))
		t->broken = 1;
	ipk_err_set(err, code > 0 && code < 256 ? code : IPK_EXIT_FAIL, "%s: %s", t->peer, msg ? msg : "unknown error");
	cJSON_Delete(j);
	return -1;
}

cJSON *ipk_transport_recv_json(struct ipk_transport *t, int want, struct ipk_err *err)
{
	int type;
	const uint8_t *p;
	size_t n;
	if (ipk_transport_recv(t, &type, &p, &n, err) < 0)
		return NULL;
	if (type == IPK_FR_ERROR) {
		peer_error(t, p, err);
		return NULL;
	}
	if (type != want) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "receive from '%s': frame of type %d where %d was expected", t->peer, type,
			    want);
		return NULL;
	}
	cJSON *j = cJSON_ParseWithLength((const char *)p, n);
	if (!j || !cJSON_IsObject(j)) {
		cJSON_Delete(j);
		ipk_err_set(err, IPK_EXIT_DATAERR, "receive from '%s': malformed message", t->peer);
		return NULL;
	}
	return j;
}

/* ---- handshake ------------------------------------------------------------ */

static void proof(const struct ipk_transport *t, const char *label, const uint8_t *nc, const uint8_t *ns,
		  uint8_t out[IPK_SHA256_LEN])
{
	struct ipk_hmac h;
	ipk_hmac_init(&h, t->psk, t->psklen);
	ipk_hmac_update(&h, label, strlen(label));
	ipk_hmac_update(&h, nc, NONCE_LEN);
	ipk_hmac_update(&h, ns, NONCE_LEN);
	ipk_hmac_final(&h, out);
}

static int nonce(uint8_t *out, struct ipk_err *err)
{
	size_t got = 0;
	while (got < NONCE_LEN) {
		ssize_t r = getrandom(out + got, NONCE_LEN - got, 0);
		if (r < 0 && errno != EINTR)
			return ipk_err_set(err, IPK_EXIT_OSERR, "getrandom: %s", strerror(errno));
		if (r > 0)
			got += (size_t)r;
	}
	return 0;
}

/* Receive a frame of type want and exactly len bytes (ERROR frames become
 * the peer's error). */
static int recv_fixed(struct ipk_transport *t, int want, size_t len, const uint8_t **p, struct ipk_err *err)
{
	int type;
	size_t n;
	if (ipk_transport_recv(t, &type, p, &n, err) < 0)
		return -1;
	if (type == IPK_FR_ERROR) {
		peer_error(t, *p, err);
		if (err->code != IPK_EXIT_CONFIG)
			err->code = IPK_EXIT_CONFIG;
		return -1;
	}
	if (type != want || n != len)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "authenticate '%s': unexpected frame (type %d, %zu bytes)", t->peer,
				   type, n);
	return 0;
}

static int refuse(struct ipk_transport *t, struct ipk_err *err, const char *why)
{
	ipk_err_set(err, IPK_EXIT_CONFIG, "authenticate '%s': %s", t->peer, why);
	ipk_transport_send_error(t, err);
	return -1;
}

int ipk_transport_handshake(struct ipk_transport *t, int server, struct ipk_err *err)
{
	uint8_t nc[NONCE_LEN], ns[NONCE_LEN], pr[IPK_SHA256_LEN], msg[sizeof(MAGIC) + 1 + NONCE_LEN];
	const uint8_t *p;
	t->server = server;
	t->keyed = 0;
	if (!server) {
		if (nonce(nc, err) < 0)
			return -1;
		memcpy(msg, MAGIC, sizeof(MAGIC));
		msg[sizeof(MAGIC)] = (uint8_t)t->has_psk;
		memcpy(msg + sizeof(MAGIC) + 1, nc, NONCE_LEN);
		if (ipk_transport_send(t, IPK_FR_HELLO, msg, sizeof(msg), err) < 0)
			return -1;
		if (!t->has_psk) {
			/* no key: the server answers AUTH_OK, or refuses */
			if (recv_fixed(t, IPK_FR_AUTH_OK, 0, &p, err) < 0)
				return -1;
			return 0;
		}
		if (recv_fixed(t, IPK_FR_CHALLENGE, 2 * NONCE_LEN, &p, err) < 0)
			return -1;
		memcpy(ns, p, NONCE_LEN);
		proof(t, "ipkit-srv", nc, ns, pr);
		if (ipk_ct_memcmp(pr, p + NONCE_LEN, sizeof(pr)))
			return refuse(t, err, "the receiver does not hold the same key (wrong key)");
		proof(t, "ipkit-cli", nc, ns, pr);
		if (ipk_transport_send(t, IPK_FR_AUTH, pr, sizeof(pr), err) < 0)
			return -1;
		proof(t, "ipkit-key", nc, ns, t->skey);
		t->keyed = 1;
		if (recv_fixed(t, IPK_FR_AUTH_OK, 0, &p, err) < 0)
			return -1;
		return 0;
	}
	if (recv_fixed(t, IPK_FR_HELLO, sizeof(msg), &p, err) < 0)
		return -1;
	if (memcmp(p, MAGIC, sizeof(MAGIC)) != 0)
		return refuse(t, err, "not an ip-migrate peer of this version");
	int peer_keyed = p[sizeof(MAGIC)] != 0;
	memcpy(nc, p + sizeof(MAGIC) + 1, NONCE_LEN);
	if (peer_keyed != t->has_psk)
		return refuse(t, err, t->has_psk ? "the peer has no key (give it --key-file)"
						 : "the peer uses a key and this side has none");
	if (!t->has_psk)
		return ipk_transport_send(t, IPK_FR_AUTH_OK, "", 0, err);
	if (nonce(ns, err) < 0)
		return -1;
	uint8_t ch[2 * NONCE_LEN];
	memcpy(ch, ns, NONCE_LEN);
	proof(t, "ipkit-srv", nc, ns, ch + NONCE_LEN);
	if (ipk_transport_send(t, IPK_FR_CHALLENGE, ch, sizeof(ch), err) < 0)
		return -1;
	if (recv_fixed(t, IPK_FR_AUTH, IPK_SHA256_LEN, &p, err) < 0)
		return -1;
	proof(t, "ipkit-cli", nc, ns, pr);
	if (ipk_ct_memcmp(pr, p, sizeof(pr)))
		return refuse(t, err, "the peer does not hold the same key (wrong key)");
	proof(t, "ipkit-key", nc, ns, t->skey);
	t->keyed = 1;
	return ipk_transport_send(t, IPK_FR_AUTH_OK, "", 0, err);
}

/* ---- file transfer -------------------------------------------------------- */

static void hash_hex(XXH128_hash_t h, char out[33])
{
	ipk_id_hex(h.high64, h.low64, out);
}

int ipk_file_hash(const char *path, char out[33], uint64_t *size, struct ipk_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ipk_err_set(err, IPK_EXIT_NOINPUT, "open '%s': %s", path, strerror(errno));
	XXH3_state_t *s = XXH3_createState();
	uint8_t *buf = malloc(1 << 20);
	if (!s || !buf) {
		XXH3_freeState(s);
		free(buf);
		close(fd);
		return ipk_err_set(err, IPK_EXIT_OSERR, "hash '%s': out of memory", path);
	}
	XXH3_128bits_reset(s);
	uint64_t total = 0;
	int rc = 0;
	for (;;) {
		ssize_t r = read(fd, buf, 1 << 20);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = ipk_err_set(err, IPK_EXIT_IOERR, "read '%s': %s", path, strerror(errno));
			break;
		}
		if (r == 0)
			break;
		XXH3_128bits_update(s, buf, (size_t)r);
		total += (uint64_t)r;
	}
	if (rc == 0) {
		hash_hex(XXH3_128bits_digest(s), out);
		if (size)
			*size = total;
	}
	XXH3_freeState(s);
	free(buf);
	close(fd);
	return rc;
}

static int valid_name(const char *name)
{
	return name && *name && *name != '.' && !strchr(name, '/') && strlen(name) < 200;
}

static ssize_t pread_full(int fd, uint8_t *buf, size_t n, off_t off)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, buf + got, n - got, off + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

int ipk_xfer_send(struct ipk_transport *t, const char *path, const char *name, size_t chunk,
		  struct ipk_xfer_stats *st, struct ipk_err *err)
{
	double t0 = ipk_mono();
	uint64_t wire0 = t->sent + t->received;
	struct ipk_xfer_stats s = { 0 };
	if (!chunk)
		chunk = 1 << 20;
	if (chunk > IPK_FRAME_MAX / 2)
		chunk = IPK_FRAME_MAX / 2;
	if (!valid_name(name))
		return ipk_err_set(err, IPK_EXIT_SOFTWARE, "send file '%s': bad name", name ? name : "");
	if (ipk_file_hash(path, s.hash, &s.size, err) < 0)
		return -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ipk_err_set(err, IPK_EXIT_NOINPUT, "open '%s': %s", path, strerror(errno));
	cJSON *have = NULL, *put = cJSON_CreateObject();
	uint8_t *raw = malloc(chunk), *frame = malloc(13 + (size_t)LZ4_compressBound((int)chunk));
	int rc = -1;
	if (!put || !raw || !frame) {
		ipk_err_set(err, IPK_EXIT_OSERR, "send file: out of memory");
		goto out;
	}
	cJSON_AddStringToObject(put, "name", name);
	cJSON_AddNumberToObject(put, "size", (double)s.size);
	cJSON_AddNumberToObject(put, "chunk", (double)chunk);
	cJSON_AddStringToObject(put, "hash", s.hash);
	if (ipk_transport_send_json(t, IPK_FR_PUT, put, err) < 0)
		goto out;
	if (!(have = ipk_transport_recv_json(t, IPK_FR_HAVE, err)))
		goto out;
	s.chunks = (s.size + chunk - 1) / chunk;
	if (cJSON_IsTrue(cJSON_GetObjectItem(have, "complete"))) {
		s.chunks_skipped = s.chunks;
		s.bytes_skipped = s.size;
	} else {
		const cJSON *held = cJSON_GetObjectItem(have, "chunks");
		int nheld = cJSON_GetArraySize(held);
		for (uint64_t i = 0; i < s.chunks; i++) {
			off_t off = (off_t)(i * chunk);
			size_t want = (size_t)(s.size - (uint64_t)off < chunk ? s.size - (uint64_t)off : chunk);
			ssize_t r = pread_full(fd, raw, want, off);
			if (r != (ssize_t)want) {
				ipk_err_set(err, IPK_EXIT_IOERR, "read '%s': %s", path, r < 0 ? strerror(errno) : "file shrank");
				goto out;
			}
			if ((int64_t)i < nheld && want == chunk) {
				char h[33];
				hash_hex(XXH3_128bits(raw, want), h);
				const char *theirs = cJSON_GetStringValue(cJSON_GetArrayItem(held, (int)i));
				if (theirs && !strcmp(theirs, h)) {
					s.chunks_skipped++;
					s.bytes_skipped += want;
					continue;
				}
			}
			be64(frame, (uint64_t)off);
			be32(frame + 8, (uint32_t)want);
			int c = LZ4_compress_default((const char *)raw, (char *)frame + 13, (int)want,
						     LZ4_compressBound((int)chunk));
			size_t flen;
			if (c > 0 && (size_t)c < want) {
				frame[12] = 1;
				flen = 13 + (size_t)c;
			} else {
				frame[12] = 0;
				memcpy(frame + 13, raw, want);
				flen = 13 + want;
			}
			if (ipk_transport_send(t, IPK_FR_DATA, frame, flen, err) < 0)
				goto out;
			s.bytes_sent += want;
		}
	}
	cJSON *done = cJSON_CreateObject();
	if (!done) {
		ipk_err_set(err, IPK_EXIT_OSERR, "send file: out of memory");
		goto out;
	}
	int src = ipk_transport_send_json(t, IPK_FR_DONE, done, err);
	cJSON_Delete(done);
	if (src < 0)
		goto out;
	cJSON *ok = ipk_transport_recv_json(t, IPK_FR_DONE, err);
	if (!ok)
		goto out;
	cJSON_Delete(ok);
	rc = 0;
out:
	s.seconds = ipk_mono() - t0;
	s.bytes_wire = t->sent + t->received - wire0;
	if (st)
		*st = s;
	cJSON_Delete(put);
	cJSON_Delete(have);
	free(raw);
	free(frame);
	close(fd);
	return rc;
}

/* Fail locally and tell the peer. */
static int recv_fail(struct ipk_transport *t, struct ipk_err *err)
{
	ipk_transport_send_error(t, err);
	return -1;
}

int ipk_xfer_recv(struct ipk_transport *t, const cJSON *put, const char *dir, char *out, size_t outn,
		  struct ipk_xfer_stats *st, struct ipk_err *err)
{
	double t0 = ipk_mono();
	struct ipk_xfer_stats s = { 0 };
	const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(put, "name"));
	const char *hash = cJSON_GetStringValue(cJSON_GetObjectItem(put, "hash"));
	double size = cJSON_GetNumberValue(cJSON_GetObjectItem(put, "size"));
	double chunkd = cJSON_GetNumberValue(cJSON_GetObjectItem(put, "chunk"));
	if (!valid_name(name) || !hash || strlen(hash) != 32 || !(size >= 0 && size < 1e15) ||
	    !(chunkd >= 4096 && chunkd <= IPK_FRAME_MAX / 2)) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "receive file from '%s': malformed offer", t->peer);
		return recv_fail(t, err);
	}
	size_t chunk = (size_t)chunkd;
	s.size = (uint64_t)size;
	snprintf(s.hash, sizeof(s.hash), "%s", hash);
	char path[PATH_MAX], part[PATH_MAX + 8];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
		ipk_err_set(err, IPK_EXIT_CANTCREAT, "receive file '%s': path too long", name);
		return recv_fail(t, err);
	}
	snprintf(part, sizeof(part), "%s.part", path);
	snprintf(out, outn, "%s", path);
	cJSON *have = cJSON_CreateObject();
	cJSON *arr = have ? cJSON_AddArrayToObject(have, "chunks") : NULL;
	uint8_t *buf = malloc(chunk), *raw = malloc(chunk);
	int fd = -1, rc = -1;
	if (!have || !arr || !buf || !raw) {
		ipk_err_set(err, IPK_EXIT_OSERR, "receive file: out of memory");
		recv_fail(t, err);
		goto out;
	}
	char h[33];
	uint64_t have_size;
	struct ipk_err ign = { 0 };
	if (ipk_file_hash(path, h, &have_size, &ign) == 0 && have_size == s.size && !strcmp(h, hash)) {
		cJSON_AddBoolToObject(have, "complete", 1);
		if (ipk_transport_send_json(t, IPK_FR_HAVE, have, err) < 0)
			goto out;
		s.bytes_skipped = s.size;
		fd = -2;
	} else {
		fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0) {
			ipk_err_set(err, IPK_EXIT_CANTCREAT, "create '%s': %s", part, strerror(errno));
			recv_fail(t, err);
			goto out;
		}
		struct stat sb;
		uint64_t held = fstat(fd, &sb) == 0 ? (uint64_t)sb.st_size / chunk : 0;
		for (uint64_t i = 0; i < held && i * chunk < s.size; i++) {
			if (pread_full(fd, buf, chunk, (off_t)(i * chunk)) != (ssize_t)chunk)
				break;
			hash_hex(XXH3_128bits(buf, chunk), h);
			cJSON_AddItemToArray(arr, cJSON_CreateString(h));
		}
		if (ipk_transport_send_json(t, IPK_FR_HAVE, have, err) < 0)
			goto out;
	}
	/* Data until DONE. After a local failure keep reading (and dropping)
	 * so that the sender hears the error when it asks for the result. */
	struct ipk_err local = { 0 };
	int failed = 0;
	for (;;) {
		int type;
		const uint8_t *p;
		size_t n;
		if (ipk_transport_recv(t, &type, &p, &n, err) < 0)
			goto out; /* the .part stays for a resume */
		if (type == IPK_FR_DONE)
			break;
		if (type == IPK_FR_ERROR) {
			peer_error(t, p, err);
			goto out;
		}
		if (type != IPK_FR_DATA || n < 13) {
			ipk_err_set(err, IPK_EXIT_DATAERR, "receive file '%s': unexpected frame type %d", name, type);
			recv_fail(t, err);
			goto out;
		}
		if (failed || fd < 0)
			continue;
		uint64_t off = get64(p);
		uint32_t rawlen = get32(p + 8);
		const uint8_t *data = p + 13;
		size_t dlen = n - 13;
		if (rawlen > chunk || off + rawlen > s.size || off % chunk) {
			ipk_err_set(&local, IPK_EXIT_DATAERR, "receive file '%s': chunk out of range", name);
			failed = 1;
			continue;
		}
		if (p[12] == 1) {
			int d = LZ4_decompress_safe((const char *)data, (char *)raw, (int)dlen, (int)rawlen);
			if (d != (int)rawlen) {
				ipk_err_set(&local, IPK_EXIT_DATAERR, "receive file '%s': bad LZ4 chunk at %llu", name,
					    (unsigned long long)off);
				failed = 1;
				continue;
			}
			data = raw;
		} else if (dlen != rawlen) {
			ipk_err_set(&local, IPK_EXIT_DATAERR, "receive file '%s': bad chunk length", name);
			failed = 1;
			continue;
		}
		size_t done = 0;
		while (done < rawlen) {
			ssize_t w = pwrite(fd, data + done, rawlen - done, (off_t)(off + done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				int code = (errno == ENOSPC || errno == EDQUOT) ? IPK_EXIT_CANTCREAT : IPK_EXIT_IOERR;
				ipk_err_set(&local, code, "write '%s': %s", part, strerror(errno));
				failed = 1;
				break;
			}
			done += (size_t)w;
		}
		if (failed) {
			close(fd);
			fd = -1;
			unlink(part); /* free the space; nothing to resume from */
			continue;
		}
		s.bytes_sent += rawlen;
		s.chunks++;
	}
	if (failed) {
		*err = local;
		recv_fail(t, err);
		goto out;
	}
	if (fd >= 0) {
		if (ftruncate(fd, (off_t)s.size) < 0 || fsync(fd) < 0) {
			int code = (errno == ENOSPC || errno == EDQUOT) ? IPK_EXIT_CANTCREAT : IPK_EXIT_IOERR;
			ipk_err_set(err, code, "write '%s': %s", part, strerror(errno));
			unlink(part);
			recv_fail(t, err);
			goto out;
		}
		if (ipk_file_hash(part, h, &have_size, err) < 0 || strcmp(h, hash) != 0) {
			if (!err->msg[0] || !strcmp(h, "") || strcmp(h, hash) != 0)
				ipk_err_set(err, IPK_EXIT_DATAERR, "receive file '%s': checksum mismatch (got %s, want %s)",
					    name, h, hash);
			unlink(part);
			recv_fail(t, err);
			goto out;
		}
		if (rename(part, path) < 0) {
			ipk_err_set(err, IPK_EXIT_CANTCREAT, "rename '%s': %s", part, strerror(errno));
			unlink(part);
			recv_fail(t, err);
			goto out;
		}
	}
	s.bytes_skipped = s.size - s.bytes_sent;
	cJSON *ok = cJSON_CreateObject();
	if (!ok) {
		ipk_err_set(err, IPK_EXIT_OSERR, "receive file: out of memory");
		goto out;
	}
	cJSON_AddStringToObject(ok, "hash", hash);
	rc = ipk_transport_send_json(t, IPK_FR_DONE, ok, err);
	cJSON_Delete(ok);
out:
	s.seconds = ipk_mono() - t0;
	if (st)
		*st = s;
	if (fd >= 0)
		close(fd);
	cJSON_Delete(have);
	free(buf);
	free(raw);
	return rc;
}

uint8_t *ipk_key_file_read(const char *path, size_t *len, struct ipk_err *err)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		ipk_err_set(err, IPK_EXIT_NOINPUT, "open key file '%s': %s", path, strerror(errno));
		return NULL;
	}
	uint8_t *buf = malloc(257);
	if (!buf) {
		fclose(f);
		ipk_err_set(err, IPK_EXIT_OSERR, "read key file: out of memory");
		return NULL;
	}
	size_t n = fread(buf, 1, 257, f);
	int bad = ferror(f);
	fclose(f);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	if (bad || n > 256 || n < 16) {
		free(buf);
		ipk_err_set(err, IPK_EXIT_CONFIG, "read key file '%s': %s", path,
			    bad ? "read error" : n < 16 ? "key shorter than 16 bytes" : "key longer than 256 bytes");
		return NULL;
	}
	*len = n;
	return buf;
}
