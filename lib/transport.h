/* transport.h - framed, authenticated streams for ip-migrate, and a
 * resumable file transfer on top of them.
 *
 * A stream is a pair of file descriptors (a TCP socket twice, or the pipes
 * of an ssh child). Every frame is
 *     "IK" type(1) 0(1) length(4, big-endian) payload tag(32)
 * where tag is HMAC-SHA256 under the session key of (direction, sequence
 * number, header, payload) once both sides are authenticated, and SHA-256
 * of the same before (or for the whole session when no key is used, over
 * ssh, which authenticates the peer itself). A frame whose tag does not
 * match, that arrives out of sequence or that comes from the wrong side is
 * refused: the stream fails with IPK_EXIT_DATAERR.
 *
 * Authentication (ipk_transport_handshake) is a mutual challenge-response on
 * a pre-shared key: the client sends a random nonce, the server answers with
 * its own nonce and HMAC(key, "ipkit-srv" nc ns), the client checks it and
 * answers HMAC(key, "ipkit-cli" nc ns), the server checks that. The session
 * key is HMAC(key, "ipkit-key" nc ns). A side that fails a check sends an
 * ERROR frame and the handshake returns -1 (IPK_EXIT_CONFIG, "authenticate
 * 'PEER': ..."); the server reads nothing else from such a peer.
 *
 * File transfer (ipk_xfer_send / ipk_xfer_recv): the sender offers a file
 * (name, size, chunk size, XXH3-128 of the whole); the receiver answers
 * with the XXH3-128 of each whole chunk it already holds in NAME.part (or
 * "complete" when NAME is already there with that hash); the sender skips
 * those chunks and sends the others LZ4-compressed; the receiver checks the
 * whole file's hash, fsyncs and renames NAME.part to NAME. A broken stream
 * leaves NAME.part for the next try to resume; a failed write (disk full)
 * or a wrong hash removes it.
 *
 * Ownership: a transport owns its descriptors when created with own_fds and
 * closes them in ipk_transport_free. Payloads returned by
 * ipk_transport_recv point into the transport's buffer, valid until the
 * next receive. cJSON returned by ipk_transport_recv_json is the caller's.
 */
#ifndef IPK_TRANSPORT_H
#define IPK_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ipk.h"

#define IPK_FRAME_MAX (8u << 20) /* largest payload */

enum ipk_frame_type {
	IPK_FR_HELLO = 1,     /* client: magic, flags, nonce */
	IPK_FR_CHALLENGE = 2, /* server: nonce, proof */
	IPK_FR_AUTH = 3,      /* client: proof */
	IPK_FR_AUTH_OK = 4,   /* server: empty, first frame under the session key */
	IPK_FR_ERROR = 5,     /* JSON {"code":N,"message":"..."} */
	IPK_FR_JSON = 6,      /* JSON control message {"op":...} */
	IPK_FR_PUT = 7,       /* JSON file offer */
	IPK_FR_HAVE = 8,      /* JSON: chunks held */
	IPK_FR_DATA = 9,      /* offset(8) rawlen(4) coding(1) bytes */
	IPK_FR_DONE = 10,     /* JSON: end of a file */
};

struct ipk_transport_opts {
	const uint8_t *key;  /* pre-shared key, NULL for none (ssh) */
	size_t keylen;
	double timeout;      /* seconds without progress before a read/write fails; <= 0: 30 */
	double bwlimit;      /* bytes per second sent, 0 for no limit */
	const char *peer;    /* name in messages ("10.0.0.2:7300", "ssh host") */
	/* Test only: flip one byte of the payload of the first frame sent
	 * after this many bytes (0: never). */
	uint64_t corrupt_after;
};

struct ipk_transport;

/* A transport reading rfd and writing wfd (may be equal). own_fds: close
 * them in ipk_transport_free. The descriptors are made non-blocking.
 * Returns NULL with err (IPK_EXIT_OSERR) when out of memory. */
struct ipk_transport *ipk_transport_new(int rfd, int wfd, int own_fds, const struct ipk_transport_opts *o,
					struct ipk_err *err);
void ipk_transport_free(struct ipk_transport *t);

/* Authenticate the peer (server: the listening side). Returns 0, or -1
 * with err: IPK_EXIT_CONFIG when a key check failed or one side has a key
 * and the other none, IPK_EXIT_DATAERR for a malformed exchange,
 * IPK_EXIT_TEMPFAIL / IPK_EXIT_IOERR when the stream broke. */
int ipk_transport_handshake(struct ipk_transport *t, int server, struct ipk_err *err);

