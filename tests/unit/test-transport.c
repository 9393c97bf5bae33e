/* Transport: mutual authentication (right key, wrong key, missing key),
 * per-frame integrity (a flipped byte is refused), file transfer with
 * resume (chunks the receiver holds are skipped) and its checksum. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "transport.h"

struct server {
	int fd;
	const char *key;
	const char *dir;
	int hs_rc, hs_code;
	int frames_after; /* frames read after a failed handshake */
	int xfers;        /* files to receive */
	int rc, code;
	struct ipk_xfer_stats st;
	char msg[1024];
};

static void *serve(void *arg)
{
	struct server *s = arg;
	struct ipk_err err = { 0 };
	struct ipk_transport_opts o = { .key = (const uint8_t *)s->key, .keylen = s->key ? strlen(s->key) : 0,
					.timeout = 5, .peer = "client" };
	struct ipk_transport *t = ipk_transport_new(s->fd, s->fd, 1, &o, &err);
	s->hs_rc = ipk_transport_handshake(t, 1, &err);
	s->hs_code = err.code;
	if (s->hs_rc < 0) {
		ipk_transport_free(t);
		return NULL;
	}
	s->rc = 0;
	for (int i = 0; i < s->xfers || s->xfers == 0; i++) {
		cJSON *j = ipk_transport_recv_json(t, s->xfers ? IPK_FR_PUT : IPK_FR_JSON, &err);
		if (!j) {
			s->rc = -1;
			s->code = err.code;
			snprintf(s->msg, sizeof(s->msg), "%s", err.msg);
			break;
		}
		if (!s->xfers) {
			ipk_transport_send_json(t, IPK_FR_JSON, j, &err); /* echo */
			cJSON_Delete(j);
			continue;
		}
		char path[4096];
		s->rc = ipk_xfer_recv(t, j, s->dir, path, sizeof(path), &s->st, &err);
		cJSON_Delete(j);
		if (s->rc < 0) {
			s->code = err.code;
			snprintf(s->msg, sizeof(s->msg), "%s", err.msg);
			break;
		}
	}
	ipk_transport_free(t);
	return NULL;
}

/* Run a client against a server thread; returns the client transport. */
static struct ipk_transport *start(struct server *s, pthread_t *th, const char *ckey, uint64_t corrupt)
{
	int sv[2];
	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	s->fd = sv[1];
	pthread_create(th, NULL, serve, s);
	struct ipk_transport_opts o = { .key = (const uint8_t *)ckey, .keylen = ckey ? strlen(ckey) : 0, .timeout = 5,
					.peer = "server", .corrupt_after = corrupt };
	struct ipk_err err = { 0 };
	return ipk_transport_new(sv[0], sv[0], 1, &o, &err);
}

