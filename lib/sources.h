/* sources.h - constructors of the sample sources ip-collect merges.
 *
 * Each returns a new source (free with ipk_source_free()) or NULL with err
 * set: IPK_EXIT_USAGE for a bad specification, IPK_EXIT_NOINPUT for a file
 * that cannot be opened, IPK_EXIT_UNAVAILABLE for a service that cannot be
 * reached at start. Once running, a source's failures are per interval and
 * reported through the collector's diag; the stream goes on.
 * Strings in the option structs are copied; the caller keeps its own.
 */
#ifndef IPK_SOURCES_H
#define IPK_SOURCES_H

#include "collect.h"

/* Map "name=session" pairs: which session a domain, device or trace is. */
struct ipk_session_map {
	const char *key;
	const char *session;
};

/* libvirt: per-domain stats (virConnectGetAllDomainStats) over uri (NULL:
 * LIBVIRT_DEFAULT_URI / libvirt's default). A domain's session is, in order:
 * the map entry for its name, its metadata element <session> in namespace
 * IPK_LIBVIRT_META_NS, or its name. host is the "host" field of its
 * samples (NULL: the URI's host part, or the local hostname). */
#define IPK_LIBVIRT_META_NS "https://ipkit.dev/xmlns/session/1"
struct ipk_libvirt_opts {
	const char *uri;
	const char *const *domains;            /* only these; NULL/ndomains 0 = all running */
	int ndomains;
	const struct ipk_session_map *map;
	int nmap;
	const char *host;
};
struct ipk_source *ipk_source_libvirt_new(const struct ipk_libvirt_opts *o, struct ipk_err *err);

/* Replay: a Balabit mouse-dynamics CSV file, a directory of them (each file
 * one session, named USER/session_ID when the parent folder is USER), or a
 * stream of ipkit "sample" records ("-" = stdin). Records of other types in
 * a sample stream are passed to passthrough unchanged and in order. */
enum ipk_replay_format { IPK_REPLAY_AUTO, IPK_REPLAY_BALABIT, IPK_REPLAY_SAMPLES };
struct ipk_replay_opts {
	const char *path;
	const char *session;  /* NULL: from the file name */
	enum ipk_replay_format format;
	double max_jump;      /* seconds; a forward jump larger than this is an absurd jump (default 3600) */
	int strict;           /* bad sample records stop the replay with an error */
	struct ipk_writer *passthrough;
};
struct ipk_source *ipk_source_replay_new(const struct ipk_replay_opts *o, struct ipk_err *err);

/* Prometheus text exposition scraped over HTTP(S) with libcurl, once per
 * interval. Each map line turns metrics into a sample field:
 *   METRIC[{label="value",...}]=FIELD[@LABEL][*SCALE][:rate]
 * LABEL names the label that carries the session (default "session"), :rate
 * turns a counter into its increase over the interval. */
struct ipk_prom_opts {
	const char *url;
	const char *const *map;
	int nmap;
	const char *session;  /* session for series without a session label */
	double timeout;       /* seconds per scrape (default: the interval) */
};
struct ipk_source *ipk_source_prom_new(const struct ipk_prom_opts *o, struct ipk_err *err);

/* Linux input devices (evdev): key presses, button clicks, wheel and pointer
 * motion read from /dev/input/event* (or any file of struct input_event). */
struct ipk_evdev_opts {
	const char *path;
	const char *session;
};
struct ipk_source *ipk_source_evdev_new(const struct ipk_evdev_opts *o, struct ipk_err *err);

/* NVIDIA GPUs through NVML loaded with dlopen (libnvidia-ml.so.1): GPU
 * utilisation and memory per session. Without the library or a GPU this
 * fails with IPK_EXIT_UNAVAILABLE; fields are then absent, never zero. */
struct ipk_nvml_opts {
	const struct ipk_session_map *map; /* GPU index or PCI bus id -> session */
	int nmap;
	const char *session; /* session for unmapped GPUs (NULL: "gpuN") */
};
struct ipk_source *ipk_source_nvml_new(const struct ipk_nvml_opts *o, struct ipk_err *err);

#endif