/* Send one frame. Returns 0, or -1 with err (IPK_EXIT_TEMPFAIL on a
 * timeout or a closed peer, IPK_EXIT_IOERR on another write error). */
int ipk_transport_send(struct ipk_transport *t, int type, const void *payload, size_t len, struct ipk_err *err);

/* Receive one frame: *type, *payload (valid until the next receive) and
 * *len. Returns 0, or -1 with err (IPK_EXIT_TEMPFAIL: timeout or end of
 * stream; IPK_EXIT_DATAERR: bad frame or integrity failure). An ERROR
 * frame is returned as a frame like any other. */
int ipk_transport_recv(struct ipk_transport *t, int *type, const uint8_t **payload, size_t *len, struct ipk_err *err);

/* Send a JSON object as one frame of type. Returns as ipk_transport_send. */
int ipk_transport_send_json(struct ipk_transport *t, int type, const cJSON *obj, struct ipk_err *err);

/* Send an ERROR frame carrying e's code and message (best effort: failures
 * to send are ignored). */
void ipk_transport_send_error(struct ipk_transport *t, const struct ipk_err *e);

/* The stream cannot be used any more: send an ERROR frame marked fatal
 * (the peer's transport then counts as broken), then read and drop what
 * the peer still sends until it closes or timeout seconds pass, so that it
 * reads the error instead of a connection reset. */
void ipk_transport_abandon(struct ipk_transport *t, const struct ipk_err *e, double timeout);

/* True once a send or receive failed at the transport level, or the peer
 * abandoned the stream: no further request can be answered. */
int ipk_transport_broken(const struct ipk_transport *t);

/* Receive a JSON frame of type want. An ERROR frame from the peer becomes
 * -1/NULL with err = the peer's code and "PEER: message". Returns the
 * object (caller frees) or NULL with err. */
cJSON *ipk_transport_recv_json(struct ipk_transport *t, int want, struct ipk_err *err);

/* Bytes sent and received on the wire so far (headers and tags included). */
/* The seconds without progress after which a read or write fails; change
 * it for a step known to take long (a restore, a verification). */
double ipk_transport_timeout(const struct ipk_transport *t);
void ipk_transport_set_timeout(struct ipk_transport *t, double seconds);

uint64_t ipk_transport_sent(const struct ipk_transport *t);
uint64_t ipk_transport_received(const struct ipk_transport *t);
const char *ipk_transport_peer(const struct ipk_transport *t);

struct ipk_xfer_stats {
	uint64_t size;          /* bytes of the file */
	uint64_t bytes_skipped; /* bytes the receiver already held */
	uint64_t bytes_sent;    /* raw bytes of the chunks sent */
	uint64_t bytes_wire;    /* transport bytes this transfer used */
	uint64_t chunks, chunks_skipped;
	char hash[33];          /* XXH3-128 of the file, hex */
	double seconds;
};

/* Offer the file at path under name (a plain file name, no '/') and send
 * what the receiver lacks; wait for its confirmation. chunk: bytes per
 * chunk (0: 1 MiB). Returns 0, or -1 with err: IPK_EXIT_NOINPUT (cannot
 * read path), the transport's codes, or the receiver's error (disk full:
 * IPK_EXIT_CANTCREAT; hash mismatch: IPK_EXIT_DATAERR). */
int ipk_xfer_send(struct ipk_transport *t, const char *path, const char *name, size_t chunk,
		  struct ipk_xfer_stats *st, struct ipk_err *err);

/* Serve one offer: put is the PUT frame's JSON, already received. The file
 * lands as dir/NAME; its path goes to out (size n). On a local failure the
 * error is sent to the peer as well. Returns 0, or -1 with err. */
int ipk_xfer_recv(struct ipk_transport *t, const cJSON *put, const char *dir, char *out, size_t n,
		  struct ipk_xfer_stats *st, struct ipk_err *err);

/* XXH3-128 of a whole file as 32 hex digits. Returns 0, or -1 with err
 * (IPK_EXIT_NOINPUT / IPK_EXIT_IOERR). */
int ipk_file_hash(const char *path, char out[33], uint64_t *size, struct ipk_err *err);

/* Read a key file: its bytes, trailing newline(s) removed; at least 16
 * bytes, at most 256. Returns a malloc'd buffer (caller frees) and *len, or NULL with err
 * (IPK_EXIT_NOINPUT, IPK_EXIT_CONFIG when too short). */
uint8_t *ipk_key_file_read(const char *path, size_t *len, struct ipk_err *err);

#endif