static int write_file(const char *path, const uint8_t *d, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return -1;
	int rc = write(fd, d, n) == (ssize_t)n ? 0 : -1;
	close(fd);
	return rc;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const char *key = "correct horse battery staple";
	struct ipk_err err = { 0 };
	pthread_t th;

	/* right key: handshake, then a JSON round trip under the session key */
	struct server s = { .key = key };
	struct ipk_transport *c = start(&s, &th, key, 0);
	int rc = ipk_transport_handshake(c, 0, &err);
	CHECK("handshake with the same key", rc == 0);
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "op", "hello");
	ipk_transport_send_json(c, IPK_FR_JSON, j, &err);
	cJSON_Delete(j);
	j = ipk_transport_recv_json(c, IPK_FR_JSON, &err);
	CHECK("json echo under the session key", j && !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "op")), "hello"));
	cJSON_Delete(j);
	ipk_transport_free(c);
	pthread_join(th, NULL);
	CHECK("server: handshake ok", s.hs_rc == 0);

	/* wrong key: both sides refuse with IPK_EXIT_CONFIG */
	struct server w = { .key = key };
	c = start(&w, &th, "not the right key at all", 0);
	memset(&err, 0, sizeof(err));
	rc = ipk_transport_handshake(c, 0, &err);
	CHECK("wrong key: client refuses", rc < 0 && err.code == IPK_EXIT_CONFIG);
	CHECK("wrong key: message says so", strstr(err.msg, "wrong key") != NULL);
	ipk_transport_free(c);
	pthread_join(th, NULL);
	CHECK("wrong key: server never passes authentication", w.hs_rc < 0);

	/* a client with no key meets a keyed server: refused */
	struct server nk = { .key = key };
	c = start(&nk, &th, NULL, 0);
	memset(&err, 0, sizeof(err));
	rc = ipk_transport_handshake(c, 0, &err);
	CHECK("no key: refused", rc < 0 && err.code == IPK_EXIT_CONFIG);
	ipk_transport_free(c);
	pthread_join(th, NULL);
	CHECK("no key: server refuses", nk.hs_rc < 0 && nk.hs_code == IPK_EXIT_CONFIG);

	/* a flipped byte in flight: the receiver refuses the frame */
	struct server cr = { .key = key };
	c = start(&cr, &th, key, 100);
	ipk_transport_handshake(c, 0, &err);
	j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "op", "a message long enough to be corrupted in the middle");
	ipk_transport_send_json(c, IPK_FR_JSON, j, &err);
	cJSON_Delete(j);
	ipk_transport_free(c);
	pthread_join(th, NULL);
	CHECK("corrupted frame refused (DATAERR)", cr.rc < 0 && cr.code == IPK_EXIT_DATAERR);
	CHECK("corrupted frame: integrity message", strstr(cr.msg, "integrity check failed") != NULL);

	/* file transfer, then a resume from a partial copy */
	char dir[] = "/tmp/ipk-test-transport.XXXXXX";
	if (!mkdtemp(dir)) {
		printf("not ok mkdtemp\n");
		return 0;
	}
	char src[4200], dst[4200], part[4300];
	snprintf(src, sizeof(src), "%s/src", dir);
	mkdir(strcat(strcpy(dst, dir), "/in"), 0700);
	size_t n = 5 * 1024 * 1024 + 1234;
	uint8_t *d = calloc(1, n);
	unsigned x = 1;
	for (size_t i = 0; i < n / 2; i++) { /* half random, half zeros */
		x = x * 1103515245 + 12345;
		d[i] = (uint8_t)(x >> 16);
	}
	write_file(src, d, n);
	struct server f = { .key = key, .dir = dst, .xfers = 1 };
	c = start(&f, &th, key, 0);
	ipk_transport_handshake(c, 0, &err);
	struct ipk_xfer_stats st;
	rc = ipk_xfer_send(c, src, "img", 1 << 20, &st, &err);
	ipk_transport_free(c);
	pthread_join(th, NULL);
	CHECK("transfer succeeds", rc == 0 && f.rc == 0);
	char h1[33], h2[33];
	char got[4300];
	snprintf(got, sizeof(got), "%s/img", dst);
	ipk_file_hash(src, h1, NULL, &err);
	CHECK("received file has the same hash", ipk_file_hash(got, h2, NULL, &err) == 0 && !strcmp(h1, h2));
	CHECK("first transfer skips nothing", st.bytes_skipped == 0 && st.bytes_sent == n);
	CHECK("LZ4 makes the wire smaller than the file", st.bytes_wire < n * 3 / 4);

	/* resume: a .part holding chunks 0..2 right and chunk 3 wrong */
	snprintf(part, sizeof(part), "%s/img2.part", dst);
	uint8_t *pd = malloc(4 << 20);
	memcpy(pd, d, 4 << 20);
	pd[(3 << 20) + 5] ^= 0xff;
	write_file(part, pd, 4 << 20);
	free(pd);
	struct server r = { .key = key, .dir = dst, .xfers = 2 };
	c = start(&r, &th, key, 0);
	ipk_transport_handshake(c, 0, &err);
	rc = ipk_xfer_send(c, src, "img2", 1 << 20, &st, &err);
	CHECK("resumed transfer succeeds", rc == 0);
	CHECK("resume skips the 3 chunks held", st.chunks_skipped == 3 && st.bytes_skipped == 3u << 20);
	snprintf(got, sizeof(got), "%s/img2", dst);
	CHECK("resumed file has the same hash", ipk_file_hash(got, h2, NULL, &err) == 0 && !strcmp(h1, h2));
	CHECK("no .part left", access(part, F_OK) != 0);
	rc = ipk_xfer_send(c, src, "img2", 1 << 20, &st, &err);
	CHECK("file already there: everything skipped", rc == 0 && st.bytes_skipped == n && st.bytes_sent == 0);
	ipk_transport_free(c);
	pthread_join(th, NULL);

	/* a missing source file */
	struct server m = { .key = key, .dir = dst, .xfers = 1 };
	c = start(&m, &th, key, 0);
	ipk_transport_handshake(c, 0, &err);
	rc = ipk_xfer_send(c, "/nonexistent/file", "x", 0, &st, &err);
	CHECK("missing source: NOINPUT", rc < 0 && err.code == IPK_EXIT_NOINPUT);
	ipk_transport_free(c);
	pthread_join(th, NULL);

	free(d);
	char cmd[4400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		printf("not ok cleanup\n");
	CHECK_DONE();
}
