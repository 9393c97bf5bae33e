/* sample.h - one session's activity over one interval, and how samples from
 * several sources merge. The JSON form is the "sample" record of
 * ipkit-records(7); a field a source does not provide is absent (masked),
 * never zero-filled.
 *
 * Ownership: plain values, no pointers; copy freely. A sample set owns its
 * array; free it with ipk_sample_set_free().
 */
#ifndef IPK_SAMPLE_H
#define IPK_SAMPLE_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include <math.h>

#include "ipk.h"

enum ipk_field {
	/* client input, counts per interval */
	IPK_F_EVENTS,     /* all input events */
	IPK_F_MOUSE_PX,   /* pointer distance travelled, pixels */
	IPK_F_CLICKS,     /* button presses */
	IPK_F_SCROLLS,    /* wheel events */
	IPK_F_KEYS,       /* key presses */
	IPK_F_INPUT_AGE,  /* seconds from the last input event to the interval's end */
	/* network, per interval */
	IPK_F_RX_PKTS,
	IPK_F_TX_PKTS,
	IPK_F_RX_BYTES,
	IPK_F_TX_BYTES,
	/* compute */
	IPK_F_CPU,        /* utilisation of the session's vCPUs, 0..1 */
	IPK_F_CPU_S,      /* CPU seconds used in the interval */
	IPK_F_BLK_RD_BYTES,
	IPK_F_BLK_WR_BYTES,
	IPK_F_BLK_RD_REQS,
	IPK_F_BLK_WR_REQS,
	IPK_F_MEM_BYTES,  /* memory currently assigned (balloon), bytes */
	IPK_F_RSS_BYTES,  /* resident set of the session's process, bytes */
	IPK_F_GPU,        /* GPU utilisation, 0..1 */
	IPK_F_GPU_MEM_BYTES,
	IPK_F_FPS,        /* frames per second */
	IPK_F_COUNT
};

/* How a field combines when two sources report it for the same session. */
enum ipk_merge { IPK_MERGE_SUM, IPK_MERGE_MAX, IPK_MERGE_MIN, IPK_MERGE_LAST };

/* JSON name of a field ("events", "mouse_px", ...). */
const char *ipk_field_name(enum ipk_field f);
/* Field by JSON name, or -1. */
int ipk_field_lookup(const char *name);
enum ipk_merge ipk_field_merge(enum ipk_field f);

#define IPK_SOURCES_MAX 8

struct ipk_sample {
	char session[128];
	char user[64];     /* "" when unknown */
	char host[128];    /* where the session runs, "" when unknown */
	double ts;         /* end of the interval, Unix seconds */
	double interval;   /* seconds */
	double val[IPK_F_COUNT];
	uint32_t mask;     /* bit f set: val[f] is provided */
	char sources[IPK_SOURCES_MAX][16];
	int nsources;
};

static inline void ipk_sample_set_field(struct ipk_sample *s, enum ipk_field f, double v)
{
	s->val[f] = v;
	s->mask |= 1u << f;
}

static inline int ipk_sample_has(const struct ipk_sample *s, enum ipk_field f)
{
	return (s->mask >> f) & 1u;
}

/* The input events of the interval as labels see them (eval.h): the count,
 * or NaN when the sample does not say. */
static inline float ipk_sample_events(const struct ipk_sample *s)
{
	return ipk_sample_has(s, IPK_F_EVENTS) ? (float)fmax(s->val[IPK_F_EVENTS], 0) : NAN;
}

/* Start a sample: zero values, no fields, session and source named. */
void ipk_sample_init(struct ipk_sample *s, const char *session, const char *source, double ts, double interval);

/* Merge src into dst (same session and interval): fields combine by their
 * merge rule, sources are listed once, user/host kept if dst lacks them. */
void ipk_sample_merge(struct ipk_sample *dst, const struct ipk_sample *src);

/* The sample as a record object; NULL when out of memory. Caller frees. */
cJSON *ipk_sample_to_json(const struct ipk_sample *s);

/* The sample record as one line of JSON text in buf (no newline), the same
 * record ipk_sample_to_json() builds, written without a cJSON tree because
 * it is ip-collect's hot path. Returns the length, or 0 when cap (use
 * IPK_SAMPLE_TEXT_MAX) is too small. */
#define IPK_SAMPLE_TEXT_MAX 4096
size_t ipk_sample_format(const struct ipk_sample *s, char *buf, size_t cap);

/* Parse a "sample" record (already validated by the reader) into s. Fields
 * of unknown name are ignored. Gives -1 with err naming the field when the
 * record is outside ipkit-records(7): an empty session, an interval not
 * above 0, a user or host that is not a string, sources that are not an
 * array of strings, a known field that is not a finite number, a negative
 * one (every field is a count, an amount or a time), or a cpu or gpu
 * utilisation above 1. */
int ipk_sample_from_json(const cJSON *obj, struct ipk_sample *s, struct ipk_err *err);

/* Samples of one interval, at most one per session (merging on add). */
struct ipk_sample_set {
	struct ipk_sample *v;
	int n, cap;
};

/* Add s, merging with the sample of the same session if present. Returns 0,
 * or -1 when out of memory. */
int ipk_sample_set_add(struct ipk_sample_set *set, const struct ipk_sample *s);
void ipk_sample_set_clear(struct ipk_sample_set *set);
void ipk_sample_set_free(struct ipk_sample_set *set);

#endif
