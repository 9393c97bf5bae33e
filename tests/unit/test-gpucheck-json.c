/* test-gpucheck-json: the GPU check's JSON forms and the receiver's step of
 * ip-migrate's verification, without libvirt: a result survives
 * to_json/from_json; the "gpucheck" record is a valid record; the
 * receiver's step (ipk_gpucheck_reply) adds nothing for mode "no" or an
 * unknown mode and a "gpu" object otherwise, which the sender reads back and
 * judges - pass, or without a GPU "skipped: no GPU" under auto and a
 * failure (exit 69) under yes; a reply without "gpu" (an older receiver) is
 * NOT_RUN. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "gpucheck.h"
#include "record.h"

/* CUDA's runtime maps memory where ASan's shadow gap is: let it, so that
 * the sanitizer build (make check) runs on a GPU host too. Only ASan calls
 * this; it changes nothing elsewhere. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "protect_shadow_gap=0";
}

int main(void)
{
	struct ipk_gpucheck_result a, b;
	memset(&a, 0, sizeof(a));
	a.status = IPK_GPUCHECK_FAIL;
	snprintf(a.device, sizeof(a.device), "NVIDIA Test");
	a.width = 1024, a.height = 768, a.frames = 8, a.pixels = 6291456;
	a.gpu_ms = 1.871, a.cpu_ms = 356.25, a.total_ms = 914.5;
	a.max_diff = 128, a.bad_pixels = 3;
	snprintf(a.checksum, sizeof(a.checksum), "b0ab90c996ca1049");
	snprintf(a.reference, sizeof(a.reference), "443b8370b52ac0c9");
	snprintf(a.message, sizeof(a.message), "3 of 6291456 pixels differ");
	cJSON *o = cJSON_CreateObject();
	CHECK("json: to_json", ipk_gpucheck_to_json(&a, o) == 0);
	ipk_gpucheck_from_json(o, &b);
	CHECK("json: round trip keeps every field",
	      b.status == a.status && !strcmp(b.device, a.device) && b.width == 1024 && b.height == 768 && b.frames == 8 &&
	      b.pixels == a.pixels && b.gpu_ms == 1.871 && b.cpu_ms == 356.25 && b.total_ms == 914.5 &&
	      b.max_diff == 128 && b.bad_pixels == 3 && !strcmp(b.checksum, a.checksum) &&
	      !strcmp(b.reference, a.reference) && !strcmp(b.message, a.message));
	cJSON_Delete(o);
	ipk_gpucheck_from_json(NULL, &b);
	CHECK("json: no object is NOT_RUN", b.status == IPK_GPUCHECK_NOT_RUN);
	o = cJSON_Parse("{\"status\":\"bogus\",\"pixels\":-5,\"max_diff\":1e300}");
	ipk_gpucheck_from_json(o, &b);
	CHECK("json: unknown status and bad numbers stay harmless",
	      b.status == IPK_GPUCHECK_NOT_RUN && b.pixels == 0 && b.max_diff == 255);
	cJSON_Delete(o);

	cJSON *rec = ipk_gpucheck_record(&a, "hostb");
	struct ipk_err err = { 0 };
	CHECK("record: a valid gpucheck record with host and status",
	      rec && ipk_record_validate(rec, &err) == 0 && !strcmp(ipk_json_str(rec, "type", ""), "gpucheck") &&
	      !strcmp(ipk_json_str(rec, "host", ""), "hostb") && !strcmp(ipk_json_str(rec, "status", ""), "fail"));
	cJSON_Delete(rec);

	/* the receiver's step and the sender's verdict */
	cJSON *reply = cJSON_CreateObject();
	CHECK("reply: mode no adds nothing", ipk_gpucheck_reply("no", reply) == 0 && !cJSON_GetObjectItem(reply, "gpu"));
	CHECK("reply: unknown mode adds nothing", ipk_gpucheck_reply("maybe", reply) == 0 && !cJSON_GetObjectItem(reply, "gpu"));
	CHECK("reply: NULL mode (older sender) adds nothing", ipk_gpucheck_reply(NULL, reply) == 0 && !cJSON_GetObjectItem(reply, "gpu"));
	ipk_gpucheck_from_json(cJSON_GetObjectItem(reply, "gpu"), &b);
	CHECK("reply: none read back as NOT_RUN, auto skips it", b.status == IPK_GPUCHECK_NOT_RUN &&
	      ipk_gpucheck_judge(&b, IPK_GPUCHECK_AUTO, &err) == 0 && b.status == IPK_GPUCHECK_SKIPPED);
	CHECK("reply: mode auto runs the check", ipk_gpucheck_reply("auto", reply) == 0 && cJSON_GetObjectItem(reply, "gpu"));
	ipk_gpucheck_from_json(cJSON_GetObjectItem(reply, "gpu"), &b);
	printf("# receiver's gpu: %s (%s)\n", ipk_gpucheck_status_name(b.status), b.message);
	CHECK("reply: the result names its size (8 frames of 1024x768)",
	      b.width == 1024 && b.height == 768 && b.frames == 8 && b.pixels == 6291456);
	if (b.status == IPK_GPUCHECK_UNAVAILABLE) {
		struct ipk_gpucheck_result c = b;
		CHECK("verdict: yes without a GPU fails with 69", ipk_gpucheck_judge(&c, IPK_GPUCHECK_REQUIRE, &err) < 0 &&
		      err.code == IPK_EXIT_UNAVAILABLE && strstr(err.msg, "no usable gpu"));
		CHECK("verdict: auto without a GPU: skipped: no GPU", ipk_gpucheck_judge(&b, IPK_GPUCHECK_AUTO, &err) == 0 &&
		      b.status == IPK_GPUCHECK_SKIPPED && !strncmp(b.message, "skipped: no GPU (", 17));
	} else {
		CHECK("verdict: a GPU here passes under yes", b.status == IPK_GPUCHECK_PASS &&
		      ipk_gpucheck_judge(&b, IPK_GPUCHECK_REQUIRE, &err) == 0 && !strcmp(b.checksum, b.reference));
	}
	cJSON_Delete(reply);
	CHECK_DONE();
}
