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

/* Prometheus text exposition (format 0.0.4, promtext.h) scraped over
 * HTTP(S) with libcurl: a baseline scrape at start, then one per interval.
 * Each map line turns metrics into a sample field:
 *   METRIC[{label="value",...}]=FIELD[@LABEL][*SCALE][:rate]
 * The label set selects series by equality (an empty value matches a series
 * without the label); FIELD is a sample field name (sample.h); LABEL names
 * the label that carries the session (default "session"; series without it
 * go to session, or the local host name); SCALE multiplies; :rate turns a
 * counter into its increase since the previous interval's scrape (first
 * sight and the scrape after a failed one: baseline only; a decrease is a
 * reset and gives the new value). @, * and : may come in any order. Series
 * giving the same session and field combine by the field's merge rule; NaN
 * and infinite values leave the field absent. A bad URL (not http/https) or
 * map line, or no map line, is IPK_EXIT_USAGE. Failed scrapes (transfer
 * error, timeout, HTTP status not 2xx; redirects are not followed) fail the
 * interval; malformed lines are skipped with a warning naming the line. */
struct ipk_prom_opts {
	const char *url;
	const char *const *map;
	int nmap;
	const char *session;  /* session for series without a session label */
	double timeout;       /* seconds per scrape (0: the interval; 10 s for the baseline scrape) */
};
struct ipk_source *ipk_source_prom_new(const struct ipk_prom_opts *o, struct ipk_err *err);

/* Linux input devices (evdev): key presses, button clicks, wheel and pointer
 * motion read from /dev/input/event* (or any file of struct input_event:
 * a FIFO, a regular file), never grabbed. Fields keys, clicks, scrolls,
 * mouse_px, events, input_age_s as defined in source_evdev.c; session:
 * the one given or the local host name. Cannot open: IPK_EXIT_NOINPUT (a
 * character device that is not evdev too). An unplugged device (ENODEV)
 * gives a warning, adds nothing, and is reopened when it comes back. */
struct ipk_evdev_opts {
	const char *path;
	const char *session;
};
struct ipk_source *ipk_source_evdev_new(const struct ipk_evdev_opts *o, struct ipk_err *err);

/* NVIDIA GPUs through NVML loaded with dlopen (libnvidia-ml.so.1): GPU
 * utilisation (0..1, the maximum over a session's GPUs) and memory used
 * (bytes, summed) per session. Without the library, when nvmlInit_v2 fails
 * or there is no GPU this fails with IPK_EXIT_UNAVAILABLE ("nvml
 * unavailable: ..."); fields are then absent, never zero. */
struct ipk_nvml_opts {
	const struct ipk_session_map *map; /* GPU index, PCI bus id or UUID -> session */
	int nmap;
	const char *session; /* session for unmapped GPUs (NULL: "gpuN") */
};
struct ipk_source *ipk_source_nvml_new(const struct ipk_nvml_opts *o, struct ipk_err *err);

#endif
