#include "sample.h"
#include "record.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	const char *name;
	enum ipk_merge merge;
} fields[IPK_F_COUNT] = {
	[IPK_F_EVENTS] = { "events", IPK_MERGE_SUM },
	[IPK_F_MOUSE_PX] = { "mouse_px", IPK_MERGE_SUM },
	[IPK_F_CLICKS] = { "clicks", IPK_MERGE_SUM },
	[IPK_F_SCROLLS] = { "scrolls", IPK_MERGE_SUM },
	[IPK_F_KEYS] = { "keys", IPK_MERGE_SUM },
	[IPK_F_INPUT_AGE] = { "input_age_s", IPK_MERGE_MIN },
	[IPK_F_RX_PKTS] = { "rx_pkts", IPK_MERGE_SUM },
	[IPK_F_TX_PKTS] = { "tx_pkts", IPK_MERGE_SUM },
	[IPK_F_RX_BYTES] = { "rx_bytes", IPK_MERGE_SUM },
	[IPK_F_TX_BYTES] = { "tx_bytes", IPK_MERGE_SUM },
	[IPK_F_CPU] = { "cpu", IPK_MERGE_MAX },
	[IPK_F_CPU_S] = { "cpu_s", IPK_MERGE_MAX },
	[IPK_F_BLK_RD_BYTES] = { "blk_rd_bytes", IPK_MERGE_SUM },
	[IPK_F_BLK_WR_BYTES] = { "blk_wr_bytes", IPK_MERGE_SUM },
	[IPK_F_BLK_RD_REQS] = { "blk_rd_reqs", IPK_MERGE_SUM },
	[IPK_F_BLK_WR_REQS] = { "blk_wr_reqs", IPK_MERGE_SUM },
	[IPK_F_MEM_BYTES] = { "mem_bytes", IPK_MERGE_LAST },
	[IPK_F_RSS_BYTES] = { "rss_bytes", IPK_MERGE_LAST },
	[IPK_F_GPU] = { "gpu", IPK_MERGE_MAX },
	[IPK_F_GPU_MEM_BYTES] = { "gpu_mem_bytes", IPK_MERGE_LAST },
	[IPK_F_FPS] = { "fps", IPK_MERGE_LAST },
};

const char *ipk_field_name(enum ipk_field f)
{
	return (unsigned)f < IPK_F_COUNT ? fields[f].name : NULL;
}

int ipk_field_lookup(const char *name)
{
	for (int f = 0; f < IPK_F_COUNT; f++)
		if (strcmp(fields[f].name, name) == 0)
			return f;
	return -1;
}

enum ipk_merge ipk_field_merge(enum ipk_field f)
{
	return fields[f].merge;
}

static void copy_str(char *dst, size_t n, const char *src)
{
	if (!src)
		src = "";
	size_t l = strlen(src);
	if (l >= n)
		l = n - 1;
	memcpy(dst, src, l);
	dst[l] = '\0';
}

static void add_source(struct ipk_sample *s, const char *source)
{
	if (!source || !*source)
		return;
	for (int i = 0; i < s->nsources; i++)
		if (strcmp(s->sources[i], source) == 0)
			return;
	if (s->nsources < IPK_SOURCES_MAX)
		copy_str(s->sources[s->nsources++], sizeof(s->sources[0]), source);
}

void ipk_sample_init(struct ipk_sample *s, const char *session, const char *source, double ts, double interval)
{
	memset(s, 0, sizeof(*s));
	copy_str(s->session, sizeof(s->session), session);
	s->ts = ts;
	s->interval = interval;
	add_source(s, source);
}

