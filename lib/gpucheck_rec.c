/* gpucheck_rec.c - the GPU check's JSON forms: the "gpucheck" record, the
 * "gpu" object of ip-migrate's "restored" reply and migration record, and
 * the receiver's step. See gpucheck.h. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "gpucheck.h"
#include "record.h"

static double ms3(double v)
{
	return round(v * 1e3) / 1e3;
}

int ipk_gpucheck_to_json(const struct ipk_gpucheck_result *r, cJSON *obj)
{
	int ok = cJSON_AddStringToObject(obj, "status", ipk_gpucheck_status_name(r->status)) != NULL;
	if (r->device[0])
		ok &= cJSON_AddStringToObject(obj, "device", r->device) != NULL;
	if (r->pixels) {
		ok &= cJSON_AddNumberToObject(obj, "width", r->width) != NULL;
		ok &= cJSON_AddNumberToObject(obj, "height", r->height) != NULL;
		ok &= cJSON_AddNumberToObject(obj, "frames", r->frames) != NULL;
		ok &= cJSON_AddNumberToObject(obj, "pixels", (double)r->pixels) != NULL;
	}
	if (r->gpu_ms > 0)
		ok &= cJSON_AddNumberToObject(obj, "gpu_ms", ms3(r->gpu_ms)) != NULL;
	if (r->total_ms > 0)
		ok &= cJSON_AddNumberToObject(obj, "total_ms", ms3(r->total_ms)) != NULL;
	if (r->cpu_ms > 0)
		ok &= cJSON_AddNumberToObject(obj, "cpu_ms", ms3(r->cpu_ms)) != NULL;
	if (r->reference[0]) {
		ok &= cJSON_AddNumberToObject(obj, "max_diff", r->max_diff) != NULL;
		ok &= cJSON_AddNumberToObject(obj, "bad_pixels", (double)r->bad_pixels) != NULL;
		ok &= cJSON_AddStringToObject(obj, "reference", r->reference) != NULL;
	}
	if (r->checksum[0])
		ok &= cJSON_AddStringToObject(obj, "checksum", r->checksum) != NULL;
	if (r->message[0])
		ok &= cJSON_AddStringToObject(obj, "message", r->message) != NULL;
	return ok ? 0 : -1;
}

static void str_of(const cJSON *o, const char *name, char *out, size_t n)
{
	const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, name));
	snprintf(out, n, "%s", s ? s : "");
}

static double num_of(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble >= 0 ? v->valuedouble : 0;
}

void ipk_gpucheck_from_json(const cJSON *obj, struct ipk_gpucheck_result *r)
{
	memset(r, 0, sizeof(*r));
	if (!cJSON_IsObject(obj))
		return;
	const char *st = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "status"));
	if (!st)
		return;
	static const int all[] = { IPK_GPUCHECK_PASS, IPK_GPUCHECK_FAIL, IPK_GPUCHECK_UNAVAILABLE, IPK_GPUCHECK_SKIPPED };
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (!strcmp(st, ipk_gpucheck_status_name(all[i])))
			r->status = all[i];
	str_of(obj, "device", r->device, sizeof(r->device));
	str_of(obj, "checksum", r->checksum, sizeof(r->checksum));
	str_of(obj, "reference", r->reference, sizeof(r->reference));
	str_of(obj, "message", r->message, sizeof(r->message));
	double w = num_of(obj, "width"), h = num_of(obj, "height");
	r->width = w < 1e6 ? (int)w : 0;
	r->height = h < 1e6 ? (int)h : 0;
	double fr = num_of(obj, "frames");
	r->frames = fr < 1e6 ? (int)fr : 0;
	r->pixels = (uint64_t)num_of(obj, "pixels");
	r->gpu_ms = num_of(obj, "gpu_ms");
	r->total_ms = num_of(obj, "total_ms");
	r->cpu_ms = num_of(obj, "cpu_ms");
	double md = num_of(obj, "max_diff");
	r->max_diff = md <= 255 ? (int)md : 255;
	r->bad_pixels = (uint64_t)num_of(obj, "bad_pixels");
}

cJSON *ipk_gpucheck_record(const struct ipk_gpucheck_result *r, const char *host)
{
	cJSON *j = ipk_record_new("gpucheck", ipk_now());
	if (!j)
		return NULL;
	if ((host && !cJSON_AddStringToObject(j, "host", host)) || ipk_gpucheck_to_json(r, j) < 0) {
		cJSON_Delete(j);
		return NULL;
	}
	return j;
}

int ipk_gpucheck_reply(const char *mode_name, cJSON *reply)
{
	int mode = ipk_gpucheck_mode_parse(mode_name);
	if (mode != IPK_GPUCHECK_AUTO && mode != IPK_GPUCHECK_REQUIRE)
		return 0;
	struct ipk_gpucheck_result r;
	struct ipk_err e = { 0 };
	ipk_gpucheck_run(NULL, &r, &e); /* the outcome travels in r */
	cJSON *g = cJSON_AddObjectToObject(reply, "gpu");
	return g && ipk_gpucheck_to_json(&r, g) == 0 ? 0 : -1;
}