void ipk_sample_merge(struct ipk_sample *dst, const struct ipk_sample *src)
{
	for (int f = 0; f < IPK_F_COUNT; f++) {
		if (!ipk_sample_has(src, f))
			continue;
		double a = dst->val[f], b = src->val[f];
		if (!ipk_sample_has(dst, f)) {
			ipk_sample_set_field(dst, f, b);
			continue;
		}
		switch (fields[f].merge) {
		case IPK_MERGE_SUM:
			dst->val[f] = a + b;
			break;
		case IPK_MERGE_MAX:
			dst->val[f] = fmax(a, b);
			break;
		case IPK_MERGE_MIN:
			dst->val[f] = fmin(a, b);
			break;
		case IPK_MERGE_LAST:
			dst->val[f] = b;
			break;
		}
	}
	if (!dst->user[0])
		copy_str(dst->user, sizeof(dst->user), src->user);
	if (!dst->host[0])
		copy_str(dst->host, sizeof(dst->host), src->host);
	for (int i = 0; i < src->nsources; i++)
		add_source(dst, src->sources[i]);
}

cJSON *ipk_sample_to_json(const struct ipk_sample *s)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	int ok = cJSON_AddStringToObject(o, "type", "sample") && cJSON_AddNumberToObject(o, "v", 1) &&
		 cJSON_AddNumberToObject(o, "ts", s->ts) && cJSON_AddStringToObject(o, "session", s->session) &&
		 cJSON_AddNumberToObject(o, "interval", s->interval);
	if (ok && s->user[0])
		ok = cJSON_AddStringToObject(o, "user", s->user) != NULL;
	if (ok && s->host[0])
		ok = cJSON_AddStringToObject(o, "host", s->host) != NULL;
	if (ok && s->nsources) {
		cJSON *a = cJSON_AddArrayToObject(o, "sources");
		ok = a != NULL;
		for (int i = 0; ok && i < s->nsources; i++) {
			cJSON *str = cJSON_CreateString(s->sources[i]);
			ok = str && cJSON_AddItemToArray(a, str);
		}
	}
	for (int f = 0; ok && f < IPK_F_COUNT; f++)
		if (ipk_sample_has(s, f))
			ok = cJSON_AddNumberToObject(o, fields[f].name, s->val[f]) != NULL;
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

size_t ipk_sample_format(const struct ipk_sample *s, char *buf, size_t cap)
{
	/* Worst case: escaped strings (6 bytes per byte) plus 32 bytes and the
	 * key per number; check the bound once instead of per field. */
	size_t need = 64 + 6 * (sizeof(s->session) + sizeof(s->user) + sizeof(s->host)) +
		      IPK_SOURCES_MAX * (6 * sizeof(s->sources[0]) + 3) + IPK_F_COUNT * 56;
	if (cap < need)
		return 0;
	size_t n = 0;
#define PUT(lit) (memcpy(buf + n, lit, sizeof(lit) - 1), n += sizeof(lit) - 1)
	PUT("{\"type\":\"sample\",\"v\":1,\"ts\":");
	n += ipk_json_number(buf + n, s->ts);
	PUT(",\"session\":");
	n += ipk_json_string(buf + n, s->session);
	PUT(",\"interval\":");
	n += ipk_json_number(buf + n, s->interval);
	if (s->user[0]) {
		PUT(",\"user\":");
		n += ipk_json_string(buf + n, s->user);
	}
	if (s->host[0]) {
		PUT(",\"host\":");
		n += ipk_json_string(buf + n, s->host);
	}
	if (s->nsources) {
		PUT(",\"sources\":[");
		for (int i = 0; i < s->nsources; i++) {
			if (i)
				buf[n++] = ',';
			n += ipk_json_string(buf + n, s->sources[i]);
		}
		buf[n++] = ']';
	}
	for (int f = 0; f < IPK_F_COUNT; f++) {
		if (!ipk_sample_has(s, f))
			continue;
		buf[n++] = ',';
		buf[n++] = '"';
		size_t kl = strlen(fields[f].name);
		memcpy(buf + n, fields[f].name, kl);
		n += kl;
		buf[n++] = '"';
		buf[n++] = ':';
		n += ipk_json_number(buf + n, s->val[f]);
	}
	buf[n++] = '}';
	buf[n] = '\0';
#undef PUT
	return n;
}

int ipk_sample_from_json(const cJSON *obj, struct ipk_sample *s, struct ipk_err *err)
{
	memset(s, 0, sizeof(*s));
	const char *session = cJSON_GetObjectItemCaseSensitive(obj, "session")->valuestring;
	if (!session[0])
		return ipk_err_set(err, IPK_EXIT_DATAERR, "sample record: field 'session' must not be empty");
	copy_str(s->session, sizeof(s->session), session);
	s->ts = cJSON_GetObjectItemCaseSensitive(obj, "ts")->valuedouble;
	s->interval = cJSON_GetObjectItemCaseSensitive(obj, "interval")->valuedouble;
	if (!(s->interval > 0) || !isfinite(s->interval))
		return ipk_err_set(err, IPK_EXIT_DATAERR, "sample record: field 'interval' must be above 0 seconds (%g)",
				   s->interval);
	static const char *const names[] = { "user", "host" };
	char *dst[] = { s->user, s->host };
	size_t cap[] = { sizeof(s->user), sizeof(s->host) };
	const cJSON *it;
	for (int i = 0; i < 2; i++) {
		if (!(it = cJSON_GetObjectItemCaseSensitive(obj, names[i])))
			continue;
		if (!cJSON_IsString(it))
			return ipk_err_set(err, IPK_EXIT_DATAERR, "sample record: field '%s' must be a string", names[i]);
		copy_str(dst[i], cap[i], it->valuestring);
	}
	const cJSON *src = cJSON_GetObjectItemCaseSensitive(obj, "sources");
	if (src && !cJSON_IsArray(src))
		return ipk_err_set(err, IPK_EXIT_DATAERR, "sample record: field 'sources' must be an array of strings");
	cJSON_ArrayForEach(it, src) {
		if (!cJSON_IsString(it))
			return ipk_err_set(err, IPK_EXIT_DATAERR, "sample record: field 'sources' must be an array of strings");
		add_source(s, it->valuestring);
	}
	for (int f = 0; f < IPK_F_COUNT; f++) {
		it = cJSON_GetObjectItemCaseSensitive(obj, fields[f].name);
		if (!it)
			continue;
		if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
			return ipk_err_set(err, IPK_EXIT_DATAERR, "sample record: field '%s' must be a number", fields[f].name);
		double v = it->valuedouble;
		if (v < 0)
			return ipk_err_set(err, IPK_EXIT_DATAERR, "sample record: field '%s' must not be negative (%g)",
					   fields[f].name, v);
		if ((f == IPK_F_CPU || f == IPK_F_GPU) && v > 1)
			return ipk_err_set(err, IPK_EXIT_DATAERR,
					   "sample record: field '%s' is a utilisation from 0 to 1 (%g)", fields[f].name, v);
		ipk_sample_set_field(s, f, v);
	}
	return 0;
}

int ipk_sample_set_add(struct ipk_sample_set *set, const struct ipk_sample *s)
{
	for (int i = 0; i < set->n; i++) {
		if (strcmp(set->v[i].session, s->session) == 0) {
			ipk_sample_merge(&set->v[i], s);
			return 0;
		}
	}
	if (set->n == set->cap) {
		int cap = set->cap ? set->cap * 2 : 16;
		struct ipk_sample *v = realloc(set->v, cap * sizeof(*v));
		if (!v)
			return -1;
		set->v = v;
		set->cap = cap;
	}
	set->v[set->n++] = *s;
	return 0;
}

void ipk_sample_set_clear(struct ipk_sample_set *set)
{
	set->n = 0;
}

void ipk_sample_set_free(struct ipk_sample_set *set)
{
	free(set->v);
	set->v = NULL;
	set->n = set->cap = 0;
}
